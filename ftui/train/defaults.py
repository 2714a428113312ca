"""The listeners every run gets from its config: what used to be wired by hand in each caller."""

from __future__ import annotations

from pathlib import Path

from ftui.config import TrainConfig
from ftui.runs import RunFolder
from ftui.train.callbacks import Callback, CSVLogger, EarlyStopping
from ftui.train.checkpoint import Checkpoint
from ftui.train.headalone import HeadAlone
from ftui.train.headfit import LbfgsHead


def default_callbacks(config: TrainConfig, run_dir: str | Path | None) -> list[Callback]:
    """In event order, after the caller's own listeners: metrics.csv, early stopping, best/last checkpoints
    (each after the epoch's metrics row), the head-alone candidate (it may replace best.pt), and the L-BFGS head
    fit (last: it skips the head epoch's batches by raising CancelEpoch in on_epoch_start)."""
    listeners: list[Callback] = []
    checkpoint = None
    if run_dir is not None:
        listeners.append(CSVLogger(RunFolder(Path(run_dir)).metrics_path))
    if config.early_stopping_patience:
        listeners.append(EarlyStopping(config.early_stopping_patience, monitor="val_loss"))
    if run_dir is not None:
        checkpoint = Checkpoint(run_dir)
        listeners.append(checkpoint)
    if config.head_alone:
        listeners.append(HeadAlone(checkpoint))
    if config.head_fit == "lbfgs":
        listeners.append(LbfgsHead())
    return listeners
