"""bench-recipes and its parts: the L-BFGS head fit, the shifted-variant maker, the table."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from ftui.bench.recipes import combine_seeds, format_table
from ftui.cli import main
from ftui.data.variants import VariantError, make_variant
from ftui.stats import wilson_interval
from ftui.train.headfit import fit_head, fit_logistic, holdout_split
from tests.conftest import make_class_folder


def _blobs(n_per_class: int, classes: int, dim: int = 20, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen) * 3
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[y] + torch.randn(len(y), dim, generator=gen), y


def test_logistic_head_converges_to_the_separating_solution():
    x, y = _blobs(30, 3)
    w, b = fit_logistic(x, y, 3, weight_decay=1e-3)
    assert ((x @ w.T + b).argmax(1) == y).float().mean() == 1.0
    # Converged: the regularised loss's gradient is ~0 at the solution.
    w.requires_grad_(True)
    b.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + 0.5 * 1e-3 * (w * w).sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-3


def test_weight_decay_is_chosen_on_a_fold_of_train_only():
    x, y = _blobs(20, 2, dim=200, seed=1)  # few images, many features: regularisation matters
    fit_idx, held_idx = holdout_split(y, seed=0)
    assert set(fit_idx.tolist()).isdisjoint(held_idx.tolist())
    assert len(fit_idx) + len(held_idx) == len(y) and (y[held_idx] == 0).sum() == 4
    result = fit_head(x, y, 2)
    assert result.weight_decay in result.holdout_loss
    assert result.holdout_loss[result.weight_decay] == min(result.holdout_loss.values())
    # A class with one image stays in the fitting part: nothing to hold out.
    fit_idx, held_idx = holdout_split(torch.tensor([0, 0, 0, 0, 0, 1]))
    assert 5 in fit_idx.tolist() and 5 not in held_idx.tolist()


def test_make_variant_keeps_the_layout_and_shrinks_and_greys(tmp_path):
    src = make_class_folder(tmp_path / "src" / "train", per_class=2, size=40).parent
    (src / "train" / "red" / ".DS_Store").write_bytes(b"junk")
    n = make_variant(src, tmp_path / "out", size=16, grayscale=True, rotate=90)
    assert n == 6
    out = sorted((tmp_path / "out").rglob("*.png"))
    assert out[0].relative_to(tmp_path / "out").parts[:2] == ("train", "blue")
    with Image.open(out[0]) as image:
        assert image.mode == "L" and min(image.size) == 16
    with pytest.raises(VariantError):
        make_variant(src, src / "inside")


def test_table_shows_each_method_with_its_interval():
    row = {"dataset": "d", "classes": 2, "train": 10, "val": 20, "image_size": 64,
           "default": {"val_acc": 0.9, "ci95": [0.7, 0.97], "seconds": 12.0, "epoch_seconds": 2.0},
           "probe": {"val_acc": 0.85, "ci95": [0.64, 0.95], "seconds": 3.0},
           "reference": {"val_acc": 0.8, "ci95": [0.58, 0.92], "seconds": 20.0, "epoch_seconds": 4.0}}
    text = format_table([row], "title")
    assert "| d | 2 | 10/20 | 64 | 0.900 [0.70, 0.97] | 0.850 [0.64, 0.95] | 0.800 [0.58, 0.92] |" in text
    assert "12 s, 2 s/ep" in text
    assert "| +5.0 |" in text  # default minus the best of probe and reference, in points


def test_several_seeds_make_one_row_of_means_on_the_same_val_images():
    def run(seed, default, reference):
        return {"dataset": "d", "seed": seed, "classes": 2, "train": 10, "val": 20, "image_size": 64,
                "default": {"val_acc": default, "seconds": 10.0, "epoch_seconds": 2.0},
                "reference": {"val_acc": reference, "seconds": 20.0, "epoch_seconds": 4.0}}

    row = combine_seeds([run(0, 0.80, 0.90), run(1, 0.90, 0.80), run(2, 0.85, 0.80)])
    assert row["seeds"] == [0, 1, 2] and len(row["runs"]) == 3
    assert row["default"]["seed_accs"] == [0.80, 0.90, 0.85]
    assert row["default"]["val_acc"] == pytest.approx(0.85) and row["default"]["correct"] == 17
    assert row["default"]["ci95"] == [round(v, 4) for v in wilson_interval(17, 20)]
    assert row["reference"]["val_acc"] == pytest.approx(5 / 6)
    text = format_table([row], "title")
    assert "0.850 [" in text and "(0.800-0.900)" in text and "| +1.7 |" in text
    assert combine_seeds([run(0, 0.8, 0.9)]) == run(0, 0.8, 0.9)  # one seed: the run itself


@pytest.mark.slow
def test_bench_recipes_runs_every_method_on_the_same_split(tmp_path, capsys):
    data = make_class_folder(tmp_path / "colours", per_class=10, size=32)
    code = main(["bench-recipes", str(data), "--backbone", "resnet18", "--weights", "none", "--epochs", "2",
                 "--image-size", "32", "--batch-size", "8", "--seeds", "0,1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    row = out["rows"][0]
    assert row["seeds"] == [0, 1] and [r["seed"] for r in row["runs"]] == [0, 1]
    assert row["default"]["val_acc"] == pytest.approx(sum(row["default"]["seed_accs"]) / 2)
    assert (row["classes"], row["train"], row["val"]) == (3, 24, 6)
    for method in ("default", "probe", "reference", "head_only"):
        r = row[method]
        assert 0.0 <= r["val_acc"] <= 1.0 and r["correct"] == round(r["val_acc"] * 6)
        assert r["ci95"][0] <= r["val_acc"] <= r["ci95"][1]
    row = row["runs"][0]  # one seed's run: its per-epoch details
    assert len(row["reference"]["epochs"]) == 2 and len(row["default"]["epochs"]) == 2
    # Per-epoch seconds of every trained method, in the same run (the default's head epoch, then its body's).
    assert len(row["default"]["epoch_times"]) == len(row["reference"]["epoch_times"]) == 2
    assert row["head_only"]["phase"] == "head" and row["default"]["phase"] == "fine_tune"
    assert row["probe"]["weight_decay"] > 0


def test_bench_recipes_refuses_an_unknown_method(capsys):
    assert main(["bench-recipes", "demo", "--methods", "default,magic"]) == 2
    assert "magic" in capsys.readouterr().err
    assert main(["bench-recipes", "demo", "--seeds", "0,x"]) == 2
    assert "--seeds" in capsys.readouterr().err
