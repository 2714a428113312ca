"""The doctor's fast embedding path gives the same features as the plain model; --timings is its benchmark."""

from __future__ import annotations

import argparse

import numpy as np
import torch
from conftest import CLASS_COLOURS, write_class_image
from PIL import Image

from ftui.doctor import run_cli
from ftui.doctor.cli import add_cli_arguments
from ftui.doctor.labels import BackboneFeatures, embedding_size, out_of_fold_probabilities


def _images(n: int, size: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        a, b = rng.uniform(2, 9, size=2)
        base = np.stack([np.sin(a * xx + i), np.cos(b * yy), np.sin(a * xx * yy * 3)], axis=-1)
        out.append(Image.fromarray(((base + 1) * 127).astype(np.uint8)))
    return out


def test_fused_channels_last_features_match_the_plain_models_pooled_features():
    from ftui.models.backbones import backbone_info, build, head_path

    torch.manual_seed(0)
    model = build("resnet18", 3, weights="none").eval()
    # Random-init BatchNorm statistics are trivial (mean 0, var 1): give them real ones so folding matters.
    with torch.no_grad():
        model(torch.randn(8, 3, 64, 64))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    info = backbone_info("resnet18")
    images = _images(6, 64)
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 for im in images])
    x = (x - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        trunk = torch.nn.Sequential(*list(model.children())[:-1])  # resnet: everything before fc
        plain = trunk(x).flatten(1).numpy()
    fast = BackboneFeatures(model, head_path("resnet18"), info.mean, info.std, input_size=64)(images)
    assert fast.shape == plain.shape == (6, 512)
    cos = (fast * plain).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(plain, axis=1)
    assert cos.min() > 0.99  # bfloat16 (where the CPU has it) keeps features, not digits


def test_embedding_size_is_smaller_unless_the_backbone_takes_one_size_only():
    assert embedding_size(224, fixed_input_size=False) == 160
    assert embedding_size(224, fixed_input_size=True) == 224  # ViT: its position embeddings fix the size
    assert embedding_size(96, fixed_input_size=False) == 96


def test_label_probe_runs_on_one_thread_and_gives_the_threads_back():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    features = rng.normal(size=(60, 16)) + np.eye(3, 16)[labels] * 4
    threads = torch.get_num_threads()
    probs = out_of_fold_probabilities(features, labels, 3)
    assert torch.get_num_threads() == threads
    assert (probs.argmax(1) == labels).mean() > 0.9


def test_cli_timings_prints_wall_and_cpu_seconds_per_phase(tmp_path, capsys):
    for name, colour in CLASS_COLOURS.items():
        for i in range(4):
            write_class_image(tmp_path / name / f"{name}_{i}.jpg", colour, seed=i)
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert run_cli(parser.parse_args([str(tmp_path), "--no-labels", "--timings"])) == 0
    err = capsys.readouterr().err
    rows = {line.split()[0]: line.split()[1:] for line in err.splitlines() if line.strip()}
    assert rows["phase"] == ["wall", "s", "CPU", "s"]
    assert {"load", "scan", "checks", "total"} <= set(rows) and "features" not in rows  # no model loaded
    assert float(rows["total"][0]) >= float(rows["scan"][0]) >= 0
    assert "12 images" in err and "load average" in err
