"""DistributedDataParallel end to end: `train --gpus 2 --device cpu` runs 2 processes under torchrun (gloo).

One run folder (rank 0 writes it), exit 0, and final weights equal to one process training with the same
global batch: the split of every batch over the ranks changes nothing but float summation order.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_class_folder

from ftui.cli import main
from ftui.runs import load_checkpoint


def _train(data, out, runs, *extra: str) -> int:
    return main([str(a) for a in (
        "train", data, "--backbone", "resnet18", "--weights", "none", "--train-groups", "all", "--recipe", "plain",
        "--optimizer", "sgd", "--lr", "0.05", "--scheduler", "none", "--epochs", "2", "--batch-size", "6",
        "--image-size", "32", "--no-augment", "--val-fraction", "0.25", "--device", "cpu", "--out", out,
        "--runs-dir", runs, *extra)])


@pytest.mark.slow
def test_two_gloo_processes_write_one_run_and_match_one_process(tmp_path, capsys):
    # resnet18 has no Dropout and BatchNorm stays frozen: nothing random inside the model.
    data = make_class_folder(tmp_path / "colours", per_class=7)  # 21 images: batches of 6 end with a short one
    runs = tmp_path / "runs"
    assert _train(data, tmp_path / "ddp", runs, "--gpus", "2") == 0
    capsys.readouterr()
    assert _train(data, tmp_path / "single", runs) == 0
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    assert {"metrics.csv", "best.pt", "last.pt", "config.json"} <= {p.name for p in ddp.iterdir()}
    # Rank 1 wrote nothing: no second run folder anywhere.
    assert not runs.exists() or not any(runs.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colours", "ddp", "single"]
    a = load_checkpoint(ddp / "last.pt")["state_dict"]
    b = load_checkpoint(single / "last.pt")["state_dict"]
    for key, value in b.items():
        assert torch.allclose(a[key].float(), value.float(), atol=1e-4, rtol=1e-3), key
    # The events (metrics.csv rows) mean the same: summed over ranks, they match one process's.
    rows_ddp = (ddp / "metrics.csv").read_text().splitlines()
    rows_single = (single / "metrics.csv").read_text().splitlines()
    assert len(rows_ddp) == len(rows_single)
    status = json.loads((ddp / "status.json").read_text())
    assert status["status"] == "done"
