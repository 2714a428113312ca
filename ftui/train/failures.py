"""How a training run fails: the exceptions the loop raises and the message a user can act on."""

from __future__ import annotations

from pathlib import Path

import torch

from ftui import devices
from ftui.config import TrainConfig
from ftui.errors import FtuiError, internal_message
from ftui.runs import disk_full


class StopRequested(Exception):
    """The user's stop event fired."""


class LossNotFinite(FtuiError):
    """The loss became NaN or infinite (the message says what to change)."""


def check_finite(loss: torch.Tensor, where: str, lr: float) -> None:
    """Raise LossNotFinite when `loss` is NaN or infinite; `where` is e.g. "epoch 2 step 5"."""
    if not torch.isfinite(loss):
        kind = "NaN" if torch.isnan(loss) else "infinite"
        raise LossNotFinite(f"loss became {kind} at {where}: lower the learning rate (now {lr:g})")


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
