"""Resume replays nothing: a run stopped after epoch 2 and resumed from its last.pt gives the same metrics, bit
for bit on CPU, as the run never stopped (each epoch's shuffle is drawn from (seed, phase, epoch) alone)."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import torch
from torch import nn

from ftui.config import TrainConfig
from ftui.models.backbones import LayerGroup
from ftui.runs import RunFolder, load_checkpoint
from ftui.train.batches import TensorData
from ftui.train.callbacks import Callback
from ftui.train.resume import trainer_state
from ftui.train.trainer import Trainer, epoch_seed

COMPARED = ["epoch", "phase", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]  # all but wall seconds


class StopAfterEpoch(Callback):
    def __init__(self, epoch: int, stop: threading.Event) -> None:
        self.epoch, self.stop = epoch, stop

    def on_epoch_end(self, info) -> None:
        if info["epoch"] == self.epoch:
            self.stop.set()


def trainer(run_dir, callbacks=(), stop=None, **changes) -> Trainer:
    """A two-group MLP on 40 train / 20 val rows, batches of 8 (5 shuffled steps an epoch), in `run_dir`."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    groups = [LayerGroup("body", [model[0]], 80), LayerGroup("head", [model[2]], 34)]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 4, generator=g)
    y = ((x[:, 0] + 0.5 * torch.randn(60, generator=g)) > 0).long()  # noisy: no epoch reaches a perfect fit
    config = TrainConfig(data="synthetic", backbone="synthetic", device="cpu", epochs=5, batch_size=8, lr=3e-2,
                         early_stopping_patience=0, train_groups="all").replace(**changes)
    data = TensorData((x[:40], y[:40]), (x[40:], y[40:]), ["neg", "pos"])
    return Trainer(config, model, groups, data, callbacks, run_dir=run_dir, stop_event=stop)


def metrics(run_dir) -> pd.DataFrame:
    return pd.read_csv(RunFolder(run_dir).metrics_path)[COMPARED]


@pytest.mark.parametrize("recipe", ["plain", "fine_tune"])
def test_stopped_after_epoch_2_and_resumed_equals_the_unbroken_run(tmp_path, recipe):
    assert trainer(tmp_path / "whole", recipe=recipe).fit().status == "done"
    stop = threading.Event()
    first = trainer(tmp_path / "broken", [StopAfterEpoch(2, stop)], stop, recipe=recipe).fit()
    assert first.status == "stopped" and first.epochs_done == 2
    resumed = trainer(tmp_path / "broken", recipe=recipe)
    resumed.load_state_dict(trainer_state(load_checkpoint(RunFolder(tmp_path / "broken").last_path)))
    assert resumed.fit().status == "done"
    whole, broken = metrics(tmp_path / "whole"), metrics(tmp_path / "broken")
    assert list(broken["epoch"]) == [1, 2, 3, 4, 5]
    pd.testing.assert_frame_equal(broken, whole, check_exact=True)
    a = load_checkpoint(RunFolder(tmp_path / "whole").last_path)["state_dict"]
    b = load_checkpoint(RunFolder(tmp_path / "broken").last_path)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_each_epoch_has_its_own_order_and_the_same_one_every_time():
    orders = {e: torch.randperm(40, generator=torch.Generator().manual_seed(epoch_seed(0, 1, e))) for e in (1, 2, 3)}
    assert not torch.equal(orders[1], orders[2]) and not torch.equal(orders[2], orders[3])
    again = torch.randperm(40, generator=torch.Generator().manual_seed(epoch_seed(0, 1, 2)))
    assert torch.equal(orders[2], again)
    assert epoch_seed(0, 0, 2) != epoch_seed(0, 1, 2) != epoch_seed(1, 1, 2)
