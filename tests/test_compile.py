"""`--compile`: the trainer runs its module through torch.compile and trains to the same place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ftui.config import TrainConfig
from ftui.models.backbones import LayerGroup
from ftui.train.batches import TensorData
from ftui.train.trainer import Trainer


def _trainer(compile: bool) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    groups = [LayerGroup("body", [model[0]], 40), LayerGroup("head", [model[2]], 18)]
    x = torch.randn(18, 4)
    y = (x[:, 0] > 0).long()
    config = TrainConfig(data="synthetic", backbone="synthetic", device="cpu", epochs=2, recipe="plain",
                         train_groups="all", batch_size=4, lr=1e-2, compile=compile)
    return Trainer(config, model, groups, TensorData((x[:12], y[:12]), (x[12:], y[12:]), ["neg", "pos"]))


@pytest.mark.slow
def test_compile_option_compiles_the_trained_module_and_matches_eager():
    compiled, eager = _trainer(True), _trainer(False)
    assert compiled.fit().status == "done", compiled.result.message
    assert eager.fit().status == "done"
    assert isinstance(compiled.forward, torch._dynamo.eval_frame.OptimizedModule)
    assert any("torch.compile" in note for note in compiled.notes)
    for a, b in zip(compiled.model.parameters(), eager.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_compile_is_a_cli_flag_and_a_config_field():
    from ftui.cli import build_parser, train_config_from_args

    args = build_parser().parse_args(["train", "data", "--compile"])
    args.argv = []
    assert train_config_from_args(args).compile is True
    args = build_parser().parse_args(["train", "data"])
    assert train_config_from_args(args).compile is False
    assert TrainConfig.from_dict(TrainConfig(data="d", compile=True).to_dict()).compile is True
