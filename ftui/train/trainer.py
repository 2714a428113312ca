"""The training loop as a small trainer object: `Trainer(config, model, groups, data, callbacks).fit()`.

`fit(config, dataset, model, groups, ...)` is the one-call form the job, CLI and bench use. The trainer
keeps its state as attributes (epoch, batch, phase, optimizer, ...) and emits ordered events to
`Callback`s; it never raises for training failures (see FitResult).

Where each extension goes:
- Listening and steering: a `Callback` (ftui/train/callbacks.py). Events run in order on_fit_start,
  on_phase_start, on_epoch_start, on_batch_start/end, on_validate_start/end, on_epoch_end, on_error,
  on_fit_end; each gets info["trainer"]. A listener raises CancelBatch / CancelEpoch / CancelValidate /
  CancelFit to cut that part short, or asks `control.request_stop` to end after the epoch. The lr finder
  (ftui/train/lrfind.py), the CSV log and early stopping are callbacks.
- A recipe: `recipes.RECIPES` turns the config into `Phase`s (ftui/train/recipes.py); or pass `phases=`.
- Resuming: `trainer.load_state_dict(state)` before `fit()` with what `trainer.state_dict()` returned:
  model, epoch, best, RNG state now; optimizer, scheduler and grad scaler when their phase starts;
  epochs already done are skipped.
- Devices and distributed: `devices.pick_device` in `_setup`; a wrapper (e.g. DDP) replaces
  `trainer.forward` in on_phase_start (the optimizer holds the same parameters) and shards the train source.
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
from ftui.errors import LOG_NAME, FtuiError, internal_message, log_failure, run_log
from ftui.models.backbones import BackboneError, classifier_head
from ftui.models.freezing import apply_freeze, resolve_train_groups, set_train_mode
from ftui.models.fusing import fuse_for_inference
from ftui.runs import RunFolder, disk_full, save_checkpoint
from ftui.train import distributed
from ftui.train.batches import IGNORE, ImageData, SpeedSettings
from ftui.train.callbacks import (
    Callback,
    CancelBatch,
    CancelEpoch,
    CancelFit,
    CancelValidate,
    TrainingControl,
)
from ftui.train.featurecache import CacheStopped
from ftui.train.headalone import HeadAloneResult, reads_cached_features, train_head_alone
from ftui.train.headfit import fit_head
from ftui.train.recipes import Phase, class_weights, lr_multiplier, make_optimizer, param_groups, plan_phases
from ftui.train.resume import checkpoint_state, rng_state, set_rng_state

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """The user's stop event fired."""


class LossNotFinite(FtuiError):
    """The loss became NaN or infinite (the message says what to change)."""


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


ProgressFn = Callable[[str], None]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a generator for shuffling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def fit(
    config: TrainConfig,
    dataset,
    model: nn.Module,
    groups: list,
    callbacks: Iterable[Callback] = (),
    stop_event: threading.Event | None = None,
    run_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> FitResult:
    """Train `model` on `dataset` as `config` says; never raises for training failures (see FitResult)."""
    trainer = Trainer(config, model, groups, ImageData(dataset), callbacks, run_dir=run_dir)
    if stop_event is not None:
        trainer.stop_event = stop_event
    trainer.progress = progress
    return trainer.fit()


class Trainer:
    """One run's state as attributes and the loop over phases, epochs and batches."""

    def __init__(self, config: TrainConfig, model: nn.Module, groups: list, data, callbacks: Iterable[Callback] = (),
                 run_dir: str | Path | None = None, phases: list[Phase] | None = None) -> None:
        self.config, self.model, self.groups, self.data = config, model, groups, data
        self.callbacks = list(callbacks)
        self.folder = RunFolder(Path(run_dir)) if run_dir is not None else None
        self.phases = phases
        self.stop_event = threading.Event()
        self.control = TrainingControl()
        self.progress: ProgressFn | None = None
        self.result = FitResult(status="failed")
        self.notes = self.result.notes
        self.epoch = 0  # the epoch in progress, or the last one done
        self.batch = 0  # the batch in progress within the epoch
        self.global_step = 0
        self.phase_index: int | None = None
        self.epoch_seconds: list[float] = []
        self.speed: SpeedSettings | None = None
        self._resume: dict[str, Any] | None = None
        # (result, the epoch it became best.pt at or None, seconds) once the head alone has trained.
        self.head_alone: tuple[HeadAloneResult, int | None, float] | None = None
        # Several processes (torchrun): this one's rank; one process: the single case, no communication.
        self.dist = distributed.current()

    # --- the loop ----------------------------------------------------------------------------------

    def fit(self) -> FitResult:
        """Set up, run every phase, clean up; the result says done, stopped or failed.

        With a run folder, what ftui logs meanwhile (a failure's traceback) also goes to its log.txt."""
        with run_log(self.folder.path) if self.folder is not None else contextlib.nullcontext():
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
            self._end("done", self.control.stop_reason or f"finished {self.epoch} epochs")
        except CancelFit as exc:
            self._end("done", str(exc) or f"cancelled at epoch {self.epoch}")
        except (StopRequested, CacheStopped):
            self._end("stopped", f"stopped by user at epoch {max(1, self.epoch)} step {self.batch}")
        except Exception as exc:  # noqa: BLE001 - every failure must become an error event, not a dead thread
            self._fail(exc)
        finally:
            self.result.seconds = time.perf_counter() - start
            if self.head_alone is not None:  # noted late: the count of notes seeds each phase's shuffling
                self.notes.append(self._head_alone_summary())
            self._cleanup()
        r = self.result
        self._event("on_fit_end", {"status": r.status, "message": r.message, "best_val_acc": r.best_val_acc,
                                   "best_epoch": r.best_epoch, "epochs_done": r.epochs_done,
                                   "seconds": r.seconds, "error": r.error})
        return r

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
        set_train_mode(self.model, self.groups, set(self.phase.trainable), bn_mode=self.config.bn_mode)
        train_loss, train_acc = self._train_epoch()
        val_loss, val_acc = self._validate()
        seconds = time.perf_counter() - t0
        self.epoch_seconds.append(seconds)
        self.result.epochs_done = epoch
        improved = val_acc is not None and val_acc > (self.result.best_val_acc or -1.0)
        if improved:
            self.result.best_val_acc, self.result.best_epoch = val_acc, epoch
        recent = self.epoch_seconds[-3:]
        self._event("on_epoch_end", {
            "epoch": epoch, "epochs": self.config.epochs, "phase": self.phase.name,
            "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
            "lr": self.optimizer.param_groups[-1]["lr"], "seconds": seconds,
            "eta_s": (self.config.epochs - epoch) * sum(recent) / len(recent),
            "best_val_acc": self.result.best_val_acc, "best_epoch": self.result.best_epoch,
        })
        # After on_epoch_end: the epoch's metrics row is on disk before its checkpoints (a full disk or a
        # crash while saving never leaves a best.pt whose epoch metrics.csv does not list).
        self._save_checkpoints(val_acc, improved)
        if self._head_alone_due():
            self._keep_head_alone(val_acc)
        # A stop asked on rank 0 (early stopping, a listener) ends every rank after this epoch.
        if self.dist.enabled and self.dist.any(self.control.should_stop) and not self.control.should_stop:
            self.control.request_stop("stopped on rank 0")

    def _head_alone_due(self) -> bool:
        """The last epoch of an SGD head phase with a later phase, on cached features, in one process."""
        phase, index = self.phase, self.phase_index
        last_of_phase = self.epoch == sum(p.epochs for p in self.phases[:index + 1])
        return (self.config.head_alone and phase.name == "head" and phase.solver == "sgd" and last_of_phase
                and index + 1 < len(self.phases) and not self.dist.enabled and not self.control.should_stop
                and reads_cached_features(self.train_source, self.val_source))

    def _keep_head_alone(self, val_acc: float | None) -> None:
        """The head trained alone (ftui/train/headalone.py) becomes best.pt when it beats every epoch so far; the
        body goes on from the head as it is (its epochs are the same as without this)."""
        self._say("training the head alone on the cached features")
        head, t0 = _unwrapped(self.forward), time.perf_counter()
        found = train_head_alone(head, self.train_source, self.config, self._stop_requested, self._head_val_scores,
                                 self.class_weight)
        if found is None:
            return
        kept = found.val_acc > (self.result.best_val_acc or -1.0)
        self.head_alone = (found, self.epoch if kept else None, time.perf_counter() - t0)
        self._say(f"head alone: best val acc {found.val_acc:.4f}" + (" (best.pt so far)" if kept else ""))
        if not kept:
            return
        self.result.best_val_acc, self.result.best_epoch = found.val_acc, self.epoch
        if self.folder is not None:
            live = copy.deepcopy(head.state_dict())
            head.load_state_dict(found.state)
            meta = {**self.data.meta, "epoch": self.epoch, "val_acc": found.val_acc, "head_alone": True}
            save_checkpoint(self.folder.best_path, self.model, meta)
            head.load_state_dict(live)
            self._save_checkpoints(val_acc, improved=False)  # last.pt's resume state: the new best val acc

    def _head_val_scores(self, head: nn.Module) -> tuple[float, float]:
        """(val loss, val accuracy) of a head on the cached val features, in float32 (the head is tiny)."""
        total_loss, correct, seen = _evaluate(head, self.val_source, self.val_criterion, self.speed.device,
                                              use_amp=False, channels_last=False)
        return total_loss / max(seen, 1), correct / max(seen, 1)

    def _head_alone_summary(self) -> str:
        """The run's note on the head alone: its val accuracy, its cost, and whether best.pt is still it."""
        found, epoch, seconds = self.head_alone
        text = (f"head alone ({found.epochs} epochs on the cached features, {seconds:.3f} s): best val acc "
                f"{found.val_acc:.4f} at its epoch {found.epoch}")
        if epoch is None:
            return text + ", not kept (the head phase's epoch was as good)"
        if (self.result.best_epoch, self.result.best_val_acc) == (epoch, found.val_acc):
            return text + f", kept as best.pt (epoch {epoch}): no all-layer epoch beat it"
        return text + f", best.pt until epoch {self.result.best_epoch} beat it"

    def _train_epoch(self) -> tuple[float, float]:
        """on_epoch_start, then the training batches; checks the stop flags before every batch."""
        self._sums = [0.0, 0, 0]  # loss x images, correct, images
        self._t_prev = time.perf_counter()
        try:
            self._event("on_epoch_start", {"epoch": self.epoch, "epochs": self.config.epochs,
                                           "phase": self.phase.name})
            # Several processes would each fit their own shard's head: they step by SGD instead.
            head = self._linear_head() if self.phase.solver == "lbfgs" and not self.dist.enabled else None
            if head is not None:
                return self._fit_head(head)
            for index, (x, y) in enumerate(self.train_source.batches(), start=1):
                if self._stop_requested():
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
        if self._stop_requested():
            raise StopRequested()
        loss_sum, correct, seen = self._sums
        return loss_sum / max(seen, 1), correct / max(seen, 1)

    def _linear_head(self) -> nn.Linear | None:
        """The model's final Linear layer, or None (a conv head, a model ftui did not build): SGD then."""
        try:
            head = classifier_head(self.model, self.config.backbone)
        except (BackboneError, AttributeError):
            return None
        return head if isinstance(head, nn.Linear) else None

    def _fit_head(self, head: nn.Linear) -> tuple[float, float]:
        """The head fitted to convergence on the features it sees (ftui/train/headfit.py): one pass over the
        train images (the frozen body's cached features) and L-BFGS; (train loss, train accuracy)."""
        features, labels = [], []
        hook = head.register_forward_pre_hook(lambda module, args: features.append(args[0].detach().float().cpu()))
        self._say("fitting the head")
        was_training = self.forward.training
        self.forward.eval()
        try:
            with torch.no_grad():
                for x, y in self.train_source.batches():
                    if self._stop_requested():
                        raise StopRequested()
                    if self.speed.channels_last and x.dim() == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with devices.autocast(self.speed.device, self.speed.use_amp):
                        self.forward(x)
                    labels.append(y.cpu())
        finally:
            hook.remove()
            self.forward.train(was_training)
        x, y = torch.cat(features).flatten(1), torch.cat(labels)
        fit = fit_head(x, y, self.data.meta["num_classes"], seed=self.config.seed)
        with torch.no_grad():
            head.weight.copy_(fit.weight.view_as(head.weight))
            head.bias.copy_(fit.bias)
        logits = x @ fit.weight.T + fit.bias
        self.notes.append(f"head fitted to convergence by L-BFGS on {len(y)} images' features, weight decay "
                          f"{fit.weight_decay:g} chosen on a held-out fold of train")
        loss, acc = float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())
        self._sums = [loss, acc, 1]
        return loss, acc

    def _train_batch(self) -> None:
        """One optimizer step over micro-batches, then on_batch_end."""
        x, y, speed = self.xb, self.yb, self.speed
        self.optimizer.zero_grad(set_to_none=True)
        norm, scale = self._batch_norm(y)
        loss_value, batch_correct = 0.0, 0
        pieces = list(zip(x.split(speed.micro_batch), y.split(speed.micro_batch)))
        # Gradient accumulation over micro-batches: the summed loss / the batch's weight is the batch's mean.
        for k, (xm, ym) in enumerate(pieces):
            if speed.channels_last and xm.dim() == 4:
                xm = xm.contiguous(memory_format=torch.channels_last)
            with self._sync_gradients(k == len(pieces) - 1):
                with devices.autocast(speed.device, speed.use_amp):
                    logits = self.forward(xm)
                    loss = self.criterion(logits.float(), ym) / norm
                if not torch.isfinite(loss):
                    kind = "NaN" if torch.isnan(loss) else "infinite"
                    raise LossNotFinite(f"loss became {kind} at epoch {self.epoch} step {self.batch}: "
                                        f"lower the learning rate (now {self.config.lr:g})")
                self.scaler.scale(loss * scale).backward()
            loss_value += float(loss.detach())
            batch_correct += int((logits.detach().argmax(1) == ym).sum())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        n = int((y != IGNORE).sum()) if self.dist.enabled else int(y.shape[0])
        if self.dist.enabled:
            # Events report the global batch, as one process would.
            loss_value, batch_correct, n = self.dist.sum([loss_value, batch_correct, n])
            batch_correct, n = int(batch_correct), int(n)
        self._sums = [self._sums[0] + loss_value * n, self._sums[1] + batch_correct, self._sums[2] + n]
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
        sums = _evaluate(_unwrapped(self.forward), self.val_source, self.val_criterion, speed.device,
                         speed.val_amp, speed.channels_last)
        total_loss, correct, seen = self.dist.sum(sums)  # over every rank's share of the split
        val_loss, val_acc = total_loss / max(seen, 1), correct / max(seen, 1)
        self._event("on_validate_end", {"epoch": self.epoch, "val_loss": val_loss, "val_acc": val_acc})
        return val_loss, val_acc

    # --- setup and teardown ------------------------------------------------------------------------

    def plan(self) -> list[Phase]:
        """The phases this run trains (the config's recipe unless given)."""
        if self.phases is None:
            names = [g.name for g in self.groups]
            self.phases = plan_phases(self.config, names, resolve_train_groups(self.config.train_groups, names))
        return self.phases

    def _setup(self) -> None:
        config = self.config
        config.validate()
        seed_everything(config.seed)
        device = devices.pick_device(config.device)
        devices.configure_threads()
        if device.type == "cpu":
            # Denormal floats are 10-100x slower on x86; flushing them to zero changes nothing measurable.
            torch.set_flush_denormal(True)
        devices.configure_device(device)
        self.speed = SpeedSettings(device, self.model, config)
        self.speed.world_size = self.dist.world_size
        self.plan()
        self._say("loading images")
        self.data.prepare(self)
        self.model.to(device)
        self.groups, sync_note = self.dist.sync_batchnorm(self.model, self.groups, config.bn_mode)
        if sync_note:
            self.notes.append(sync_note)
        if self.speed.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.notes.append(self.speed.describe())
        self.class_weight = None
        if config.class_weighted_loss:
            self.class_weight = class_weights(self.data.train_class_counts()).to(device)
        # Summed, then divided by the whole batch's weight: micro-batches then add up to the batch's mean loss.
        self.criterion = nn.CrossEntropyLoss(weight=self.class_weight, label_smoothing=config.label_smoothing,
                                             reduction="sum")
        self.val_criterion = nn.CrossEntropyLoss(reduction="sum")
        if self._resume is not None:
            set_rng_state(self._resume["rng"])

    def _enter_phase(self, index: int) -> None:
        """Freeze for the phase, build its batch sources, optimizer, scheduler and grad scaler."""
        self.phase_index, self.phase = index, self.phases[index]
        apply_freeze(self.model, self.groups, set(self.phase.trainable))
        self.forward, self.train_source, self.val_source = self.data.sources(self, self.phase)
        if self.dist.enabled:
            self.forward = self.dist.wrap(self.forward)  # gradients averaged over the ranks
        if self.config.compile:
            self.forward = torch.compile(self.forward)
        self.optimizer = make_optimizer(self.config, param_groups(self.groups, self.phase, self.config.lr))
        self.steps_per_epoch = self.train_source.num_batches(self.config.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_multiplier(self.config, self.steps_per_epoch, self.phase.epochs))
        self.scaler = devices.grad_scaler(self.speed.device, self.speed.use_amp)
        if self._resume is not None and self._resume.get("phase_index") == index:
            self.optimizer.load_state_dict(self._resume["optimizer"])
            self.scheduler.load_state_dict(self._resume["scheduler"])
            self.scaler.load_state_dict(self._resume["scaler"])

    def _stop_requested(self) -> bool:
        """The user's stop, seen by every rank at the same batch (any rank's stop stops them all)."""
        return self.dist.any(self.stop_event.is_set())

    def _batch_norm(self, y: torch.Tensor) -> tuple[torch.Tensor | float, float]:
        """(what the summed loss divides by, gradient scale): the batch size or its labels' summed class
        weights, over the whole global batch when several processes share it. DDP averages gradients over
        the ranks, so each rank's part is scaled by the world size: the sum is one process's mean loss."""
        if not self.dist.enabled:  # no padding in one process: no mask (and no GPU sync for its size)
            return (float(y.shape[0]) if self.class_weight is None else self.class_weight[y].sum()), 1.0
        valid = y[y != IGNORE]
        local = float(valid.shape[0]) if self.class_weight is None else float(self.class_weight[valid].sum())
        return self.dist.sum([local])[0], float(self.dist.world_size)

    def _sync_gradients(self, last: bool):
        """DDP's gradient all-reduce on the last micro-batch only (no_sync before it)."""
        if self.dist.enabled and not last and hasattr(self.forward, "no_sync"):
            return self.forward.no_sync()
        return contextlib.nullcontext()

    def _fit_info(self) -> dict[str, Any]:
        return {
            "epochs": self.config.epochs, "device": str(self.speed.device), "amp": self.speed.use_amp,
            "classes": list(self.data.meta["classes"]), "num_train": self.data.num_train,
            "num_val": self.data.num_val,
            "phases": [{"name": p.name, "epochs": p.epochs, "trainable": p.trainable} for p in self.phases],
            "config": self.config.to_dict(), "notes": list(self.notes),
        }

    def _save_checkpoints(self, val_acc: float | None, improved: bool) -> None:
        if self.folder is None:
            return
        meta = {**self.data.meta, "epoch": self.epoch, "val_acc": val_acc}
        if improved:
            save_checkpoint(self.folder.best_path, self.model, meta)
        # last.pt also holds what a resume needs (ftui/train/resume.py), as tensors and plain types.
        resume = checkpoint_state(self._training_state())
        save_checkpoint(self.folder.last_path, self.model, {**meta, "resume": resume})

    def _end(self, status: str, message: str) -> None:
        self.result.status, self.result.message = status, message

    def _fail(self, exc: Exception) -> None:
        log_failure(log, exc, f"training failed at epoch {self.epoch} step {self.batch}")
        log_path = self.folder.path / LOG_NAME if self.folder is not None else None
        message = describe_exception(exc, self.config, log_path)
        self._end("failed", message)
        self.result.error = message
        self._event("on_error", {"message": message, "error_type": type(exc).__name__})

    def _cleanup(self) -> None:
        self.data.close()
        if self.speed is not None and self.speed.channels_last:
            # Hand the model back in the default layout (checkpoints and callers expect nothing special).
            self.model.to(memory_format=torch.contiguous_format)
        # A stopped or failed run keeps last.pt (the weights as they are now).
        folder, meta = self.folder, self.data.meta
        # An existing last.pt is the end of the last finished epoch, with what a resume needs: kept as is.
        if folder is not None and meta is not None and not folder.last_path.exists():
            try:
                save_checkpoint(folder.last_path, self.model, {**meta, "epoch": self.epoch,
                                                               "val_acc": self.result.best_val_acc or 0.0})
            except Exception as exc:  # noqa: BLE001 - noted, never raised over the real error
                self.notes.append(f"could not save {folder.last_path.name}: {exc}")

    def _event(self, name: str, info: dict[str, Any]) -> None:
        payload = {**info, "control": self.control, "trainer": self}
        for cb in self.callbacks:
            getattr(cb, name)(payload)

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    # --- resume ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a later `load_state_dict` needs to carry on after the last finished epoch."""
        return {"model": copy.deepcopy(self.model.state_dict()), **self._training_state()}

    def _training_state(self) -> dict[str, Any]:
        """state_dict() without the model: what last.pt stores next to the weights."""
        return {
            "epoch": self.epoch,
            "phase_index": self.phase_index, "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "best_val_acc": self.result.best_val_acc, "best_epoch": self.result.best_epoch,
            "global_step": self.global_step, "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Carry on from `state` (call before fit): epochs up to state["epoch"] are skipped."""
        self.model.load_state_dict(state["model"])
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.result.best_val_acc, self.result.best_epoch = state["best_val_acc"], state["best_epoch"]
        self._resume = state


def _unwrapped(module: nn.Module) -> nn.Module:
    """The module inside DDP / torch.compile wrappers (validation runs it directly, BatchNorm folded)."""
    module = getattr(module, "_orig_mod", module)
    return getattr(module, "module", module) if module.__class__.__name__ == "DistributedDataParallel" else module


@torch.inference_mode()
def _evaluate(forward, source, criterion, device, use_amp: bool, channels_last: bool) -> list[float]:
    """[summed loss, correct, seen] over `source` with the module in eval mode (padding labels skipped)."""
    was_training = forward.training
    forward.eval()
    # A BatchNorm-folded copy of the module as it is now: same outputs, faster on CPU. On a GPU, cuDNN's
    # BatchNorm costs little next to tracing the model again every epoch: the module runs as it is.
    fast = fuse_for_inference(forward) if device.type != "cuda" else forward
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    total_loss, correct, seen = 0.0, 0, 0
    try:
        for x, y in source.batches():
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with devices.autocast(device, use_amp):
                logits = fast(x).float()
            total_loss += float(criterion(logits, y))
            correct += int((logits.argmax(1) == y).sum())
            seen += int((y != IGNORE).sum())
    finally:
        forward.train(was_training)
    return [total_loss, correct, seen]


def describe_exception(exc: BaseException, config: TrainConfig, log_path: str | Path | None = None) -> str:
    """A message the user can act on (out of memory -> lower the batch size); an unexpected exception is
    "internal error, details in <log_path>" (its traceback is logged there: errors.log_failure)."""
    if devices.is_out_of_memory(exc):
        device = "cuda" if isinstance(exc, torch.cuda.OutOfMemoryError) else config.device
        return f"out of memory on {device}: lower the batch size (now {config.batch_size}) or the image size"
    if isinstance(exc, FtuiError):
        return str(exc)
    if disk_full(exc):
        return f"disk full while writing {getattr(exc, 'filename', None) or 'a run file'}: free some space"
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f"cannot read {getattr(exc, 'filename', '') or 'a file'}: {exc.strerror or exc}; " \
               "was the dataset moved or changed after it was scanned?"
    return internal_message(log_path, exc)
