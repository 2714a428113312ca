"""CUDA-only checks (skipped without a GPU): the parts that no CPU run can exercise.

`scripts/gpu_check.sh` runs this file on a CUDA machine together with the GPU bench. Everything here goes
through public entry points (CLI, Predictor, find_lr, bench) on tiny generated data, so it runs in seconds.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from conftest import make_class_folder
from torch import nn

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CUDA = torch.device("cuda")


def _cli(capsys, *argv) -> tuple[int, str, str]:
    from ftui.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_tutorial_reference_runs_a_cuda_model_on_cpu_loaded_batches(split_folder):
    from torchvision.models import mobilenet_v3_small

    from ftui.bench.reference import compute_limit, run_tutorial
    from ftui.models.backbones import classifier_head

    model = mobilenet_v3_small(num_classes=3).cuda()
    result = run_tutorial(model, classifier_head(model, "mobilenet_v3_small"), split_folder, epochs=1,
                          head_only=False, num_workers=0)
    assert len(result.val_acc) == 1 and 0 <= result.val_acc[0] <= 1
    assert next(model.parameters()).is_cuda
    limit = compute_limit(model, batch_size=4, image_size=64, steps=2)
    assert limit["train_images_per_s"] > 0 and limit["infer_images_per_s"] > 0


def test_tutorial_reference_moves_a_cpu_model_to_the_device_it_is_given(split_folder):
    from ftui.bench.reference import run_tutorial

    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
    result = run_tutorial(model, model[2], split_folder, epochs=1, head_only=True, num_workers=0, device="cuda")
    assert len(result.val_acc) == 1
    assert next(model.parameters()).is_cuda


def test_cuda_settings_bf16_without_scaler_where_the_card_has_it_and_a_batch_from_memory():
    from torchvision.models import resnet18

    from ftui import devices

    if devices.cuda_has_bf16(CUDA):
        assert devices.amp_dtype(CUDA) == torch.bfloat16 and not devices.needs_grad_scaler(CUDA, True)
    else:
        assert devices.amp_dtype(CUDA) == torch.float16 and devices.needs_grad_scaler(CUDA, True)
    assert devices.micro_batch_size(CUDA, 256) == 256
    model = resnet18(num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    batch = devices.default_batch_size(model, 224, CUDA)
    assert devices.MIN_DEFAULT_BATCH <= batch <= devices.MAX_DEFAULT_BATCH and batch & (batch - 1) == 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k].cpu()) for k in before)  # BN statistics untouched
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert devices.device_name(CUDA) == torch.cuda.get_device_name(CUDA)


def test_configure_device_leaves_cudnn_autotuning_off_unless_asked_for(monkeypatch):
    from ftui import devices

    before = torch.backends.cudnn.benchmark
    try:
        monkeypatch.delenv("FTUI_CUDNN_BENCHMARK", raising=False)
        devices.configure_device(CUDA)
        assert torch.backends.cudnn.benchmark is False and torch.backends.cuda.matmul.allow_tf32
        monkeypatch.setenv("FTUI_CUDNN_BENCHMARK", "1")
        devices.configure_device(CUDA)
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before


def test_gpu_data_path_on_the_device_and_from_pinned_memory_gives_the_cpu_batches(tmp_path):
    from ftui.config import AugConfig
    from ftui.data import gpudata
    from ftui.data.batchaug import BatchAugment
    from ftui.data.imagecache import DecodedImageCache

    root = make_class_folder(tmp_path / "data", per_class=6, size=48)
    files = sorted(root.rglob("*.jpg"))
    samples = [(str(f), i % 3) for i, f in enumerate(files)]
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))
    out = {}
    for where, device in (("host", torch.device("cpu")), ("device", CUDA), ("pinned", CUDA)):
        store = gpudata.DeviceImageStore(DecodedImageCache(36, lazy=True), device, where)
        batches = gpudata.DeviceBatches(store, samples, BatchAugment(AugConfig(), 32, resize_size=36), 4, seed=1)
        got = list(batches(order, augmented=False))
        assert all(x.device.type == device.type for x, _ in got)
        out[where] = torch.cat([x.cpu() for x, _ in got])
        aug = torch.cat([x.cpu() for x, _ in batches(order, augmented=True)])
        assert aug.shape == out[where].shape and torch.isfinite(aug).all()
        if where != "host":
            kept = next(iter(store._kept.values()))
            assert kept.is_cuda if where == "device" else kept.is_pinned()
        store.close()
    assert torch.allclose(out["device"], out["host"], atol=1e-3)
    assert torch.allclose(out["pinned"], out["host"], atol=1e-3)


def test_train_predict_evaluate_and_lr_finder_on_cuda(tmp_path, capsys):
    data = make_class_folder(tmp_path / "colours", per_class=10)
    run = tmp_path / "run"
    code, out, err = _cli(capsys, "train", data, "--backbone", "resnet18", "--weights", "none", "--train-groups",
                          "all", "--epochs", "2", "--batch-size", "8", "--lr", "0.003", "--out", run,
                          "--image-size", "64", "--device", "cuda")
    assert code == 0, err
    assert "device cuda" in out and "run folder" in out
    config = json.loads((run / "config.json").read_text())
    assert config["device"] == "cuda"
    images = sorted(str(p) for p in data.rglob("*.jpg"))[:4]
    code, out, err = _cli(capsys, "predict", run, *images, "--device", "cuda")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["path"] for r in rows] == images
    code, out, err = _cli(capsys, "evaluate", run, "--device", "cuda")
    assert code == 0, err and out.startswith("accuracy ")

    from ftui.results.predict import Predictor

    cpu_probs = Predictor(run, device="cpu").probabilities(images)
    gpu = Predictor(run, device="cuda")
    gpu_probs = gpu.probabilities(images)
    assert torch.allclose(cpu_probs, gpu_probs, atol=0.05)  # bf16/fp16 autocast on the card
    # One image: a CUDA graph replayed, the same numbers as the eager forward at that shape, captured once.
    one = gpu._tensor(images[0])[None]
    with torch.inference_mode():
        eager = gpu._forward(one).float().cpu()
    first, again = gpu.logits([images[0]]), gpu.logits([images[0]])
    assert gpu._one.graph is not None and not gpu._one.failed
    assert torch.allclose(first, eager, atol=1e-3) and torch.equal(first, again)
    other = gpu.logits([images[1]])
    assert not torch.equal(other, first) and torch.allclose(other, gpu.logits(images[:2])[1:], atol=0.05)

    from ftui.config import AugConfig, TrainConfig
    from ftui.train.lrfind import find_lr

    cfg = TrainConfig(data=str(data), backbone="resnet18", weights="none", image_size=64, batch_size=8,
                      device="cuda", aug=AugConfig.none(), train_groups="all", recipe="plain")
    result = find_lr(cfg, num_steps=20)
    assert result.suggestion > 0


def test_bench_on_cuda_names_the_card(split_folder, capsys):
    code, out, err = _cli(capsys, "bench", split_folder, "--backbone", "mobilenet_v3_small", "--weights", "none",
                          "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--tutorial-workers", "0",
                          "--device", "cuda", "--json")
    assert code == 0, err
    results = json.loads(out)
    assert results["device"] == "cuda" and results["device_name"] == torch.cuda.get_device_name(0)
    assert results["engine_train_images_per_s"] > 0 and results["tutorial_epoch_seconds"] > 0


def test_feature_cache_lives_on_the_gpu_on_cuda():
    from ftui.train.featurecache import FeatureStore

    store = FeatureStore(10, (4, 2, 2), max_bytes=2**20, device=CUDA)
    assert store.device.type == "cuda"
    rows = torch.tensor([1, 3])
    store.put(rows, torch.ones(2, 4, 2, 2, device=CUDA))
    assert torch.equal(store.get(rows, CUDA), torch.ones(2, 4, 2, 2, device=CUDA))
    assert FeatureStore(10, (4, 2, 2), max_bytes=2**20).device.type == "cpu"


def test_train_without_batch_size_picks_it_from_free_gpu_memory(tmp_path, capsys):
    data = make_class_folder(tmp_path / "colours", per_class=6)
    code, out, err = _cli(capsys, "train", data, "--backbone", "resnet18", "--weights", "none", "--epochs", "1",
                          "--image-size", "64", "--out", tmp_path / "run", "--device", "cuda")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("batch "))
    assert "picked from free memory on" in line and torch.cuda.get_device_name(0) in line
    batch = json.loads((tmp_path / "run" / "config.json").read_text())["batch_size"]
    assert batch >= 16 and f"batch {batch}:" in line
