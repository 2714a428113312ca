"""The learning-rate finder on real tensors and a real tiny training run."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from ftui.config import AugConfig, TrainConfig
from ftui.data.datasets import load_dataset
from ftui.models.backbones import LayerGroup, build, layer_groups
from ftui.train.batches import TensorData
from ftui.train.lrfind import LrFindError, find_lr, lr_sweep, suggest
from ftui.train.trainer import Trainer, seed_everything


def blobs(n: int = 256, seed: int = 0, separation: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian blobs in 8 dimensions (well separated by default)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 8, generator=g) + separation * (2 * y[:, None].float() - 1)
    return x, y


def linear_trainer(separation: float = 3.0) -> Trainer:
    """A linear classifier on blobs through the real training loop (SGD with momentum, batches of 32)."""
    torch.manual_seed(0)
    model = nn.Linear(8, 2)
    groups = [LayerGroup("head", [model], 18)]
    config = TrainConfig(data="blobs", backbone="linear", optimizer="sgd", lr=1.0, momentum=0.9, batch_size=32,
                         recipe="plain", train_groups="head", device="cpu", scheduler="none")
    train = blobs(separation=separation)
    return Trainer(config, model, groups, TensorData(train, blobs(64, seed=1), ["a", "b"]))


def test_sweep_restores_the_weights_and_suggests_a_rate_where_the_loss_falls():
    trainer = linear_trainer()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    table = lr_sweep(trainer, num_steps=100)
    assert len(table) == 100
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert list(table.columns) == ["lr", "loss", "raw_loss"]
    assert table["lr"].is_monotonic_increasing and table["lr"].iloc[0] == pytest.approx(1e-7)
    valley, steepest = suggest(table)
    # The loss falls somewhere between 1e-4 and 1 on this problem; the valley sits inside that stretch. (The
    # steepest point may sit at the very start: shuffled batches differ in loss before anything is learnt.)
    assert 1e-4 <= valley <= 1.0 and steepest <= 1.0
    loss_at = table.set_index("lr")["loss"]
    assert loss_at[valley] < table["loss"].iloc[0]


def test_sweep_stops_when_the_loss_explodes():
    # Labels the inputs cannot explain: huge rates drive confident wrong answers and the loss up.
    table = lr_sweep(linear_trainer(separation=0.0), start_lr=1e-3, end_lr=1e6, num_steps=100)
    assert len(table) < 100
    assert table["loss"].iloc[-1] > 4 * table["loss"].min()


def test_sweep_that_fails_for_another_reason_says_why():
    trainer = linear_trainer()
    trainer.model = nn.Linear(7, 2)  # the data has 8 features: the forward raises
    trainer.groups = [LayerGroup("head", [trainer.model], 16)]
    with pytest.raises(LrFindError, match="shapes"):
        lr_sweep(trainer, num_steps=10)


def test_find_lr_on_a_real_run_leaves_the_model_as_it_was(class_folder):
    config = TrainConfig(data=str(class_folder), backbone="mobilenet_v3_small", weights="none", image_size=32,
                         batch_size=4, device="cpu", aug=AugConfig.none(), train_groups="last:2")
    dataset = load_dataset(config.data, val_fraction=config.val_fraction, seed=config.seed)
    seed_everything(0)
    model = build(config.backbone, len(dataset.classes), weights="none")
    groups = layer_groups(model, config.backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    messages = []
    result = find_lr(config, dataset, progress=lambda f, m: messages.append(m), model=model, groups=groups,
                     num_steps=30)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == grads
    assert isinstance(result.table, pd.DataFrame) and 3 <= len(result.table) <= 30
    assert 1e-7 <= result.suggestion <= 10
    assert messages[-1].startswith("suggested learning rate")
