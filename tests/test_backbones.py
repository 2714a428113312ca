"""Backbone registry, building with a new head, layer groups and the frozen-prefix split, on real models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ftui.models import backbones
from ftui.models.backbones import BackboneError

ALL = backbones.list_backbones(all=True)


def _smallest_per_family() -> list[str]:
    best: dict[str, tuple[int, str]] = {}
    for name in ALL:
        info = backbones.backbone_info(name)
        best[info.family] = min(best.get(info.family, (info.num_params, name)), (info.num_params, name))
    return sorted(name for _, name in best.values())


SMALLEST = _smallest_per_family()
# Families whose smallest member takes over 5 s here to build and step (measured on 2 busy cores): the quick
# subset (-m "not slow") builds the others, the full suite every family.
SLOW_TO_BUILD = {"convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet",
                 "inception_v3", "maxvit_t", "resnext50_32x4d", "swin_t", "vit_b_16", "wide_resnet50_2"}


def _marked(names: list[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TO_BUILD else n for n in names]

# One small member per family (vgg11 shares alexnet's code path and is slow to build).
SPLIT_MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "mnasnet0_5",
                "shufflenet_v2_x0_5", "regnet_x_400mf", "densenet121", "squeezenet1_1", "convnext_tiny",
                "swin_t", "alexnet", "vit_b_16", "googlenet", "inception_v3", "maxvit_t"]


def test_registry_covers_every_torchvision_classification_family():
    families = {backbones.family_of(name) for name in ALL}
    assert families == set(backbones.FAMILIES)
    assert len(ALL) >= 80
    assert set(backbones.SHORTLIST) <= set(ALL)
    assert backbones.list_backbones() == backbones.SHORTLIST


def test_shortlist_runs_small_to_large():
    sizes = [backbones.backbone_info(n).num_params for n in backbones.SHORTLIST]
    assert sizes == sorted(sizes), list(zip(backbones.SHORTLIST, sizes))


def test_backbone_info_reads_torchvision_weight_metadata():
    info = backbones.backbone_info("resnet18")
    assert info.family == "resnet"
    assert info.num_params == 11_689_512
    assert (info.input_size, info.resize_size) == (224, 256)
    assert info.mean == pytest.approx((0.485, 0.456, 0.406))
    assert info.std == pytest.approx((0.229, 0.224, 0.225))
    assert info.imagenet_acc1 == pytest.approx(69.758)
    assert info.weights_file == "resnet18-f37072fd.pth"
    assert info.min_input_size <= info.input_size and not info.fixed_input_size


def test_backbone_info_is_sane_for_every_model():
    for name in ALL:
        info = backbones.backbone_info(name)
        assert info.num_params > 1_000_000, name
        assert 32 <= info.min_input_size <= info.input_size <= info.resize_size, name
        assert info.imagenet_acc1 is not None and 50 < info.imagenet_acc1 < 95, name
        assert info.weights_file and info.weights_file.endswith(".pth"), name


def test_vit_input_size_is_fixed_at_the_weights_size():
    info = backbones.backbone_info("vit_h_14")
    assert info.fixed_input_size and info.input_size == info.min_input_size == 518


def test_weights_cached_reflects_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert not backbones.backbone_info("resnet18").weights_cached
    path = backbones.weights_path("resnet18")
    assert path.parent == tmp_path / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"placeholder")
    assert backbones.backbone_info("resnet18").weights_cached


def test_backbones_table_lists_the_shortlist_or_everything():
    table = backbones.backbones_table()
    assert list(table.columns) == ["backbone", "family", "params_m", "input_size", "imagenet_acc1",
                                   "weights_cached"]
    assert list(table.backbone) == backbones.SHORTLIST
    assert len(backbones.backbones_table(all=True)) == len(ALL)


def test_unknown_backbone_names_the_choices():
    with pytest.raises(BackboneError, match="unknown backbone 'resnet19'.*resnet18"):
        backbones.backbone_info("resnet19")
    with pytest.raises(BackboneError, match="unknown backbone"):
        backbones.build("not_a_model", 3, weights="none")


def test_zero_classes_is_refused():
    with pytest.raises(BackboneError, match="num_classes must be >= 1"):
        backbones.build("mobilenet_v3_small", 0, weights="none")


@pytest.mark.parametrize("name", _marked(SMALLEST))
def test_every_family_builds_with_a_new_head_and_trains(name):
    torch.manual_seed(0)
    model = backbones.build(name, 3, weights="none")
    head = backbones.classifier_head(model, name)
    assert (head.out_features if isinstance(head, nn.Linear) else head.out_channels) == 3

    groups = backbones.layer_groups(model, name)
    assert groups[-1].name == "head" and len(groups) >= 4
    assert any(head is m or head in list(m.modules()) for m in groups[-1].modules)
    assert len({g.name for g in groups}) == len(groups)
    # Every parameter belongs to exactly one group.
    grouped = [id(p) for g in groups for p in g.parameters()]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert sum(g.num_params for g in groups) == sum(p.numel() for p in model.parameters())

    size = max(backbones.backbone_info(name).min_input_size, 32)
    model.train()
    out = model(torch.randn(2, 3, size, size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)  # aux heads are gone
    out.sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    first = groups[0].parameters()[0]
    assert first.grad is not None


@pytest.mark.parametrize("name", _marked(SPLIT_MODELS))
def test_split_model_prefix_then_suffix_equals_the_model(name):
    torch.manual_seed(0)
    model = backbones.build(name, 3, weights="none").eval()
    groups = backbones.layer_groups(model, name)
    info = backbones.backbone_info(name)
    x = torch.randn(1, 3, max(info.min_input_size, 64), max(info.min_input_size, 64))
    # Fixed 224-px models are slow on CPU: check the first split and the head-only one.
    splits = [1, len(groups) - 1] if info.fixed_input_size else range(1, len(groups))
    with torch.no_grad():
        expected = model(x)
        for first in splits:
            prefix, suffix = backbones.split_model(model, name, groups, first)
            # The suffix holds exactly the parameters of the groups from `first` on.
            suffix_params = {id(p) for p in suffix.parameters()}
            assert suffix_params == {id(p) for g in groups[first:] for p in g.parameters()}
            torch.testing.assert_close(suffix(prefix(x)), expected, rtol=1e-4, atol=1e-5)


def test_head_only_split_gives_pooled_features():
    model = backbones.build("resnet18", 3, weights="none").eval()
    groups = backbones.layer_groups(model, "resnet18")
    prefix, suffix = backbones.split_model(model, "resnet18", groups, len(groups) - 1)
    with torch.no_grad():
        features = prefix(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 512)
    assert list(suffix) == [backbones.classifier_head(model, "resnet18")]


def test_vit_head_only_split_gives_class_token_features():
    model = backbones.build("vit_b_16", 3, weights="none").eval()
    groups = backbones.layer_groups(model, "vit_b_16")
    prefix, suffix = backbones.split_model(model, "vit_b_16", groups, len(groups) - 1)
    with torch.no_grad():
        assert prefix(torch.randn(1, 3, 224, 224)).shape == (1, 768)
    assert list(suffix) == [model.heads]


def test_layer_groups_read_like_the_architecture():
    def names(n):
        return [g.name for g in backbones.layer_groups(backbones.stock_model(n, False), n)]

    assert names("resnet18") == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert names("vit_b_16") == ["patch_embed", "blocks1-3", "blocks4-6", "blocks7-9", "blocks10-12", "head"]
    assert names("vgg11") == ["block1", "block2", "block3", "block4", "block5", "fc", "head"]
    assert names("mobilenet_v2")[0] == "stem" and names("mobilenet_v2")[-1] == "head"


def test_vit_patch_embedding_group_owns_the_class_token():
    model = backbones.stock_model("vit_b_16", pretrained=False)
    patch = backbones.layer_groups(model, "vit_b_16")[0]
    ids = {id(p) for p in patch.parameters()}
    assert id(model.class_token) in ids and id(model.encoder.pos_embedding) in ids


def test_random_init_batchnorm_tracks_statistics_at_momentum_0_1():
    # torchvision's MobileNetV3 uses momentum 0.01; from scratch that leaves eval-mode statistics stale.
    assert {m.momentum for m in backbones.stock_model("mobilenet_v3_small", pretrained=False).modules()
            if isinstance(m, nn.BatchNorm2d)} == {0.01}
    model = backbones.build("mobilenet_v3_small", 4, weights="none")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and {m.momentum for m in norms} == {0.1}
    first = norms[0]
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32) * 3 + 2)
    # One batch moves the running mean a tenth of the way, not a hundredth.
    assert first.running_mean.abs().max() > 0.05
