"""The GPU machine has torch and torchvision but no gradio or imagehash: the engine, CLI, bench, predict,
evaluate and lr finder must import and run their command-line entry without them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCKED = """
import sys
for name in ("gradio", "imagehash", "gradio_client"):
    sys.modules[name] = None  # any import of them now raises ImportError
import ftui.cli, ftui.train.trainer, ftui.bench.speed, ftui.results.predict, ftui.results.evaluate, ftui.train.lrfind, ftui.jobs, ftui.train.distributed
import ftui.data.gpudata, ftui.data.batchaug, ftui.devices
from ftui.cli import main
for command in (["train", "--help"], ["bench", "--help"], ["predict", "--help"], ["evaluate", "--help"]):
    try:
        main(command)
    except SystemExit as exc:
        assert exc.code == 0, (command, exc.code)
print("imports ok")
"""


@pytest.mark.slow  # a fresh interpreter
def test_training_path_imports_without_gradio_or_imagehash():
    out = subprocess.run([sys.executable, "-c", BLOCKED], check=False, cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "imports ok" in out.stdout
