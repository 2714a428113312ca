"""Device choice (auto = cuda > mps > cpu), mixed precision, memory format and CPU micro-batch, in one place.

CPU choices were measured on a 2-core AVX-512 CPU with mobilenet_v2 (`python -m ftui bench` prints them):
channels_last made training and inference several times faster; bfloat16 autocast added more on a CPU with
native bf16 (avx512_bf16/AMX); batches above 16 ran slower per image (cache effects).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform

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


# Largest batch one forward/backward sees on CPU; bigger user batches are accumulated from these.
CPU_MAX_MICRO_BATCH = 16


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware (x86 avx512_bf16 / AMX); emulated bf16 is slower."""
    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    if " avx512_bf16" not in flags and " amx_bf16" not in flags:
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype worth using here: float16 on CUDA, bfloat16 on a CPU with native bf16, else None."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def amp_enabled(device: torch.device, mixed_precision: bool) -> bool:
    """Mixed precision where it is measured faster: CUDA (float16) and CPUs with native bfloat16."""
    return bool(mixed_precision) and amp_dtype(device) is not None


def autocast(device: torch.device, enabled: bool):
    """An autocast context (float16 on CUDA, bfloat16 on CPU) or a no-op context."""
    dtype = amp_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A GradScaler for float16 on CUDA; a pass-through otherwise (bfloat16 needs no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")


def use_channels_last(model: torch.nn.Module) -> bool:
    """channels_last pays off for convolutional nets (measured several times faster on CPU)."""
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def micro_batch_size(device: torch.device, batch_size: int) -> int:
    """The batch one forward/backward sees: capped on CPU (gradients are accumulated up to batch_size)."""
    return min(batch_size, CPU_MAX_MICRO_BATCH) if device.type == "cpu" else batch_size


def physical_cores() -> int:
    """Physical CPU cores available to this process (the logical count shrunk by the SMT ratio)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        siblings = [int(x.split(":")[1]) for x in lines if x.startswith("siblings")]
        cores = [int(x.split(":")[1]) for x in lines if x.startswith("cpu cores")]
        if siblings and cores and siblings[0] > cores[0]:
            return max(1, logical * cores[0] // siblings[0])
    except (OSError, ValueError, IndexError):
        pass
    return max(1, logical)


def decode_workers() -> int:
    """Threads decoding image files: every core (PIL releases the GIL while decoding), at least 2."""
    return max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2))


def configure_threads() -> int:
    """torch threads = physical cores unless OMP_NUM_THREADS says otherwise; returns the count in use."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(physical_cores())
    return torch.get_num_threads()


def loader_options(device: torch.device, num_workers: int) -> dict:
    """DataLoader settings: pinned memory for CUDA, workers kept alive between epochs."""
    return {"num_workers": num_workers, "pin_memory": device.type == "cuda",
            "persistent_workers": num_workers > 0}

def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or isinstance(exc, MemoryError)
    )
