"""Background training jobs: a `Job` runs one TrainConfig in a thread; `JobManager` runs one per device.

The job builds everything inside its thread (dataset scan, weights, model, fit) and reports each step in
`message`, so the UI can poll `snapshot()` every second without ever blocking on training work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ftui import devices
from ftui.config import TrainConfig
from ftui.errors import LOG_NAME, FtuiError, is_user_error, log_failure, run_log
from ftui.runs import RunFolder, RunStore, load_checkpoint, write_json_atomic
from ftui.train.callbacks import Callback, History
from ftui.train.failures import describe_exception
from ftui.train.trainer import FitResult, fit, seed_everything

STATUSES = ("queued", "running", "stopping", "done", "stopped", "failed")
FINISHED = ("done", "stopped", "failed")
log = logging.getLogger(__name__)


class JobError(FtuiError):
    """A job that cannot be started (queue full, device busy) or found."""


def run_training(
    config: TrainConfig,
    store: RunStore,
    stop_event: threading.Event,
    callbacks: Iterable[Callback] = (),
    progress: Callable[[str], None] = lambda message: None,
    run_dir: str | Path | None = None,
    on_folder: Callable[[RunFolder], None] = lambda folder: None,
    resume: bool = False,
) -> tuple[FitResult, RunFolder | None]:
    """Load the dataset, create (resume: reopen) the run folder, build the model, fit, then evaluate.

    User errors before training (bad data, weights, config) raise; training failures come back as a
    FitResult with status "failed". resume=True carries on `run_dir` from its last.pt (ftui/train/resume.py).
    """
    from ftui.data.datasets import class_size_warnings, load_dataset

    config.validate()
    progress("loading dataset")
    dataset = load_dataset(config.data, val_fraction=config.val_fraction, seed=config.data_seed,
                           progress=lambda fraction, message="": progress(message or "loading dataset"),
                           task=config.task)
    config.task = dataset.task  # "auto" resolved: config.json records the task the run trains
    warnings = _task_defaults(config)
    warnings += class_size_warnings(dataset)  # raises DatasetError for a class with < 2 images
    for line in warnings:
        progress(line)
    if stop_event.is_set():
        # Stopped during the scan: no run folder, so no junk run is listed.
        return FitResult(status="stopped", message="stopped before training started"), None
    from ftui.train.distributed import current

    if not current().is_main:
        # Resuming, the other ranks read rank 0's last.pt (never write it) so that every rank goes on alike.
        checkpoint = load_checkpoint(RunFolder(Path(run_dir)).last_path) if resume and run_dir else None
        return _train_silently(config, dataset, stop_event, checkpoint), None
    folder, checkpoint = _open_folder(config, store, run_dir, resume, dataset.classes)
    started = time.time()
    with run_log(folder.path) as log_path:
        on_folder(folder)
        log.info("run %s: %s", folder.id, config.to_json())
        try:
            result = _train_in_folder(config, dataset, folder, checkpoint, callbacks, stop_event, progress)
        except Exception as exc:  # recorded in status.json and log.txt, then re-raised for the caller
            log_failure(log, exc, f"run {folder.id} failed")
            folder.update_status(status="failed", message=describe_exception(exc, config, log_path),
                                 seconds=round(time.time() - started, 2))
            raise
        result.notes[:0] = [w for w in warnings if w not in result.notes]
        folder.update_status(
            status=result.status, message=result.message, best_val_acc=result.best_val_acc,
            best_epoch=result.best_epoch, epochs_done=result.epochs_done, seconds=round(time.time() - started, 2),
            ended=time.strftime("%Y-%m-%d %H:%M:%S"), notes=result.notes,
            head_alone=result.head_alone.to_dict() if result.head_alone is not None else None,
        )
        log.info("run %s %s: %s", folder.id, result.status, result.message)
    return result, folder


def _task_defaults(config: TrainConfig) -> list[str]:
    """Regression with the untouched default augmentation trains without it (a note says why): flips, crops
    and colour jitter change what many values measure (an angle, a size, a brightness, a count), so the
    augmented image would no longer show its value. A user who knows their values ignore them switches them on."""
    from ftui.config import AugConfig

    if config.task != "regression" or config.aug != AugConfig():
        return []
    config.aug = AugConfig.none()
    return [("regression: augmentation off by default (flips, crops and colour changes can change the value an "
            "image shows); switch on the ones your values do not depend on")]


def _train_in_folder(config: TrainConfig, dataset, folder: RunFolder, checkpoint: dict[str, Any] | None,
                     callbacks: Iterable[Callback], stop_event: threading.Event,
                     progress: Callable[[str], None]) -> FitResult:
    """Build the model, fit (resume: from the checkpoint), evaluate the best weights on the val split."""
    from ftui.models.backbones import build_with_report, layer_groups

    resume = checkpoint is not None
    progress("building model")
    # Seed before building so the new head's initial weights are reproducible too.
    seed_everything(config.seed)
    model, weights_report = build_with_report(
        config.backbone, len(dataset.classes), weights="none" if resume else config.weights,
        progress=lambda fraction, message="": progress(message or f"weights {fraction:.0%}"))
    groups = layer_groups(model, config.backbone)
    progress("training")
    # metrics.csv, checkpoints and early stopping come with every run (ftui/train/defaults.py).
    listeners = list(callbacks)
    result = _fit(config, dataset, (model, groups), listeners, stop_event, folder, progress, checkpoint)
    # What the weights file gave (every skipped or mismatched tensor): in the job's notes, the CLI prints it.
    if config.weights not in ("none", "imagenet") and weights_report.message and not resume:
        result.notes.insert(0, f"weights: {weights_report.message}")
    if result.status == "done":
        progress("evaluating")
        evaluation = None
        try:
            from ftui.results.calibrate import calibrate_and_evaluate

            evaluation = calibrate_and_evaluate(folder.path, dataset, config.device, progress)
            write_json_atomic(folder.evaluation_path, evaluation.to_dict())
        except Exception as exc:  # noqa: BLE001 - a failed evaluation must not fail a finished run
            log_failure(log, exc, "evaluation failed")
            result.notes.append(f"evaluation failed: {describe_exception(exc, config, folder.path / LOG_NAME)}")
        # Run trackers (ftui/train/trackers.py) log the confusion matrix and close their run.
        for listener in listeners:
            if hasattr(listener, "on_evaluation"):
                listener.on_evaluation(evaluation)
    result.notes += [note for listener in listeners for note in getattr(listener, "tracker_notes", [])]
    return result


def _open_folder(config: TrainConfig, store: RunStore, run_dir: str | Path | None, resume: bool,
                 classes: list[str]) -> tuple[RunFolder, dict[str, Any] | None]:
    """A new run folder, or (resume) the existing one and its last.pt; status.json says "running"."""
    if resume:
        from ftui.train.resume import open_for_resume

        # The weights come from last.pt, never again from the (maybe long gone) weights file.
        folder, _config, checkpoint = open_for_resume(run_dir)
        if list(checkpoint["classes"]) != list(classes):
            raise JobError(f"the dataset's classes changed since run {folder.id} started: cannot resume it")
        # This process trains it now (a restarted app must not mark it interrupted while it runs).
        folder.update_status(status="running", pid=os.getpid(), host=socket.gethostname(), resumed_from_epoch=
                             int(checkpoint["resume"]["epoch"]), message="resumed")
        return folder, checkpoint
    folder = store.create(config, run_dir)
    folder.write_classes(classes)
    folder.update_status(status="running", num_classes=len(classes))
    return folder, None


def _fit(config: TrainConfig, dataset, parts: tuple, listeners: list, stop_event: threading.Event,
         folder: RunFolder, progress: Callable[[str], None], checkpoint: dict[str, Any] | None) -> FitResult:
    """fit(), or for a resume a Trainer loaded with last.pt's state (model, optimizer, scheduler, epoch, RNG)."""
    model, groups = parts
    if checkpoint is None:
        return fit(config, dataset, model, groups, listeners, stop_event, run_dir=folder.path, progress=progress)
    from ftui.train.batches import ImageData
    from ftui.train.resume import trainer_state
    from ftui.train.trainer import Trainer

    trainer = Trainer(config, model, groups, ImageData(dataset), listeners, run_dir=folder.path,
                      stop_event=stop_event, progress=progress)
    trainer.load_state_dict(trainer_state(checkpoint))
    return trainer.fit()


def _train_silently(config: TrainConfig, dataset, stop_event: threading.Event,
                    checkpoint: dict[str, Any] | None = None) -> FitResult:
    """The other ranks of a distributed run: the same model trained without listeners or a run folder
    (rank 0 alone writes the run); with `checkpoint` (last.pt) resumed from it as rank 0 is."""
    from ftui.models.backbones import build, layer_groups

    seed_everything(config.seed)
    model = build(config.backbone, len(dataset.classes), weights="none" if checkpoint else config.weights)
    groups = layer_groups(model, config.backbone)
    if checkpoint is None:
        return fit(config, dataset, model, groups, [], stop_event)
    from ftui.train.batches import ImageData
    from ftui.train.resume import trainer_state
    from ftui.train.trainer import Trainer

    trainer = Trainer(config, model, groups, ImageData(dataset), [], stop_event=stop_event)
    trainer.load_state_dict(trainer_state(checkpoint))
    return trainer.fit()


class _Tracker(Callback):
    """Copies the loop's events into the job's snapshot fields."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def on_fit_start(self, info: dict[str, Any]) -> None:
        self.job._update(epochs=info["epochs"], message="training", notes=list(info.get("notes", [])),
                         num_val=info.get("num_val"))

    def on_batch_end(self, info: dict[str, Any]) -> None:
        self.job._update(epoch=info["epoch"], step=info["batch"], steps_per_epoch=info["steps_per_epoch"],
                         phase=info["phase"], images_per_s=info["images_per_s"])

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        # val_acc is None when a listener cancelled the epoch's validation (CancelValidate).
        val = "skipped" if info["val_acc"] is None else f"{info['val_acc']:.3f}"
        self.job._update(epoch=info["epoch"], eta_s=info["eta_s"], best_val_acc=info["best_val_acc"],
                         message=f"epoch {info['epoch']}/{info['epochs']} val_acc {val}")


class Job:
    """One training run in a background thread; every public method is thread-safe and cheap."""

    def __init__(self, config: TrainConfig, store: RunStore, device: str = "cpu",
                 run_dir: str | Path | None = None, callbacks: Iterable[Callback] = (), gpus: int = 1,
                 resume: bool = False, stamp: dict[str, Any] | None = None) -> None:
        self.id = secrets.token_hex(4)
        self.config = config
        # resume: carry on the run in run_dir from its last.pt; stamp: fields for its status.json (the owner).
        self.resume = resume
        self.stamp = dict(stamp or {})
        self.store = store
        self.device = device
        # > 1: DistributedDataParallel, this thread rank 0, worker processes the rest (distributed.local_group).
        self.gpus = int(gpus)
        self.run_dir_request = run_dir
        self.extra_callbacks = list(callbacks)
        self.history_cb = History()
        self.result: FitResult | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._started_at: float | None = None
        # Set by a JobManager: renumbers its queue when this job leaves it without running.
        self._on_dequeue: Callable[[], None] | None = None
        self._ended_at: float | None = None
        self._state: dict[str, Any] = {
            "status": "queued", "run_id": None, "run_dir": None, "epoch": 0, "epochs": config.epochs,
            "step": 0, "steps_per_epoch": None, "phase": None, "images_per_s": None, "eta_s": None,
            "message": "queued", "error": None, "queue_position": None, "best_val_acc": None, "num_val": None, "notes": [],
            "head_alone": None,
            "internal_error": False,  # failed on a bug or the environment, not on the user's input
        }

    # --- reading --------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        with self._lock:
            return self._state["status"]

    @property
    def error(self) -> str | None:
        with self._lock:
            return self._state["error"]

    @property
    def run_dir(self) -> str | None:
        with self._lock:
            return self._state["run_dir"]

    def snapshot(self) -> dict[str, Any]:
        """A copy of the job's progress: the keys the UI polls every second."""
        with self._lock:
            snap = dict(self._state)
            snap["notes"] = list(snap["notes"])
            started, ended = self._started_at, self._ended_at
        snap["id"] = self.id
        snap["backbone"] = self.config.backbone
        snap["elapsed_s"] = None if started is None else (ended or time.time()) - started
        return snap

    def history(self) -> pd.DataFrame:
        """Epoch rows so far (epoch, phase, train/val loss and accuracy, lr, seconds)."""
        return self.history_cb.epochs()

    def batch_history(self) -> pd.DataFrame:
        """Batch rows so far (global step, epoch, loss, lr, images_per_s)."""
        return self.history_cb.batches()

    def done(self) -> bool:
        """True once the job has finished (done, stopped or failed)."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job finishes or `timeout` passes; True when it finished."""
        return self._finished.wait(timeout)

    # --- control --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the job to stop: a queued job never starts, a running one stops within one batch."""
        self._stop.set()
        with self._lock:
            status = self._state["status"]
            if status == "running":
                self._state.update(status="stopping", message="stopping")
        if status == "queued":
            # Never started: it is stopped now, the worker will skip it and the jobs behind move up.
            self._finish("stopped", "stopped before it started")
            if self._on_dequeue is not None:
                self._on_dequeue()

    def _update(self, **fields: Any) -> None:
        with self._lock:
            self._state.update(fields)

    def _set_folder(self, folder: RunFolder) -> None:
        if self.stamp:
            folder.update_status(**self.stamp)
        self._update(run_id=folder.id, run_dir=str(folder.path))

    def _finish(self, status: str, message: str, error: str | None = None, internal: bool = False) -> None:
        with self._lock:
            self._ended_at = time.time()
            self._state.update(status=status, message=message, error=error, queue_position=None,
                               internal_error=internal)
        self._finished.set()

    def run(self) -> None:
        """Run the whole job in the calling thread (a worker thread); never raises."""
        # Checked and switched under the lock, so a stop() racing with the start is never lost.
        with self._lock:
            stopped_early = self._stop.is_set() or self._state["status"] != "queued"
            if not stopped_early:
                self._started_at = time.time()
                self._state.update(status="running", queue_position=None, message="starting")
        if stopped_early:
            if not self.done():
                self._finish("stopped", "stopped before it started")
            return
        config = self.config.replace(device=self.device)
        try:
            with self._process_group(config):
                result, _ = run_training(
                    config, self.store, self._stop, [self.history_cb, _Tracker(self), *self.extra_callbacks],
                    progress=lambda message: self._update(message=message),
                    run_dir=self.run_dir_request, on_folder=self._set_folder, resume=self.resume,
                )
        except Exception as exc:  # noqa: BLE001 - any failure becomes the job's error, never a dead thread
            run_dir = self.run_dir
            if run_dir is None:  # with a run folder, run_training logged it (to its log.txt too)
                log_failure(log, exc, "training job failed before its run folder existed")
            message = describe_exception(exc, config, Path(run_dir).resolve() / LOG_NAME if run_dir else None)
            self._finish("failed", message, error=message, internal=not is_user_error(exc))
            return
        self.result = result
        with self._lock:
            self._state["notes"] = list(result.notes)
            self._state["head_alone"] = result.head_alone.to_dict() if result.head_alone is not None else None
            self._state["best_val_acc"] = result.best_val_acc
        self._finish(result.status, result.message, error=result.error)


    def _process_group(self, config: TrainConfig):
        """Several GPUs: a process group led by this thread for the job's length; else nothing."""
        if self.gpus <= 1:
            return contextlib.nullcontext()
        from ftui.train.distributed import local_group

        self._update(message=f"starting {self.gpus} processes")
        return local_group(config, self.gpus)


class JobManager:
    """Runs one training job per device at a time; later starts queue behind it (up to `max_queue`).

    `gpus` > 1 gives every CUDA job that many GPUs of this machine (DistributedDataParallel)."""

    def __init__(self, runs_dir: str | Path = "runs", max_queue: int = 4, gpus: int = 1) -> None:
        self.store = RunStore(runs_dir)
        self.max_queue = max_queue
        self.gpus = int(gpus)
        self._lock = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []
        self._queues: dict[str, list[Job]] = {}
        self._running: dict[str, Job] = {}
        self._workers: dict[str, threading.Thread] = {}

    def start(self, config: TrainConfig, run_dir: str | Path | None = None,
              callbacks: Iterable[Callback] = (), resume: bool = False,
              stamp: dict[str, Any] | None = None) -> Job:
        """Queue a job for its device; JobError when the device is busy and the queue is full.

        resume=True carries on the run in `run_dir` from its last.pt; `stamp` goes into its status.json.
        """
        config.validate()
        device = devices.pick_device(config.device).type
        with self._lock:
            queue = self._queues.setdefault(device, [])
            queue[:] = [j for j in queue if not j.done()]
            running = self._running.get(device)
            if running is not None and len(queue) >= self.max_queue:
                if self.max_queue == 0:
                    raise JobError(f"a training job is already running on {device} (job {running.id}): "
                                   "stop it or wait until it finishes")
                raise JobError(f"the queue for {device} is full ({len(queue)} waiting): "
                               "wait for a job to finish or stop one")
            job = Job(config, self.store, device=device, run_dir=run_dir, callbacks=callbacks,
                      gpus=self.gpus if device == "cuda" else 1, resume=resume, stamp=stamp)
            job._on_dequeue = lambda: self._renumber_now(device)
            self._jobs[job.id] = job
            self._order.append(job.id)
            queue.append(job)
            self._renumber(device)
            if device not in self._workers or not self._workers[device].is_alive():
                worker = threading.Thread(target=self._work, args=(device,), name=f"ftui-jobs-{device}",
                                          daemon=True)
                self._workers[device] = worker
                worker.start()
            self._lock.notify_all()
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id; JobError when unknown."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobError(f"no job with id {job_id!r}")
        return job

    def jobs(self) -> list[Job]:
        """Every job this manager has seen, oldest first."""
        with self._lock:
            return [self._jobs[i] for i in self._order]

    def active(self, device: str | None = None) -> Job | None:
        """The running job (on `device`, or on any device), or None."""
        with self._lock:
            if device is not None:
                return self._running.get(device)
            return next(iter(self._running.values()), None)

    def latest(self) -> Job | None:
        """The most recently started job, or None."""
        with self._lock:
            return self._jobs[self._order[-1]] if self._order else None

    def stop_all(self) -> None:
        """Stop every queued and running job."""
        for job in self.jobs():
            job.stop()

    def _renumber_now(self, device: str) -> None:
        with self._lock:
            self._renumber(device)

    def _renumber(self, device: str) -> None:
        waiting = [j for j in self._queues.get(device, []) if not j.done()]
        for position, job in enumerate(waiting, start=1):
            job._update(queue_position=position, message=f"queued (position {position})")

    def _work(self, device: str) -> None:
        """Worker thread for one device: run queued jobs one after another, exit when the queue is empty."""
        while True:
            with self._lock:
                queue = self._queues.get(device, [])
                if not queue:
                    self._workers.pop(device, None)
                    return
                job = queue.pop(0)
                self._running[device] = job
                self._renumber(device)
            try:
                job.run()
            finally:
                with self._lock:
                    self._running.pop(device, None)
                    self._lock.notify_all()
