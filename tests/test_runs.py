"""Run folders: ids, creation, status, listing, checkpoints that load with weights_only=True."""

from __future__ import annotations

import re

import pytest
import torch

from ftui.config import TrainConfig
from ftui.models.backbones import build
from ftui.results.loading import load_run
from ftui.runs import RunError, RunFolder, RunStore, load_checkpoint, new_run_id, save_checkpoint


def test_run_id_is_timestamp_backbone_and_hex():
    assert re.fullmatch(r"\d{8}-\d{6}-resnet18-[0-9a-f]{4}", new_run_id("resnet18"))
    assert new_run_id("resnet18", name="my run!").endswith("-my_run")


def test_create_writes_config_and_status_and_refuses_a_non_empty_folder(tmp_path):
    store = RunStore(tmp_path / "runs")
    config = TrainConfig(data="d", backbone="resnet18")
    folder = store.create(config)
    assert TrainConfig.from_file(folder.path / "config.json") == config
    assert folder.read_status()["status"] == "created"
    explicit = store.create(config, run_dir=tmp_path / "mine")
    assert explicit.path == tmp_path / "mine"
    with pytest.raises(RunError, match="not empty"):
        store.create(config, run_dir=tmp_path / "mine")


def test_checkpoint_round_trips_with_weights_only(tmp_path):
    model = build("mobilenet_v3_small", 3, weights="none")
    meta = {"classes": ["a", "b", "c"], "backbone": "mobilenet_v3_small", "num_classes": 3, "image_size": 32,
            "resize_size": 37, "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "epoch": 1, "val_acc": 0.5}
    save_checkpoint(tmp_path / "last.pt", model, meta)
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert raw["classes"] == ["a", "b", "c"]
    for key, value in model.state_dict().items():
        assert torch.equal(raw["state_dict"][key], value)
    # No temp file is left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_loading_a_run_gives_an_eval_model_and_its_metadata(tmp_path):
    store = RunStore(tmp_path / "runs")
    config = TrainConfig(data="d", backbone="mobilenet_v3_small", weights="none", image_size=32)
    folder = store.create(config)
    model = build("mobilenet_v3_small", 2, weights="none")
    save_checkpoint(folder.best_path, model, {
        "classes": ["x", "y"], "backbone": "mobilenet_v3_small", "num_classes": 2, "image_size": 32,
        "resize_size": 37, "mean": [0.5] * 3, "std": [0.25] * 3, "epoch": 1, "val_acc": 1.0})
    folder.update_status(status="done", best_val_acc=1.0, seconds=1.5)
    run = load_run(store.folder(folder.id).path)
    assert run.classes == ["x", "y"] and not run.model.training and run.config == config
    assert run.transform["image_size"] == 32 and run.checkpoint == "best"
    table = store.list_runs()
    assert table.loc[0, ["id", "status", "best_val_acc"]].tolist() == [folder.id, "done", 1.0]


def test_a_run_without_checkpoint_or_with_a_corrupt_one_is_a_run_error(tmp_path):
    store = RunStore(tmp_path / "runs")
    folder = store.create(TrainConfig(data="d"))
    with pytest.raises(RunError, match="no checkpoint yet"):
        load_run(folder.path)
    folder.last_path.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="cannot read checkpoint"):
        load_checkpoint(folder.last_path)
    with pytest.raises(RunError, match="no run found"):
        store.folder("missing-run")


def test_status_updates_merge_fields(tmp_path):
    folder = RunFolder(tmp_path / "r")
    folder.update_status(status="running", started="t0")
    folder.update_status(status="done", seconds=3.0)
    assert folder.read_status() == {"status": "done", "started": "t0", "seconds": 3.0}
