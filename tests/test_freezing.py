"""Freezing by layer group on a real ResNet-18: presets, requires_grad, and BatchNorm that never moves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ftui.config import ConfigError
from ftui.models import backbones
from ftui.models.freezing import (
    apply_freeze,
    count_parameters,
    groups_table,
    resolve_train_groups,
    set_train_mode,
)

NAMES = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]


@pytest.fixture
def resnet():
    torch.manual_seed(0)
    model = backbones.build("resnet18", 3, weights="none")
    return model, backbones.layer_groups(model, "resnet18")


def test_presets_resolve_to_group_names():
    assert resolve_train_groups("head", NAMES) == ["head"]
    assert resolve_train_groups("all", NAMES) == NAMES
    assert resolve_train_groups("last:2", NAMES) == ["layer4", "head"]
    assert resolve_train_groups(" layer4 , layer2,head ", NAMES) == ["layer2", "layer4", "head"]


@pytest.mark.parametrize("spec, message", [
    ("layer9,head", "unknown layer group.*layer9.*stem, layer1"),
    ("last:0", "N must be between 1 and 6"),
    ("last:7", "N must be between 1 and 6"),
    ("last:two", "must be an integer"),
    (" , ", "unknown layer group"),
])
def test_bad_group_specs_explain_the_valid_choices(spec, message):
    with pytest.raises(ConfigError, match=message):
        resolve_train_groups(spec, NAMES)


def test_feature_extraction_trains_only_the_head(resnet):
    model, groups = resnet
    apply_freeze(model, groups, ["head"])
    trainable, total = count_parameters(model)
    head = backbones.classifier_head(model, "resnet18")
    assert trainable == head.weight.numel() + head.bias.numel() == groups[-1].num_params
    assert total == sum(p.numel() for p in model.parameters())
    apply_freeze(model, groups, resolve_train_groups("all", [g.name for g in groups]))
    assert count_parameters(model) == (total, total)


def test_groups_table_lists_params_and_trainable(resnet):
    _, groups = resnet
    table = groups_table(groups, ["layer4", "head"])
    assert list(table.columns) == ["group", "params", "trainable"]
    assert list(table.group) == NAMES
    assert list(table.trainable) == [False, False, False, False, True, True]
    assert table.params.sum() == sum(g.num_params for g in groups)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_steps(model, groups, trainable, bn_mode, steps=3):
    apply_freeze(model, groups, trainable)
    # AdamW over every parameter with weight decay: frozen ones must still not move.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        set_train_mode(model, groups, trainable, bn_mode=bn_mode)
        x = torch.randn(4, 3, 32, 32, generator=generator) * 2 + 0.5
        y = torch.randint(0, 3, (4,), generator=generator)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _changed(before, after, prefix, suffix=""):
    keys = [k for k in before if k.startswith(prefix) and k.endswith(suffix)]
    assert keys
    return [k for k in keys if not torch.equal(before[k], after[k])]


def test_frozen_groups_stay_bit_identical_and_their_batchnorm_keeps_its_statistics(resnet):
    model, groups = resnet
    before = _snapshot(model)
    _train_steps(model, groups, ["layer4", "head"], bn_mode="train")
    after = _snapshot(model)

    for prefix in ("conv1", "bn1", "layer1", "layer2", "layer3"):
        assert _changed(before, after, prefix) == [], prefix  # weights AND running stats
    assert _changed(before, after, "layer4", "conv1.weight")
    assert _changed(before, after, "fc")
    # bn_mode="train": BatchNorm inside the trainable layer4 updates its statistics as usual.
    assert _changed(before, after, "layer4", "running_mean")
    assert not model.layer3[0].bn1.training and model.layer4[0].bn1.training and model.training


def test_bn_mode_frozen_keeps_every_batchnorm_statistic(resnet):
    model, groups = resnet
    before = _snapshot(model)
    _train_steps(model, groups, ["layer4", "head"], bn_mode="frozen")
    after = _snapshot(model)

    for suffix in ("running_mean", "running_var", "num_batches_tracked"):
        assert _changed(before, after, "", suffix) == []
    assert _changed(before, after, "layer4", "bn1.weight")  # BN's affine weights still learn
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_unknown_bn_mode_is_a_config_error(resnet):
    model, groups = resnet
    with pytest.raises(ConfigError, match="bn_mode must be one of"):
        set_train_mode(model, groups, ["head"], bn_mode="sometimes")
