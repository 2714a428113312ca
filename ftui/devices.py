"""Device choice (auto = cuda > mps > cpu) and mixed precision, in one place."""

from __future__ import annotations

import contextlib

import torch


class DeviceError(ValueError):
    """A requested device that this machine does not have."""


def available_devices() -> list[str]:
    """Devices usable here, best first ('cpu' is always last)."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found + ["cpu"]


def pick_device(preference: str = "auto") -> torch.device:
    """'auto' picks the best available device; naming an absent one raises DeviceError."""
    found = available_devices()
    if preference == "auto":
        return torch.device(found[0])
    if preference not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {preference!r}: use auto, cpu, cuda or mps")
    if preference not in found:
        raise DeviceError(f"device {preference!r} is not available here (available: {', '.join(found)})")
    return torch.device(preference)


def amp_enabled(device: torch.device, mixed_precision: bool) -> bool:
    """Mixed precision only on CUDA: on CPU and MPS it is slower or unsupported for training."""
    return bool(mixed_precision) and device.type == "cuda"


def autocast(device: torch.device, enabled: bool):
    """An autocast context (float16 on CUDA) or a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16)


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A GradScaler that is a pass-through when AMP is off."""
    return torch.amp.GradScaler(device.type, enabled=enabled)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or isinstance(exc, MemoryError)
    )
