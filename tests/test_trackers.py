"""Run trackers: a real training job with --log tensorboard,mlflow, its event files read back with
TensorBoard's EventAccumulator and its MLflow run read back with MlflowClient from the local SQLite store."""

from __future__ import annotations

import numpy as np
import pytest

from ftui.config import AugConfig, TrainConfig
from ftui.train.trackers import TrackerError, confusion_image, make_trackers, parse_trackers
from tests.conftest import make_class_folder
from tests.run_fixtures import run_job


def test_tracker_names_are_checked():
    assert parse_trackers("tensorboard, mlflow,tensorboard") == ["tensorboard", "mlflow"]
    assert parse_trackers("") == [] and parse_trackers(None) == []
    with pytest.raises(TrackerError, match="wandb"):
        parse_trackers("wandb")


def test_confusion_image_shades_the_diagonal_darker():
    image = confusion_image(["cat", "dog"], [[9, 1], [0, 10]], cell=40)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    label_w = image.shape[1] - 2 * 40
    diag = image[20 + 2, label_w + 2]  # corner of cell (0, 0): 90% of the row
    off = image[20 + 2, label_w + 40 + 2]  # cell (0, 1): 10%
    assert diag[0] < off[0]


def test_cli_refuses_an_unknown_tracker(tmp_path, capsys):
    from ftui.cli import main

    data = make_class_folder(tmp_path / "d", per_class=4)
    code = main(["train", str(data), "--log", "wandb", "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"])
    assert code == 2 and "unknown tracker wandb" in capsys.readouterr().err


@pytest.mark.slow
def test_tensorboard_and_mlflow_record_a_real_run(tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ftui.train.trackers import default_tracking_uri

    data = make_class_folder(tmp_path / "colours", per_class=6)
    runs = tmp_path / "runs"
    config = TrainConfig(data=str(data), backbone="resnet18", weights="none", image_size=32, epochs=2,
                         batch_size=6, device="cpu", aug=AugConfig.none(), recipe="plain",
                         runs_dir=str(runs), early_stopping_patience=0)
    job = run_job(config, runs / "tracked", callbacks=make_trackers(["tensorboard", "mlflow"], runs))
    snap = job.snapshot()
    assert snap["status"] == "done", snap["error"] or snap["message"]
    assert not any("switched off" in n for n in snap["notes"]), snap["notes"]

    events = EventAccumulator(str(runs / "tracked" / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert [e.step for e in events.Scalars("epoch/val_acc")] == [1, 2]
    assert len(events.Scalars("step/lr")) == len(events.Scalars("step/loss")) >= 2
    assert {"epoch/train_loss", "epoch/lr", "val/accuracy_best"} <= set(tags["scalars"])
    (image,) = events.Images("val/confusion_matrix")
    assert image.width > 3 * 40 and image.height > 3 * 40
    assert "config/text_summary" in tags["tensors"]

    client = MlflowClient(tracking_uri=default_tracking_uri(runs))
    assert (runs / "mlflow.db").is_file()
    experiment = client.get_experiment_by_name("ftui")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["lr"] == str(config.lr) and run.data.params["backbone"] == "resnet18"
    assert run.data.params["classes"] == "blue,green,red"
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2]
    assert "val_acc_best_weights" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/best.pt", "model/config.json", "model/classes.json"} <= artifacts
    # The artifacts live under the runs folder, not wherever the process was started.
    assert list((runs / "mlartifacts").rglob("best.pt"))
