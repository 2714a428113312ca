"""One model, one number (issue 23, item 6): the val accuracy a run reports for its kept model (status.json,
the CLI's "best val accuracy", the run table) is what evaluating that best.pt gives, for every recipe.

The data are noise images with arbitrary labels seen through pretrained MobileNetV2 features (the shared
weights file; skipped without it): the model stays near chance, so many val images sit near a decision
boundary and any difference between how training validated and how `evaluate` predicts (precision,
transform, which weights were saved) flips some of them. Before the fix, validation ran the backbone in
bfloat16 on CPU and `evaluate` in float32: 11 of 300 such images changed class."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED
from PIL import Image

from ftui.config import AugConfig, TrainConfig
from ftui.jobs import JobManager
from ftui.results.evaluate import evaluate

WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_dequantized.pth"
pytestmark = [pytest.mark.slow, pytest.mark.shared,
              pytest.mark.skipif(not WEIGHTS.is_file(), reason="needs ../shared/weights (pretrained MobileNetV2)")]

RECIPES = {
    "head only, plain": {"train_groups": "head", "recipe": "plain"},
    "head only, fine_tune": {"train_groups": "head", "recipe": "fine_tune"},
    "all layers, plain": {"train_groups": "all", "recipe": "plain"},
    "fine_tune (head sgd, then all)": {"train_groups": "all", "recipe": "fine_tune"},
    "fine_tune (head lbfgs, then all)": {"train_groups": "all", "recipe": "fine_tune", "head_fit": "lbfgs"},
    "fine_tune, last stage": {"train_groups": "last:1", "recipe": "fine_tune"},
}


@pytest.fixture(scope="module")
def noise_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        for i in range(50):
            pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
            (root / c).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("name", list(RECIPES))
def test_reported_best_val_accuracy_is_what_evaluating_best_pt_gives(noise_data, tmp_path, name):
    config = TrainConfig(data=str(noise_data), backbone="mobilenet_v2", weights=str(WEIGHTS), image_size=64,
                         epochs=3, batch_size=16, val_fraction=0.4, device="cpu", aug=AugConfig.none(), seed=0,
                         **RECIPES[name])
    job = JobManager(tmp_path / "runs").start(config)
    job.wait(600)
    snap = job.snapshot()
    assert snap["status"] == "done", snap
    run_dir = snap["run_dir"]
    status = json.loads((tmp_path / "runs" / snap["run_id"] / "status.json").read_text())
    saved = json.loads((tmp_path / "runs" / snap["run_id"] / "evaluation.json").read_text())
    again = evaluate(run_dir, split="val")
    n = again.num_items
    assert n == 60
    # Counts, not floats: the same images right.
    assert round(status["best_val_acc"] * n) == again.correct == saved["correct"], (
        name, status["best_val_acc"], again.accuracy)
    assert round(snap["best_val_acc"] * n) == again.correct
