"""Resume (issue 9): a stopped or interrupted run carries on from last.pt, appending to metrics.csv."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import make_class_folder
from run_fixtures import PressStop, run_job

from ftui.cli import main
from ftui.config import TrainConfig
from ftui.runs import RunError, RunStore


def tiny(data, runs, epochs=3) -> TrainConfig:
    return TrainConfig(data=str(data), backbone="mobilenet_v3_small", weights="none", train_groups="all",
                       recipe="plain", bn_mode="train", image_size=32, batch_size=4, epochs=epochs,
                       feature_cache=False, scheduler="cosine", runs_dir=str(runs), seed=3)


@pytest.mark.slow
def test_a_stopped_run_resumes_from_last_pt_and_appends_to_metrics(tmp_path, capsys):
    data = make_class_folder(tmp_path / "data", per_class=6, size=24)
    config = tiny(data, tmp_path / "runs")
    whole = run_job(config, tmp_path / "whole")
    assert whole.status == "done"
    stopped = run_job(config, tmp_path / "part", callbacks=[PressStop(1)])
    assert stopped.status == "stopped"
    checkpoint = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert checkpoint["resume"]["epoch"] == 1
    assert len(pd.read_csv(tmp_path / "part" / "metrics.csv")) == 1

    assert main(["train", "--resume", str(tmp_path / "part")]) == 0, capsys.readouterr().err
    metrics = pd.read_csv(tmp_path / "part" / "metrics.csv")
    reference = pd.read_csv(tmp_path / "whole" / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2, 3]
    # The scheduler and optimizer carried on where they were: the same learning rates as the unbroken run.
    assert metrics["lr"].tolist() == pytest.approx(reference["lr"].tolist())
    status = RunStore(tmp_path / "runs").folder(tmp_path / "part").read_status()
    assert status["status"] == "done" and status["epochs_done"] == 3
    # A finished run cannot be resumed again.
    assert main(["train", "--resume", str(tmp_path / "part")]) == 2
    assert "only an interrupted, stopped or failed run" in capsys.readouterr().err


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path):
    from ftui.train.resume import open_for_resume

    with pytest.raises(RunError, match="not a run folder"):
        open_for_resume(tmp_path)
