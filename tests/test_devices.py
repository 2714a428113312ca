"""Speed settings chosen by what the machine has: CPU instruction set (emulated via torch's own switches)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftui import devices

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import json, torch; from ftui import devices as d; cpu = torch.device('cpu');"
    "print(json.dumps({'isa': d.cpu_isa(), 'amp': str(d.amp_dtype(cpu)), 'model': d.cpu_model(),"
    "'cl': d.use_channels_last(torch.nn.Conv2d(3, 3, 1), cpu), 'micro': d.micro_batch_size(cpu, 64)}))"
)


def _probe(**env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**os.environ, **env}, check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


@pytest.mark.slow  # times kernels
def test_settings_follow_the_instruction_set_torch_uses_here():
    # torch's own switches lower what its kernels may use: an AVX2-only or plain CPU, emulated on this one.
    avx2 = _probe(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    assert avx2["isa"] == "avx2" and avx2["amp"] == "None" and "(avx2)" in avx2["model"]
    assert avx2["micro"] == devices.CPU_PROFILES["avx2"].micro_batch
    plain = _probe(ATEN_CPU_CAPABILITY="default")
    assert plain["isa"] == "default" and plain["amp"] == "None" and plain["cl"] is False
    native = _probe()
    if native["isa"] == "avx512_bf16":
        assert native["amp"] == "torch.bfloat16"
    else:
        assert native["amp"] == "None"


def test_cpu_needs_no_grad_scaler_and_takes_micro_batches():
    cpu = torch.device("cpu")
    assert not devices.needs_grad_scaler(cpu, True)
    assert not devices.grad_scaler(cpu, True).is_enabled()
    assert devices.micro_batch_size(cpu, 64) == devices.cpu_profile().micro_batch
    assert devices.default_batch_size(torch.nn.Linear(2, 2), 32, cpu, fallback=16) == 16
    assert devices.device_name(cpu) == devices.cpu_model()


def test_batch_for_memory_is_the_largest_power_of_two_that_fits():
    gib = 2**30
    assert devices.batch_for_memory(80 * gib, 100 * 2**20) == 256  # capped
    assert devices.batch_for_memory(8 * gib, 100 * 2**20) == 32  # 4 GiB budget / 100 MiB = 40 -> 32
    assert devices.batch_for_memory(8 * gib, 100 * 2**20, fixed_bytes=2 * gib) == 16
    assert devices.batch_for_memory(1 * gib, 500 * 2**20) == devices.MIN_DEFAULT_BATCH  # never below


def test_cudnn_autotuning_is_off_unless_asked_for(monkeypatch):
    monkeypatch.delenv("FTUI_CUDNN_BENCHMARK", raising=False)
    assert devices.cudnn_benchmark_enabled() is False
    monkeypatch.setenv("FTUI_CUDNN_BENCHMARK", "1")
    assert devices.cudnn_benchmark_enabled() is True
    for value in ("0", "", "yes", "true"):
        monkeypatch.setenv("FTUI_CUDNN_BENCHMARK", value)
        assert devices.cudnn_benchmark_enabled() is False
