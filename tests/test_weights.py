"""Weight sources through real files: hub-cache download (file:// URLs), local checkpoints, random init."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from ftui.data.images import open_rgb
from ftui.models import backbones, weights
from ftui.models.weights import WeightsError

NAME = "mobilenet_v3_small"
HEAD = "classifier.3."


def _stock_state(name: str = NAME, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return backbones.stock_model(name, pretrained=False).state_dict()


def _assert_loaded_except_head(model: torch.nn.Module, state: dict[str, torch.Tensor], head: str = HEAD):
    own = model.state_dict()
    body = [k for k in state if not k.startswith(head)]
    assert body
    for key in body:
        assert torch.equal(own[key], state[key]), key


def test_download_writes_the_file_into_the_cache_with_progress(tmp_path):
    source = tmp_path / "published" / "weights-abc.pth"
    source.parent.mkdir()
    torch.save(_stock_state(), source)
    cache = tmp_path / "cache"
    calls: list[tuple[float, str]] = []

    path = weights.download_imagenet(NAME, progress=lambda f, m: calls.append((f, m)),
                                     url=source.as_uri(), cache_dir=cache)

    assert path == cache / "weights-abc.pth"
    assert path.read_bytes() == source.read_bytes()
    assert [p.name for p in cache.iterdir()] == ["weights-abc.pth"]  # no temporary file left behind
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("weights-abc.pth" in m for _, m in calls)

    # Cached now: a second call does not need the source any more.
    source.unlink()
    assert weights.download_imagenet(NAME, url=source.as_uri(), cache_dir=cache) == path


def test_download_offline_fails_fast_naming_url_file_and_folder(tmp_path):
    url = "http://127.0.0.1:9/resnet18-f37072fd.pth"
    with pytest.raises(WeightsError) as info:
        weights.download_imagenet("resnet18", url=url, cache_dir=tmp_path, timeout=5)
    message = str(info.value)
    assert url in message and "resnet18-f37072fd.pth" in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []


def test_imagenet_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = _stock_state(seed=7)
    path = backbones.weights_path(NAME)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    calls = []

    model, report = backbones.build_with_report(NAME, 3, weights="imagenet",
                                                progress=lambda f, m: calls.append(f))

    assert report.loaded_keys == len(state)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert "new classification head" in report.message
    _assert_loaded_except_head(model, state)
    assert backbones.classifier_head(model, NAME).out_features == 3
    assert calls[-1] == 1.0


def test_imagenet_file_of_another_model_in_the_cache_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = backbones.weights_path(NAME)
    path.parent.mkdir(parents=True)
    state = _stock_state()
    state.pop("features.0.0.weight")
    torch.save(state, path)
    with pytest.raises(WeightsError, match="delete the file"):
        backbones.build(NAME, 3, weights="imagenet")


def test_local_bare_state_dict_with_imagenet_head_loads_everything_but_the_head(tmp_path):
    state = _stock_state(seed=3)
    path = tmp_path / "bare.pth"
    torch.save(state, path)

    model, report = backbones.build_with_report(NAME, 3, weights=str(path))

    _assert_loaded_except_head(model, state)
    assert report.loaded_keys == len(state) and not report.missing and not report.unexpected
    assert report.source == str(path)


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_checkpoint_dicts_with_module_prefixes_load(tmp_path, key):
    state = _stock_state(seed=4)
    wrapped = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "ckpt.pt"
    torch.save({key: wrapped, "epoch": 3, "optimizer": {"lr": 0.1}}, path)

    model, report = backbones.build_with_report(NAME, 3, weights=str(path))

    _assert_loaded_except_head(model, state)
    assert not report.missing and not report.unexpected


def test_a_fine_tuned_head_with_the_same_classes_is_kept(tmp_path):
    torch.manual_seed(5)
    tuned = backbones.build(NAME, 3, weights="none")
    path = tmp_path / "tuned.pt"
    torch.save({"model": tuned.state_dict()}, path)

    model, report = backbones.build_with_report(NAME, 3, weights=str(path))

    for key, value in tuned.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert report.skipped_head_keys == [] and "head loaded from the file" in report.message


def test_a_head_for_other_classes_is_skipped_and_said_so(tmp_path):
    tuned = backbones.build(NAME, 5, weights="none")
    path = tmp_path / "five.pt"
    torch.save(tuned.state_dict(), path)

    model, report = backbones.build_with_report(NAME, 3, weights=str(path))

    assert sorted(report.skipped_head_keys) == [HEAD + "bias", HEAD + "weight"]
    assert "different number of classes" in report.message
    _assert_loaded_except_head(model, tuned.state_dict())


def test_missing_and_unexpected_keys_are_reported_plainly(tmp_path):
    state = _stock_state()
    state.pop("features.1.block.0.0.weight")
    state["extra.layer.weight"] = torch.zeros(2)
    state["features.0.0.weight"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)

    report = weights.load_weights(backbones.stock_model(NAME, True), NAME, str(path))

    assert report.missing == ["features.0.0.weight", "features.1.block.0.0.weight"]
    assert report.unexpected == ["extra.layer.weight"]
    assert report.mismatched == ["features.0.0.weight: file (1, 1, 1, 1) vs model (16, 3, 3, 3)"]
    assert "not in the file" in report.message and "ignored" in report.message


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(backbones.stock_model("resnet18", False).state_dict(), path)
    with pytest.raises(WeightsError, match="different architecture"):
        backbones.build(NAME, 3, weights=str(path))


def test_unreadable_files_get_a_plain_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        backbones.build(NAME, 3, weights=str(tmp_path / "nope.pth"))
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="not a PyTorch weights file"):
        backbones.build(NAME, 3, weights=str(text))
    # A pickle that would run code is refused by weights_only loading.
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(Path("/etc/passwd"), protocol=2))
    with pytest.raises(WeightsError, match="not a PyTorch weights file"):
        backbones.build(NAME, 3, weights=str(evil))
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, empty)
    with pytest.raises(WeightsError, match="no tensors"):
        backbones.build(NAME, 3, weights=str(empty))


def test_old_densenet_key_names_are_renamed(tmp_path):
    state = _stock_state("densenet121")
    legacy = {}
    for key, value in state.items():
        for part in ("norm1", "norm2", "conv1", "conv2", "relu1", "relu2"):
            key = key.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.")
        legacy[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    path = tmp_path / "densenet.pth"
    torch.save(legacy, path)

    report = weights.load_weights(backbones.stock_model("densenet121", True), "densenet121", str(path))

    assert report.loaded_keys == len(state) and not report.missing and not report.unexpected


def test_checkpoints_without_batchnorm_counters_load_completely(tmp_path, monkeypatch):
    # Older published torchvision files (resnet18-f37072fd.pth among them) have no num_batches_tracked.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = {k: v for k, v in _stock_state().items() if not k.endswith("num_batches_tracked")}
    path = backbones.weights_path(NAME)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    model, report = backbones.build_with_report(NAME, 3, weights="imagenet")
    assert report.missing == [] and report.loaded_keys == len(state)
    _assert_loaded_except_head(model, state)


def test_random_init_reports_itself():
    model, report = backbones.build_with_report(NAME, 3, weights="none")
    assert backbones.classifier_head(model, NAME).out_features == 3
    assert report.source == "none" and report.loaded_keys == 0 and "random" in report.message


@pytest.mark.shared
def test_shared_imagenet_mobilenet_v2_recognises_ants_and_bees(shared_weights, shared_data):
    model = backbones.stock_model("mobilenet_v2", pretrained=True)
    report = weights.load_weights(model, "mobilenet_v2", str(shared_weights))
    assert report.loaded_keys == len(model.state_dict())
    assert not report.missing and not report.unexpected and not report.mismatched
    # BatchNorm is folded into the convolutions in that file: only eval mode computes the trained net.
    model.eval()
    preset = backbones.default_weights("mobilenet_v2").transforms()
    for folder, imagenet_class in (("ants", 310), ("bees", 309)):
        files = sorted((shared_data / "val" / folder).iterdir())[:6]
        batch = torch.stack([preset(open_rgb(f)) for f in files])
        with torch.no_grad():
            top5 = model(batch).topk(5).indices.tolist()
        assert all(imagenet_class in row for row in top5), (folder, top5)


@pytest.mark.shared
def test_shared_weights_build_a_three_class_model(shared_weights):
    model, report = backbones.build_with_report("mobilenet_v2", 3, weights=str(shared_weights))
    _assert_loaded_except_head(model, torch.load(shared_weights, weights_only=True), head="classifier.1.")
    assert backbones.classifier_head(model, "mobilenet_v2").out_features == 3
    assert not report.missing and not report.unexpected
