"""The Task on the Trainer: multilabel (BCE, mAP) and regression (standardized targets, MAE in user units)
train, resume and reload; tiny synthetic models (ms) and a real image run through the feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ftui.config import TrainConfig
from ftui.models.backbones import LayerGroup
from ftui.stats import average_precision
from ftui.train.batches import TensorData
from ftui.train.callbacks import History
from ftui.train.tasks import IGNORE, make_task, metric_value
from ftui.train.trainer import Trainer


def synthetic(task: str, n: int = 96, seed: int = 0):
    """x: 6 features; multilabel: labels = signs of x[:, :3]; regression: value = 40 + 25 * x[:, 0] - 10 x[:, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    if task == "multilabel":
        y = (x[:, :3] > 0).float()
        names = ["a", "b", "c"]
    else:
        y = (40 + 25 * x[:, 0] - 10 * x[:, 1]).unsqueeze(1)
        names = ["value"]
    return x, y, names


def trainer(task: str, callbacks=(), **changes) -> Trainer:
    torch.manual_seed(0)
    x, y, names = synthetic(task)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, len(names)))
    groups = [LayerGroup("body", [model[0]], 112), LayerGroup("head", [model[2]], 17 * len(names))]
    config = TrainConfig(data="synthetic", backbone="synthetic", device="cpu", epochs=8, freeze_epochs=1,
                         train_groups="all", batch_size=8, lr=2e-2, early_stopping_patience=0).replace(**changes)
    data = TensorData((x[:72], y[:72]), (x[72:], y[72:]), names, task=task)
    return Trainer(config, model, groups, data, callbacks)


def test_multilabel_trains_to_a_high_map_with_bce():
    history = History()
    result = trainer("multilabel", [history], recipe="plain").fit()
    assert result.status == "done", result.message
    rows = history._epochs
    assert result.best_val_acc > 0.9  # val mAP (chance: about 0.5, the labels' positive rate)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]


def test_multilabel_val_score_is_the_map_of_the_val_outputs():
    t = trainer("multilabel", epochs=3)
    t.fit()
    x, y, _ = synthetic("multilabel")
    with torch.no_grad():
        scores = t.model(x[72:]).numpy()
    expected = np.mean([average_precision(scores[:, k], y[72:, k].numpy()) for k in range(3)])
    meter = t.task.meter()
    meter.add(torch.from_numpy(scores), torch.arange(72, 96))
    from ftui.train.distributed import Dist
    assert meter.result(Dist.single())[0] == pytest.approx(expected)


def test_regression_learns_and_scores_mae_in_user_units():
    t = trainer("regression", recipe="plain")
    result = t.fit()
    assert result.status == "done", result.message
    x, y, _ = synthetic("regression")
    mae = -result.best_val_acc
    baseline = float((y[72:] - y[:72].mean()).abs().mean())
    assert metric_value("regression", result.best_val_acc) == mae
    assert 0 < mae < 0.3 * baseline
    # The task's outputs are in the user's units: the model's raw outputs are standardized.
    with torch.no_grad():
        raw = t.model(x[72:])
        values = t.task.outputs(raw)
    assert float((values - y[72:]).abs().mean()) == pytest.approx(mae, rel=0.35)
    assert abs(float(raw.mean())) < 2 and float(values.mean()) > 20
    assert t.data.meta["target_mean"] == pytest.approx([float(y[:72].mean())], rel=1e-5)


@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_regression_losses_are_on_standardized_targets(loss):
    x, y, names = synthetic("regression", n=10)
    meta = {"classes": names, "task": "regression", "target_mean": [40.0], "target_std": [20.0]}
    task = make_task(meta, y, TrainConfig(regression_loss=loss))
    logits = (y - 40.0) / 20.0  # perfect predictions
    rows = torch.arange(10)
    assert float(task.criterion()(logits, rows)) == pytest.approx(0.0, abs=1e-6)
    off = logits + 2.0  # 2 standard deviations off everywhere
    expected = 4.0 if loss == "mse" else 1.5  # huber(2, delta 1) = 2 - 0.5
    assert float(task.criterion()(off, rows)) == pytest.approx(10 * expected, rel=1e-5)
    # Padding rows (distributed shares) add nothing.
    padded = torch.cat([rows, torch.tensor([IGNORE, IGNORE])])
    assert float(task.criterion()(torch.cat([off, torch.zeros(2, 1)]), padded)) == pytest.approx(10 * expected)


def test_pos_weight_is_negatives_over_positives_on_request():
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    meta = {"classes": ["a", "b"], "task": "multilabel", "num_train": 4}
    plain = make_task(meta, y, TrainConfig())
    weighted = make_task(meta, y, TrainConfig(class_weighted_loss=True))
    assert plain.pos_weight is None
    assert weighted.pos_weight.tolist() == pytest.approx([1 / 3, 3.0])
    # At logit 0 every term is log 2; row 3 has both labels: a's positive weighs 1/3, b's weighs 3.
    logits, row = torch.zeros(1, 2), torch.tensor([3])
    assert float(plain.criterion()(logits, row)) == pytest.approx(np.log(2))
    assert float(weighted.criterion()(logits, row)) == pytest.approx(np.log(2) * (1 / 3 + 3) / 2, rel=1e-5)
    # Validation loss stays the plain one (comparable across settings).
    assert float(weighted.val_criterion()(logits, row)) == pytest.approx(np.log(2))


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_resume_skips_finished_epochs_and_carries_optimizer_and_best(task):
    first = trainer(task, epochs=2, recipe="plain")
    first.fit()
    state = first.state_dict()
    assert state["epoch"] == 2 and state["best_val_acc"] is not None
    history = History()
    resumed = trainer(task, [history], epochs=3, recipe="plain")
    resumed.load_state_dict(state)
    result = resumed.fit()
    assert result.status == "done" and result.epochs_done == 3
    assert [row["epoch"] for row in history._epochs] == [3]
    steps = {int(s["step"]) for s in resumed.optimizer.state_dict()["state"].values()}
    assert steps == {27}  # 9 steps an epoch, 18 before the resume
    assert result.best_val_acc >= state["best_val_acc"]
