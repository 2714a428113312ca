"""Listeners for the training loop: the loop emits events, these react; the loop knows none of them.

Every event is a method call with one plain dict, in this order (ftui/train/trainer.py's `Trainer`):

    on_fit_start
      on_phase_start                       once per phase of the recipe
        on_epoch_start
          on_batch_start, on_batch_end     once per optimizer step
          on_validate_start, on_validate_end
        on_epoch_end
    on_error                               only when the run fails
    on_fit_end                             always

Each dict carries the event's numbers plus "control" (the shared `TrainingControl`: ask for a stop after
this epoch, HF Trainer style) and "trainer" (its state as attributes, for listeners that steer: the lr
finder, a resume hook, a device wrapper). To cut something short a listener raises one of the Cancel
exceptions below (fastai's CancelBatchException & co.).
"""

from __future__ import annotations

import csv
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ftui.runs import EPOCH_COLUMNS

BATCH_COLUMNS = ["step", "epoch", "loss", "lr", "images_per_s"]


@dataclass
class TrainingControl:
    """What listeners may ask of the loop: stop after this batch, and why."""

    should_stop: bool = False
    stop_reason: str = ""

    def request_stop(self, reason: str) -> None:
        """Ask the loop to end the run (it finishes the current batch first)."""
        self.should_stop = True
        self.stop_reason = reason


class CancelBatch(Exception):
    """Raised by a listener in on_batch_start: skip this batch (no step, not counted)."""


class CancelEpoch(Exception):
    """Raised by a listener during training batches: end this epoch's training; it is still validated."""


class CancelValidate(Exception):
    """Raised by a listener in on_validate_start: skip validation (val metrics are None)."""


class CancelFit(Exception):
    """Raised by a listener anywhere in the loop: end the run now as done; the message says why."""


class Callback:
    """Base listener: every event is a no-op unless overridden."""

    def on_fit_start(self, info: dict[str, Any]) -> None:
        """Training begins: config, classes, device, phases, feature-cache notes."""

    def on_phase_start(self, info: dict[str, Any]) -> None:
        """A phase's optimizer and scheduler exist: phase, trainable groups, first and last epoch."""

    def on_epoch_start(self, info: dict[str, Any]) -> None:
        """An epoch begins: epoch, epochs, phase."""

    def on_batch_start(self, info: dict[str, Any]) -> None:
        """A batch is about to train: step, epoch, batch (trainer.xb / trainer.yb hold it)."""

    def on_batch_end(self, info: dict[str, Any]) -> None:
        """One optimizer step done: step, epoch, loss, lr, images_per_s."""

    def on_validate_start(self, info: dict[str, Any]) -> None:
        """Validation is about to run: epoch."""

    def on_validate_end(self, info: dict[str, Any]) -> None:
        """Validation done: epoch, val_loss, val_acc."""

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        """One epoch done: train/val loss and accuracy, lr, seconds, eta_s."""

    def on_fit_end(self, info: dict[str, Any]) -> None:
        """Training over: status (done, stopped, failed), message, best_val_acc."""

    def on_error(self, info: dict[str, Any]) -> None:
        """Something failed: message (what to do), error type."""


def _plain(info: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """Copy only the named keys (no control object, no tensors) so history rows stay plain data."""
    return {k: info.get(k) for k in keys}


class History(Callback):
    """Thread-safe record of epoch rows and batch rows; readers get copies as DataFrames."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epochs: list[dict[str, Any]] = []
        self._batches: list[dict[str, Any]] = []
        self.last_batch: dict[str, Any] = {}
        self.last_epoch: dict[str, Any] = {}

    def on_batch_end(self, info: dict[str, Any]) -> None:
        row = _plain(info, BATCH_COLUMNS)
        with self._lock:
            self._batches.append(row)
            self.last_batch = row

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        row = _plain(info, EPOCH_COLUMNS)
        with self._lock:
            self._epochs.append(row)
            self.last_epoch = row

    def epochs(self) -> pd.DataFrame:
        """One row per finished epoch."""
        with self._lock:
            rows = list(self._epochs)
        return pd.DataFrame(rows, columns=EPOCH_COLUMNS)

    def batches(self) -> pd.DataFrame:
        """One row per optimizer step (global step, epoch, loss, lr, images/s)."""
        with self._lock:
            rows = list(self._batches)
        return pd.DataFrame(rows, columns=BATCH_COLUMNS)

    def best_val_acc(self) -> float | None:
        """Highest val accuracy so far, or None before the first epoch ends."""
        with self._lock:
            accs = [r["val_acc"] for r in self._epochs if r.get("val_acc") is not None]
        return max(accs) if accs else None


class CSVLogger(Callback):
    """Adds one row to metrics.csv as each epoch ends (atomically), so a crash loses at most one epoch."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_fit_start(self, info: dict[str, Any]) -> None:
        from ftui.runs import write_text_atomic

        if not self.path.exists() or self.path.stat().st_size == 0:
            write_text_atomic(self.path, ",".join(EPOCH_COLUMNS) + "\n")

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        import io

        from ftui.runs import append_line_atomic

        row = _plain(info, EPOCH_COLUMNS)
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow(["" if row[k] is None else row[k] for k in EPOCH_COLUMNS])
        # The whole file is rewritten through a temp file: a full disk leaves the earlier rows intact.
        append_line_atomic(self.path, line.getvalue())


class EarlyStopping(Callback):
    """Stops the run when the monitored metric has not improved for `patience` epochs of the current phase.

    Counting restarts with each phase, and an epoch whose learning rate is still rising (a onecycle or linear
    warm-up) is never counted as a bad one: while the rate climbs, val loss may not beat the fitted head's or
    the first epoch's yet, and that is no plateau. (Counting through the warm-up stopped the from-scratch demo
    recipe, 14 onecycle epochs, at epoch 4 of 14 with val accuracy 0.64 instead of 0.99.)
    """

    def __init__(self, patience: int, monitor: str = "val_acc", min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.monitor = monitor
        self.min_delta = min_delta
        # Accuracy improves upwards, losses downwards.
        self.sign = -1.0 if "loss" in monitor else 1.0
        self.best = -math.inf
        self.bad_epochs = 0
        self.last_lr: float | None = None

    def on_fit_start(self, info: dict[str, Any]) -> None:
        self.best = -math.inf
        self.bad_epochs = 0
        self.last_lr = None

    def on_phase_start(self, info: dict[str, Any]) -> None:
        self.on_fit_start(info)

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        value, lr = info.get(self.monitor), info.get("lr")
        warming_up = lr is not None and self.last_lr is not None and lr > self.last_lr
        self.last_lr = lr if lr is not None else self.last_lr
        if value is None:
            return
        score = self.sign * float(value)
        if score > self.best + self.min_delta:
            self.best = score
            self.bad_epochs = 0
            return
        if warming_up:
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and info.get("control") is not None:
            info["control"].request_stop(early_stop_message(info, self.monitor, self.patience))


EARLY = "stopped early"


def early_stop_message(info: dict[str, Any], monitor: str, patience: int) -> str:
    """'stopped early at epoch 5: val loss did not improve for 3 epochs; kept epoch 2': the bar jumping to
    100% and a plain "finished" left users wondering why a 10-epoch run ended at 5, and which epoch it kept."""
    what = monitor.replace("_acc", " accuracy").replace("_", " ")
    text = f"{EARLY} at epoch {info.get('epoch')}: {what} did not improve for {patience} epochs"
    kept = info.get("best_epoch")
    return text + (f"; kept epoch {kept}" if kept else "")


class PrintProgress(Callback):
    """One line per epoch to a stream (the CLI's progress)."""

    def __init__(self, write=print) -> None:
        self.write = write
        self.printed: list[str] = []

    def on_fit_start(self, info: dict[str, Any]) -> None:
        for note in info.get("notes", []):
            self.write(note)
            self.printed.append(note)

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        self.write(format_epoch_line(info))


def format_epoch_line(info: dict[str, Any]) -> str:
    """'epoch 2/5 [head] train_loss 0.41 train_acc 0.82 val_loss 0.30 val_acc 0.90 lr 1e-03 3.1s'."""
    def num(key: str, fmt: str) -> str:
        value = info.get(key)
        return "-" if value is None else format(value, fmt)

    return (
        f"epoch {info.get('epoch')}/{info.get('epochs')} [{info.get('phase', '')}] "
        f"train_loss {num('train_loss', '.4f')} train_acc {num('train_acc', '.4f')} "
        f"val_loss {num('val_loss', '.4f')} val_acc {num('val_acc', '.4f')} "
        f"lr {num('lr', '.2e')} {num('seconds', '.1f')}s"
    )
