"""The lr finder and the ONNX export (with its onnxruntime parity check) for multilabel and regression runs:
small random-init models on real image files written by the fixtures."""

from __future__ import annotations

import json
import math

import pytest
import torch
from run_fixtures import run_job
from task_builders import make_multilabel_csv, make_regression_csv

from ftui.config import AugConfig, TrainConfig
from ftui.data.datasets import load_dataset
from ftui.models.backbones import build, layer_groups
from ftui.results.export import export_run
from ftui.results.loading import load_run
from ftui.results.predict import Predictor, val_examples
from ftui.train.lrfind import find_lr
from ftui.train.trainer import seed_everything

MAKERS = {"multilabel": make_multilabel_csv, "regression": make_regression_csv}


def task_config(csv, task: str, **overrides) -> TrainConfig:
    base = {"data": str(csv), "task": task, "backbone": "mobilenet_v3_small", "weights": "none",
            "image_size": 32, "batch_size": 8, "device": "cpu", "aug": AugConfig.none(), "train_groups": "all",
            "recipe": "plain"}
    return TrainConfig(**{**base, **overrides})


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_lr_finder_sweeps_the_tasks_loss_and_leaves_the_model_as_it_was(task, tmp_path):
    csv = MAKERS[task](tmp_path / "data", n=40)
    config = task_config(csv, task)
    dataset = load_dataset(config.data, val_fraction=config.val_fraction, seed=config.seed, task=task)
    assert dataset.task == task
    seed_everything(0)
    model = build(config.backbone, len(dataset.classes), weights="none")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = find_lr(config, dataset, model=model, groups=layer_groups(model, config.backbone), num_steps=20)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    losses = result.table["loss"].tolist()
    assert 3 <= len(losses) <= 20 and all(math.isfinite(v) for v in losses)
    # Batches carry target-table rows, not classes: a cross-entropy on them would fail (row 39 of 3 classes);
    # the first, near-untouched step's loss is the task's: BCE per label near log 2 for a random head, and a
    # Huber loss on standardized targets (each about N(0, 1)) below 2.
    if task == "multilabel":
        assert 0.3 < losses[0] < 1.5
    else:
        assert 0.0 < losses[0] < 2.0
    assert 1e-7 <= result.suggestion <= 10


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_onnx_export_matches_pytorch_in_onnxruntime_and_says_how_to_read_it(task, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    csv = MAKERS[task](tmp_path / "data", n=32)
    config = task_config(csv, task, epochs=1, runs_dir=str(tmp_path / "runs"))
    job = run_job(config, tmp_path / "run")
    assert job.status == "done", job.snapshot()
    result = export_run(tmp_path / "run", "onnx")
    assert result.images_checked >= 2 and result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    # Again here, with another batch size than the export traced and the outputs read as the metadata says.
    run = load_run(tmp_path / "run")
    images = [p for p, _ in val_examples(run, 3)]
    predictor = Predictor(run)
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": predictor.tensors(images).numpy()})
    assert logits.shape == (len(images), len(run.classes))
    assert (torch.from_numpy(logits) - predictor.logits(images)).abs().max() <= 1e-4
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["task"] == task
    logits = torch.from_numpy(logits).double()
    if task == "regression":
        values = logits * torch.tensor(meta["target_std"]) + torch.tensor(meta["target_mean"])
        assert torch.allclose(values, predictor.outputs(images).double(), atol=1e-3)
    else:
        assert len(meta["thresholds"]) == 3
        assert torch.allclose(torch.sigmoid(logits), predictor.outputs(images).double(), atol=1e-4)
