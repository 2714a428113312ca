"""Sweeps: a real 2-trial Optuna sweep on fixture images; every trial is a run, the best one is marked."""

from __future__ import annotations

import json
import threading

import pytest

from ftui.bench.sweep import (
    PruneOnValLoss,
    Sweep,
    SweepError,
    SweepSettings,
    base_params,
    scaled_aug,
    size_choices,
    trial_config,
    trials_table,
)
from ftui.config import AugConfig, TrainConfig
from tests.conftest import make_class_folder

pytest.importorskip("optuna")


def _base(tmp_path) -> TrainConfig:
    data = make_class_folder(tmp_path / "colours", per_class=6)
    return TrainConfig(data=str(data), backbone="resnet18", weights="none", image_size=32, epochs=1, batch_size=6,
                       device="cpu", runs_dir=str(tmp_path / "runs"), aug=AugConfig.none())


def test_search_space_pieces(tmp_path):
    base = _base(tmp_path)
    assert size_choices(base) == [32, 40]  # 24 is below resnet18's smallest input (32)
    assert not scaled_aug(0.0).enabled and scaled_aug(1.0).crop_scale_min == pytest.approx(0.2)
    params = base_params(base)
    assert params == {"lr": base.lr, "epochs": 1, "train_groups": "all", "image_size": 32, "aug_strength": 0.0}
    config = trial_config(base, {**params, "lr": 0.01, "aug_strength": 0.5}, "sweep-x-t1")
    assert config.lr == 0.01 and config.run_name == "sweep-x-t1" and config.aug.enabled
    config.validate()


def test_bounds_are_checked(tmp_path):
    with pytest.raises(SweepError, match="trials"):
        SweepSettings(base=_base(tmp_path), trials=0).validate()
    with pytest.raises(SweepError, match="budget"):
        SweepSettings(base=_base(tmp_path), budget_minutes=-1).validate()


def test_the_pruning_callback_stops_a_run_the_pruner_prunes():
    import optuna

    from ftui.train.callbacks import TrainingControl

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=-1.0))
    trial = study.ask()
    control = TrainingControl()
    callback = PruneOnValLoss(trial, deadline=float("inf"), stop_event=threading.Event())
    callback.on_epoch_end({"epoch": 1, "epochs": 3, "val_loss": 0.5, "control": control})
    assert not control.should_stop  # -0.5 is above the threshold
    callback.on_epoch_end({"epoch": 2, "epochs": 3, "val_loss": 2.0, "control": control})
    assert control.should_stop and "pruned after epoch 2" in control.stop_reason
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: -0.5, 2: -2.0}


@pytest.mark.slow
def test_a_two_trial_sweep_makes_two_runs_and_marks_the_best(tmp_path):
    base = _base(tmp_path).replace(epochs=2)
    settings = SweepSettings(base=base, trials=2, budget_minutes=10, seed=0)
    sweep = Sweep(settings)
    records = sweep.run()
    assert [r.number for r in records] == [0, 1]
    assert records[0].params == base_params(base)  # trial 0 is the base config
    runs = tmp_path / "runs"
    for record in records:
        assert record.state in ("complete", "pruned"), record
        status = json.loads((runs / record.run_id / "status.json").read_text())
        assert status["sweep"] == settings.sweep_id and status["sweep_trial"] == record.number
        assert (runs / record.run_id / "metrics.csv").is_file()
    best = [r for r in records if r.best]
    assert len(best) == 1 and best[0].state == "complete"
    assert json.loads((runs / best[0].run_id / "status.json").read_text())["sweep_best"] is True
    saved = json.loads(settings.record_path.read_text())
    assert saved["status"] == "done" and [t["best"] for t in saved["trials"]].count(True) == 1
    table = trials_table(saved)
    assert list(table["trial"]) == [0, 1] and table["best"].tolist().count("★") == 1
