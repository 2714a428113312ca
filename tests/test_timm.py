"""timm backbones (`timm:<name>`): pretrained config, layer groups that compose to the model, weights from a
timm-format .safetensors file, a clear message instead of a download, and a real training run."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

pytest.importorskip("timm")

from ftui.config import AugConfig, TrainConfig
from ftui.models.backbones import backbone_info, build, build_with_report, layer_groups, split_model
from ftui.models.weights import WeightsError
from tests.conftest import make_class_folder
from tests.run_fixtures import run_job


@pytest.fixture
def no_timm_download(monkeypatch):
    """timm's pretrained loader would reach the network: any call to it fails the test."""
    import timm.models._builder as builder

    def refuse(*args, **kwargs):
        raise AssertionError("timm's pretrained loader was called")

    monkeypatch.setattr(builder, "load_pretrained", refuse)
    monkeypatch.setattr(builder, "load_checkpoint", refuse, raising=False)


def test_info_comes_from_timms_pretrained_config():
    vit = backbone_info("timm:vit_tiny_patch16_224")
    assert (vit.input_size, vit.mean, vit.std, vit.fixed_input_size) == (224, (0.5,) * 3, (0.5,) * 3, True)
    assert vit.min_input_size == 224 and vit.resize_size == int(224 / 0.9)
    resnet = backbone_info("timm:resnet18")
    assert resnet.mean == pytest.approx((0.485, 0.456, 0.406)) and not resnet.fixed_input_size
    assert 11_000_000 < resnet.num_params < 12_000_000 and not resnet.weights_cached


def test_unknown_timm_name_says_how_to_list_them():
    from ftui.models.families import BackboneError

    with pytest.raises(BackboneError, match="backbones --timm"):
        backbone_info("timm:resnet_does_not_exist")


def test_imagenet_weights_for_timm_give_a_clear_message_and_no_download(no_timm_download):
    with pytest.raises(WeightsError, match="does not download timm weights.*timm/resnet18"):
        build("timm:resnet18", 3, weights="imagenet")


@pytest.mark.parametrize("name,groups", [
    ("timm:resnet10t", ["stem", "layer1", "layer2", "layer3", "layer4", "head"]),
    pytest.param("timm:mobilenetv3_small_050", ["stem"] + [f"stage{i}" for i in range(1, 7)] + ["head"],
                 marks=pytest.mark.slow),
    pytest.param("timm:efficientnet_b0", ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head"],
                 marks=pytest.mark.slow),
    pytest.param("timm:convnext_atto", ["stem", "stage1", "stage2", "stage3", "stage4", "head"],
                 marks=pytest.mark.slow),
    pytest.param("timm:regnetx_002", ["body", "head"], marks=pytest.mark.slow),
])
def test_layer_groups_cover_every_parameter_once_and_every_split_computes_the_model(name, groups, no_timm_download):
    torch.manual_seed(0)
    model = build(name, 3, weights="none").eval()
    found = layer_groups(model, name)
    assert [g.name for g in found] == groups
    ids = [id(p) for g in found for p in g.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        for first in range(1, len(found)):
            prefix, suffix = split_model(model, name, found, first)
            assert torch.allclose(suffix(prefix(x)), expected, atol=1e-5), found[first].name


def test_a_timm_checkpoint_in_safetensors_loads_into_the_body(tmp_path, no_timm_download):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    published = timm.create_model("resnet10t", pretrained=False)  # a timm/HF checkpoint's keys and shapes
    path = tmp_path / "model.safetensors"
    save_file(published.state_dict(), str(path))
    model, report = build_with_report("timm:resnet10t", 3, weights=str(path))
    assert not report.missing and not report.mismatched and not report.unexpected
    assert report.loaded_keys == len(published.state_dict())
    assert report.message.endswith("new classification head (random init) for this dataset's classes")
    own = model.state_dict()
    for key, value in published.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert own["fc.weight"].shape == (3, 512)


@pytest.mark.slow
def test_a_random_init_timm_model_trains_an_epoch_and_reloads(tmp_path, no_timm_download):
    from ftui.results.loading import load_run
    from ftui.results.predict import Predictor

    data = make_class_folder(tmp_path / "colours", per_class=6)
    config = TrainConfig(data=str(data), backbone="timm:resnet10t", weights="none", image_size=48, epochs=2,
                         freeze_epochs=1, batch_size=6, device="cpu", aug=AugConfig.none(),
                         runs_dir=str(tmp_path / "runs"))
    job = run_job(config, tmp_path / "runs" / "timm")
    snap = job.snapshot()
    assert snap["status"] == "done", snap["error"] or snap["message"]
    metrics = pd.read_csv(tmp_path / "runs" / "timm" / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2] and metrics["train_loss"].notna().all()
    assert any("cached frozen-prefix features" in n for n in snap["notes"])  # the head phase used the split
    run = load_run(tmp_path / "runs" / "timm")
    assert run.config.backbone == "timm:resnet10t" and run.transform["image_size"] == 48
    image = next((data / "red").iterdir())
    probs = Predictor(run).predict([str(image)])
    assert len(probs) == 1
