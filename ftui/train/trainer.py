"""The training loop as a small trainer object: `Trainer(config, model, groups, data, callbacks).fit()`.

`fit(config, dataset, model, groups, ...)` is the one-call form the job, CLI and bench use. The trainer
keeps its state as attributes (epoch, batch, phase, optimizer, ...) and emits ordered events to
`Callback`s; it never raises for training failures (see FitResult).

Where each extension goes:
- Listening and steering: a `Callback` (ftui/train/callbacks.py). Events run in order on_fit_start,
  on_phase_start, on_epoch_start, on_batch_start/end, on_validate_start/end, on_epoch_end, on_error,
  on_fit_end; each gets info["trainer"]. A listener raises CancelBatch / CancelEpoch / CancelValidate /
  CancelFit to cut that part short, or asks `control.request_stop` to end after the epoch. Every run also
  gets `default_callbacks(config, run_dir)` (ftui/train/defaults.py): metrics.csv, early stopping,
  checkpoints, the head-alone candidate and the L-BFGS head fit are listeners like any other.
- A recipe: `recipes.RECIPES` turns the config into `Phase`s (ftui/train/recipes.py); or set `trainer.phases` before fit.
- Resuming: `trainer.load_state_dict(state)` before `fit()` with what `trainer.state_dict()` returned:
  model, epoch, best, RNG state now; optimizer, scheduler and grad scaler when their phase starts;
  epochs already done are skipped. Each epoch's shuffle is drawn from (seed, phase, epoch) alone, so a
  resumed run replays no order.
- Devices and distributed: `devices.pick_device` in `_setup`; every collective goes through `self.dist`
  (ftui/train/distributed.py; one process is its no-op case); DDP wraps `trainer.forward` per phase.
- Data: `batches.ImageData` (a scanned Dataset, decoded-image and feature caches) or `batches.TensorData`
  (tensors in memory: a tiny synthetic model trains in milliseconds).

Speed: on CPU each forward/backward sees at most `devices.CPU_MAX_MICRO_BATCH` images (gradients
accumulate to the user's batch, exact with frozen BatchNorm); conv nets run channels_last; inference
(validation, feature caching) uses bfloat16 autocast on CPUs with native bf16, training stays float32.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ftui import devices
from ftui.config import TrainConfig
from ftui.errors import LOG_NAME, log_failure, run_log
from ftui.models.freezing import apply_freeze, set_train_mode
from ftui.train import distributed
from ftui.train.batches import ImageData, SpeedSettings
from ftui.train.callbacks import (
    Callback,
    CancelBatch,
    CancelEpoch,
    CancelFit,
    CancelValidate,
    TrainingControl,
)
from ftui.train.defaults import default_callbacks
from ftui.train.failures import LossNotFinite, StopRequested, describe_exception
from ftui.train.featurecache import CacheStopped
from ftui.train.recipes import Phase, lr_multiplier, make_optimizer, param_groups, plan_for
from ftui.train.resume import restore_phase, set_rng_state, training_state
from ftui.train.step import optimizer_step
from ftui.train.tasks import best_score, task_losses
from ftui.train.validation import evaluate_sums, unwrapped

__all__ = ["FitResult", "LossNotFinite", "StopRequested", "Trainer", "describe_exception", "epoch_seed", "fit",
           "seed_everything"]
log = logging.getLogger(__name__)
ProgressFn = Callable[[str], None]


@dataclass
class FitResult:
    """How a fit ended."""

    status: str  # done | stopped | failed
    message: str = ""
    best_val_acc: float | None = None
    best_epoch: int | None = None
    epochs_done: int = 0
    seconds: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    head_alone: Any = None  # a HeadAloneOutcome when the head-alone candidate trained (ftui/train/headalone.py)

    def event_info(self) -> dict[str, Any]:
        """What on_fit_end reports."""
        return {k: getattr(self, k) for k in ("status", "message", "best_val_acc", "best_epoch", "epochs_done",
                                              "seconds", "error")}


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a generator for shuffling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def epoch_seed(seed: int, phase_index: int, epoch: int) -> int:
    """The shuffle seed of one epoch (torchvision's `set_epoch`): a function of these three alone."""
    return (seed * 1_000_003 + phase_index * 10_007 + epoch) % (2**63)


def fit(config: TrainConfig, dataset, model: nn.Module, groups: list, callbacks: Iterable[Callback] = (),
        stop_event: threading.Event | None = None, run_dir: str | Path | None = None,
        progress: ProgressFn | None = None) -> FitResult:
    """Train `model` on `dataset` as `config` says; never raises for training failures (see FitResult)."""
    return Trainer(config, model, groups, ImageData(dataset), callbacks, run_dir=run_dir, stop_event=stop_event,
                   progress=progress).fit()


class Trainer:
    """One run's state as attributes and the loop over phases, epochs and batches."""

    def __init__(self, config: TrainConfig, model: nn.Module, groups: list, data, callbacks: Iterable[Callback] = (),
                 run_dir: str | Path | None = None, stop_event: threading.Event | None = None,
                 progress: ProgressFn | None = None) -> None:
        self.config, self.model, self.groups, self.data = config, model, groups, data
        self.phases: list[Phase] | None = None  # the config's recipe, planned in setup (or set before fit)
        self.callbacks = [*callbacks, *default_callbacks(config, run_dir)]
        self.run_dir = Path(run_dir) if run_dir is not None else None  # for log.txt only: files are callbacks'
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.progress = progress
        self.control = TrainingControl()
        self.result = FitResult(status="failed")
        self.notes = self.result.notes
        self.epoch = self.batch = self.global_step = 0  # the epoch in progress or the last one done; its batch
        self.phase_index: int | None = None
        self.epoch_seconds: list[float] = []
        self.epoch_sums = [0.0, 0, 0]  # the epoch's summed train loss x images, correct, images
        self.speed: SpeedSettings | None = None
        self.class_weight: torch.Tensor | None = None
        self.train_meter = None  # multilabel / regression: the task's train metric (ftui/train/tasks.py)
        self._resume: dict[str, Any] | None = None
        # Several processes (torchrun): this one's rank; one process: the single case, no communication.
        self.dist = distributed.current()

    def fit(self) -> FitResult:
        """Set up, run every phase, clean up; the result says done, stopped or failed.

        With a run folder, what ftui logs meanwhile (a failure's traceback) also goes to its log.txt."""
        with run_log(self.run_dir) if self.run_dir is not None else contextlib.nullcontext():
            return self._fit()

    def _fit(self) -> FitResult:
        start = time.perf_counter()
        try:
            self._setup()
            # The first phase's data is ready (feature cache built or declined) before on_fit_start, so
            # its info says how the run will train.
            self._enter_phase(0)
            self._event("on_fit_start", self._fit_info())
            for index in range(len(self.phases)):
                if not self.control.should_stop:
                    self._run_phase(index)
            self._end_as("done", self.control.stop_reason or f"finished {self.epoch} epochs")
        except CancelFit as exc:
            self._end_as("done", str(exc) or f"cancelled at epoch {self.epoch}")
        except (StopRequested, CacheStopped):
            self._end_as("stopped", f"stopped by user at epoch {max(1, self.epoch)} step {self.batch}")
        except Exception as exc:  # noqa: BLE001 - every failure must become an error event, not a dead thread
            self._fail(exc)
        finally:
            self.result.seconds = time.perf_counter() - start
            self._cleanup()
        self._event("on_fit_end", self.result.event_info())
        return self.result

    def _run_phase(self, index: int) -> None:
        phase = self.phases[index]
        first = sum(p.epochs for p in self.phases[:index]) + 1
        last = first + phase.epochs - 1
        if last <= self.epoch:
            return  # done before a resume
        if self.phase_index != index:
            self._enter_phase(index)
        self._event("on_phase_start", {"phase": phase.name, "trainable": list(phase.trainable),
                                       "first_epoch": first, "last_epoch": last})
        for epoch in range(max(first, self.epoch + 1), last + 1):
            self._run_epoch(epoch)
            if self.control.should_stop:
                break

    def _run_epoch(self, epoch: int) -> None:
        self.epoch, self.batch = epoch, 0
        t0 = time.perf_counter()
        generator = getattr(self.train_source, "generator", None)
        if generator is not None:
            generator.manual_seed(epoch_seed(self.config.seed, self.phase_index, epoch))
        set_train_mode(self.model, self.groups, set(self.phase.trainable), bn_mode=self.config.bn_mode)
        train_loss, train_acc = self._train_epoch()
        val_loss, val_acc = self._validate()
        seconds = time.perf_counter() - t0
        self.epoch_seconds.append(seconds)
        self.result.epochs_done = epoch
        improved = val_acc is not None and val_acc > best_score(self)
        if improved:
            self.result.best_val_acc, self.result.best_epoch = val_acc, epoch
        recent = self.epoch_seconds[-3:]
        self._event("on_epoch_end", {
            "epoch": epoch, "epochs": self.config.epochs, "phase": self.phase.name,
            "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
            "lr": self.optimizer.param_groups[-1]["lr"], "seconds": seconds,
            "eta_s": (self.config.epochs - epoch) * sum(recent) / len(recent),
            "best_val_acc": self.result.best_val_acc, "best_epoch": self.result.best_epoch, "improved": improved,
        })
        # A stop asked on rank 0 (early stopping, a listener) ends every rank after this epoch.
        if self.dist.any(self.control.should_stop) and not self.control.should_stop:
            self.control.request_stop("stopped on rank 0")

    def _train_epoch(self) -> tuple[float, float]:
        """on_epoch_start, then the training batches; checks the stop flags before every batch."""
        self.epoch_sums = [0.0, 0, 0]
        # Multilabel / regression: the task's train metric (mAP, -MAE) over the epoch's outputs (step.py).
        self.train_meter = self.task.task_meter()
        self._t_prev = time.perf_counter()
        try:
            self._event("on_epoch_start", {"epoch": self.epoch, "epochs": self.config.epochs,
                                           "phase": self.phase.name})
            for index, (x, y) in enumerate(self.train_source.batches(), start=1):
                if self.stop_requested():
                    raise StopRequested()
                if self.control.should_stop:
                    break
                self.batch, self.xb, self.yb = index, x, y
                try:
                    self._event("on_batch_start", {"step": self.global_step + 1, "epoch": self.epoch,
                                                   "batch": self.batch, "phase": self.phase.name})
                    self._train_batch()
                except CancelBatch:
                    continue
        except CancelEpoch:
            pass
        if self.stop_requested():
            raise StopRequested()
        loss_sum, correct, seen = self.epoch_sums
        score = correct / max(seen, 1) if self.train_meter is None else self.train_meter.result(self.dist)[0]
        return loss_sum / max(seen, 1), score

    def _train_batch(self) -> None:
        """One optimizer step (ftui/train/step.py), then on_batch_end with the global batch's numbers."""
        loss_value, batch_correct, n = optimizer_step(self, self.xb, self.yb)
        sums = self.epoch_sums
        self.epoch_sums = [sums[0] + loss_value * n, sums[1] + batch_correct, sums[2] + n]
        now = time.perf_counter()
        images_per_s = n / max(now - self._t_prev, 1e-9)
        self._t_prev = now
        self.global_step += 1
        self.loss = loss_value
        self._event("on_batch_end", {
            "step": self.global_step, "epoch": self.epoch, "epochs": self.config.epochs, "batch": self.batch,
            "steps_per_epoch": self.steps_per_epoch, "phase": self.phase.name, "loss": loss_value,
            "lr": self.optimizer.param_groups[-1]["lr"], "images_per_s": images_per_s,
        })

    def _validate(self) -> tuple[float | None, float | None]:
        """Val loss and accuracy between on_validate_start and on_validate_end (None when cancelled)."""
        try:
            self._event("on_validate_start", {"epoch": self.epoch})
        except CancelValidate:
            return None, None
        speed = self.speed
        meter = self.task.task_meter()
        sums = evaluate_sums(unwrapped(self.forward), self.val_source, self.val_criterion, speed.device,
                             speed.val_amp, speed.channels_last, meter)
        total_loss, correct, seen = self.dist.sum(sums)  # over every rank's share of the split
        val_loss, val_acc = total_loss / max(seen, 1), correct / max(seen, 1)
        if meter is not None:  # the task's score: mAP, or -MAE in the user's units
            val_acc = meter.result(self.dist)[0]
        self._event("on_validate_end", {"epoch": self.epoch, "val_loss": val_loss, "val_acc": val_acc})
        return val_loss, val_acc

    def _setup(self) -> None:
        config = self.config
        config.validate()
        seed_everything(config.seed)
        device = devices.setup_device(config.device)
        self.speed = SpeedSettings(device, self.model, config)
        self.speed.world_size = self.dist.world_size
        self.phases = self.phases or plan_for(config, self.groups)  # the config's recipe unless set before fit
        self.say("loading images")
        self.data.prepare(self)
        self.model.to(device)
        self.groups, sync_note = self.dist.sync_batchnorm(self.model, self.groups, config.bn_mode)
        self.notes.extend([sync_note] if sync_note else [])
        if self.speed.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.notes.append(self.speed.describe())
        # The task (classification, multilabel, regression: ftui/train/tasks.py) and its losses.
        self.task, self.class_weight, self.criterion, self.val_criterion = task_losses(config, self.data, device)
        if self._resume is not None:
            set_rng_state(self._resume["rng"])

    def _enter_phase(self, index: int) -> None:
        """Freeze for the phase, build its batch sources, optimizer, scheduler and grad scaler."""
        self.phase_index, self.phase = index, self.phases[index]
        apply_freeze(self.model, self.groups, set(self.phase.trainable))
        self.forward, self.train_source, self.val_source = self.data.sources(self, self.phase)
        self.forward = self.dist.wrap(self.forward)  # gradients averaged over the ranks (one process: as is)
        if self.config.compile:
            self.forward = torch.compile(self.forward)
        self.optimizer = make_optimizer(self.config, param_groups(self.groups, self.phase, self.config.lr))
        self.steps_per_epoch = self.train_source.num_batches(self.config.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_multiplier(self.config, self.steps_per_epoch, self.phase.epochs))
        self.scaler = devices.grad_scaler(self.speed.device, self.speed.use_amp)
        restore_phase(self, self._resume, index)

    def stop_requested(self) -> bool:
        """The user's stop, seen by every rank at the same batch (any rank's stop stops them all)."""
        return self.dist.any(self.stop_event.is_set())

    def _fit_info(self) -> dict[str, Any]:
        phases = [{"name": p.name, "epochs": p.epochs, "trainable": p.trainable} for p in self.phases]
        return {"epochs": self.config.epochs, "device": str(self.speed.device), "amp": self.speed.use_amp,
                "classes": list(self.data.meta["classes"]), "num_train": self.data.num_train,
                "num_val": self.data.num_val, "phases": phases, "task": self.task.kind,
                "metric": self.task.metric_name, "config": self.config.to_dict(),
                "notes": list(self.notes)}

    def _end_as(self, status: str, message: str) -> None:
        self.result.status, self.result.message = status, message

    def _fail(self, exc: Exception) -> None:
        log_failure(log, exc, f"training failed at epoch {self.epoch} step {self.batch}")
        log_path = self.run_dir / LOG_NAME if self.run_dir is not None else None
        message = describe_exception(exc, self.config, log_path)
        self._end_as("failed", message)
        self.result.error = message
        self._event("on_error", {"message": message, "error_type": type(exc).__name__})

    def _cleanup(self) -> None:
        self.data.close()
        if self.speed is not None and self.speed.channels_last:
            # Hand the model back in the default layout (checkpoints and callers expect nothing special).
            self.model.to(memory_format=torch.contiguous_format)

    def _event(self, name: str, info: dict[str, Any]) -> None:
        payload = {**info, "control": self.control, "trainer": self}
        for cb in self.callbacks:
            getattr(cb, name)(payload)

    def say(self, message: str) -> None:
        """A progress line for the user (the job's status message)."""
        if self.progress is not None:
            self.progress(message)

    def state_dict(self) -> dict[str, Any]:
        """Everything a later `load_state_dict` needs to carry on after the last finished epoch."""
        return {"model": copy.deepcopy(self.model.state_dict()), **training_state(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Carry on from `state` (call before fit): epochs up to state["epoch"] are skipped."""
        self.model.load_state_dict(state["model"])
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.result.best_val_acc, self.result.best_epoch = state["best_val_acc"], state["best_epoch"]
        self._resume = state
