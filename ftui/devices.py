"""Device choice (auto = cuda > mps > cpu) and the speed settings each machine gets, in one place.

CUDA: no micro-batching, bfloat16 autocast where the card computes it natively (no GradScaler needed),
float16 + GradScaler on older cards, TF32 matmuls, cuDNN's heuristics (no autotuning), channels_last for
conv nets, a default batch sized from free memory. CPU: chosen by what the processor has (`cpu_isa`):
bfloat16 autocast for inference only with native bf16 (AVX-512 bf16 / AMX; emulated bf16 is slower),
channels_last and the micro-batch cap per instruction set (CPU_PROFILES). `python -m ftui bench` prints
what it chose.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from dataclasses import dataclass

import torch

from ftui.errors import FtuiError


@contextlib.contextmanager
def single_torch_thread():
    """Intra-op parallelism off for this thread until the block ends: small problems (an L-BFGS head fit, the
    doctor's label probe) have ops too small to split, and on a busy 2-core machine the thread hand-offs made
    each step many times slower (L-BFGS on 1000 x 1280: 300 ms vs 37 ms per step). torch's thread count is per
    thread (OpenMP), so a training job in another thread keeps its own."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class DeviceError(FtuiError):
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


@dataclass(frozen=True)
class CpuProfile:
    """Speed settings for one kind of CPU (see CPU_PROFILES)."""

    # Largest batch one forward/backward sees; bigger user batches are accumulated from these.
    micro_batch: int
    channels_last: bool


# Per instruction set (the best one torch's kernels and oneDNN may use here). avx512_bf16: measured on a
# 2-core AVX-512 bf16 EPYC (README's CPU table): channels_last several times faster, batches above 16 slower
# per image (8 and 16 equal). avx2: the same CPU limited to AVX2 (ATEN_CPU_CAPABILITY=avx2,
# ONEDNN_MAX_CPU_ISA=AVX2), mobilenet_v2 training, one thread, interleaved runs: micro-batch 8 took 137 ms per
# image, 16 took 163, 32 took 231; channels_last 137 vs 226 contiguous. default (no AVX2, e.g. ARM):
# unmeasured, contiguous memory and 16 as the safe choice.
CPU_PROFILES = {
    "avx512_bf16": CpuProfile(micro_batch=16, channels_last=True),
    "avx512": CpuProfile(micro_batch=16, channels_last=True),
    "avx2": CpuProfile(micro_batch=8, channels_last=True),
    "default": CpuProfile(micro_batch=16, channels_last=False),
}
def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _onednn_allows_avx512() -> bool:
    """False when ONEDNN_MAX_CPU_ISA caps oneDNN below AVX-512 (how an AVX2 machine is emulated here)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return cap in ("ALL", "") or cap.startswith(("AVX512", "AVX10", "AVX2_VNNI_2"))


@functools.cache
def cpu_isa() -> str:
    """"avx512_bf16" (native bfloat16: avx512_bf16 or AMX), "avx512", "avx2" or "default": what torch's CPU
    kernels use here (ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA can lower it)."""
    capability = str(torch.backends.cpu.get_cpu_capability()).lower()
    if capability.startswith("avx512") and _onednn_allows_avx512():
        flags = _cpu_flags()
        if platform.system() == "Linux" and flags & {"avx512_bf16", "amx_bf16"}:
            try:
                if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                    return "avx512_bf16"
            except (AttributeError, RuntimeError):
                pass
        return "avx512"
    if capability.startswith("avx"):
        return "avx2"
    return "default"


def cpu_profile() -> CpuProfile:
    return CPU_PROFILES[cpu_isa()]


# The micro-batch cap of the CPU this process runs on.
CPU_MAX_MICRO_BATCH = cpu_profile().micro_batch


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware (x86 avx512_bf16 / AMX); emulated bf16 is slower."""
    return cpu_isa() == "avx512_bf16"


@functools.cache
def cpu_model() -> str:
    """The processor's name (for bench tables), with the instruction set ftui chose its settings by."""
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} ({cpu_isa()})"


def device_name(device: torch.device) -> str:
    """The card's name on CUDA (torch.cuda.get_device_name), the CPU's model elsewhere."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cuda_has_bf16(device: torch.device | None = None) -> bool:
    """True when the CUDA card computes bfloat16 natively (Ampere and newer)."""
    if not torch.cuda.is_available():
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype worth using: bfloat16 on CUDA cards that have it (else float16), bfloat16 on a CPU
    with native bf16, else None."""
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_bf16(device) else torch.float16
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


def needs_grad_scaler(device: torch.device, enabled: bool) -> bool:
    """Loss scaling is needed for float16 autocast only (bfloat16 has float32's range)."""
    return bool(enabled) and device.type == "cuda" and amp_dtype(device) == torch.float16


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A GradScaler for float16 on CUDA; a pass-through otherwise (bfloat16 needs no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, enabled))


def use_channels_last(model: torch.nn.Module, device: torch.device | None = None) -> bool:
    """channels_last for convolutional nets on CUDA (tensor cores) and on CPUs whose profile says so."""
    if not any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        return False
    if device is None or device.type == "cpu":
        return cpu_profile().channels_last
    return device.type == "cuda"


def micro_batch_size(device: torch.device, batch_size: int) -> int:
    """The batch one forward/backward sees: capped on CPU (gradients are accumulated up to batch_size);
    a GPU takes the whole batch at once."""
    return min(batch_size, CPU_MAX_MICRO_BATCH) if device.type == "cpu" else batch_size


def cudnn_benchmark_enabled() -> bool:
    """Whether cuDNN times its algorithms for every new input shape (torch.backends.cudnn.benchmark).

    Off unless FTUI_CUDNN_BENCHMARK=1. Measured on an H200 (cuDNN 9.19, mobilenet_v2, bf16 channels_last,
    docs/gpu.md): the first training step at each new batch shape took 30.4 s with autotuning and 12.2 s
    without, the first eval call 4.8 s vs 3.0 s; warm steps were the same (36.1 vs 37.7 ms). A fine-tune
    meets several shapes (the last, smaller batch; validation's): autotuning cost time and gained none."""
    return os.environ.get("FTUI_CUDNN_BENCHMARK", "0").strip() == "1"


def configure_device(device: torch.device) -> None:
    """Process-wide speed switches for `device`: cuDNN autotuning and TF32 on CUDA, flushed denormals on CPU."""
    if device.type == "cuda":
        # cuDNN's heuristics pick the algorithm: autotuning every new shape was slower (cudnn_benchmark_enabled).
        torch.backends.cudnn.benchmark = cudnn_benchmark_enabled()
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif device.type == "cpu":
        # Denormal floats are 10-100x slower on x86; flushing them to zero changes nothing measurable.
        torch.set_flush_denormal(True)


# A default batch on CUDA: the largest power of two whose activations fit in this share of free memory.
BATCH_MEMORY_SHARE = 0.5
MIN_DEFAULT_BATCH, MAX_DEFAULT_BATCH = 16, 256


def batch_for_memory(free_bytes: int, bytes_per_image: float, fixed_bytes: float = 0.0) -> int:
    """The largest power-of-two batch in [MIN_DEFAULT_BATCH, MAX_DEFAULT_BATCH] that fits in
    BATCH_MEMORY_SHARE of free memory, given what one image and the batch-independent part cost."""
    budget = BATCH_MEMORY_SHARE * free_bytes - fixed_bytes
    batch = MIN_DEFAULT_BATCH
    while batch * 2 <= MAX_DEFAULT_BATCH and (batch * 2) * bytes_per_image <= budget:
        batch *= 2
    return batch


def default_batch_size(model: torch.nn.Module, image_size: int, device: torch.device, fallback: int = 16) -> int:
    """`fallback` off CUDA; on CUDA a batch sized from free memory by measuring two small all-layers
    training steps (any backbone and image size is sized by what it really needs). The model's weights,
    BatchNorm statistics and trainable flags are left as they were."""
    if device.type != "cuda":
        return fallback
    model = model.to(device)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    peaks = {}
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()  # frozen statistics: the probe must not move the pretrained running means
        for p, _ in flags:
            p.requires_grad_(True)
        for n in (2, 4):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            x = torch.randn(n, 3, image_size, image_size, device=device)
            with torch.autocast("cuda", dtype=amp_dtype(device)):
                loss = model(x).float().sum()
            loss.backward()
            peaks[n] = torch.cuda.max_memory_allocated(device) - base
            model.zero_grad(set_to_none=True)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode
    per_image = max(1.0, (peaks[4] - peaks[2]) / 2)
    fixed = max(0.0, peaks[2] - 2 * per_image)
    return batch_for_memory(torch.cuda.mem_get_info(device)[0], per_image, fixed)


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


def setup_device(preference: str) -> torch.device:
    """The device a run trains on, with this process's threads and flags set for it."""
    device = pick_device(preference)
    configure_threads()
    if device.type == "cpu":
        # Denormal floats are 10-100x slower on x86; flushing them to zero changes nothing measurable.
        torch.set_flush_denormal(True)
    configure_device(device)
    return device
