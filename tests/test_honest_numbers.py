"""Honest numbers: accuracy with a 95% Wilson interval, warnings for thin classes, refusal for empty ones."""

from __future__ import annotations

import json

import pytest

from ftui.cli import main
from ftui.data.datasets import DatasetError, class_size_warnings, load_dataset
from ftui.stats import format_accuracy, wilson_interval
from tests.conftest import make_class_folder


def test_wilson_interval_matches_published_values_and_stays_inside_0_1():
    # Reference values (Wilson 1927 / Newcombe 1998 table): 81/263 -> [0.2553, 0.3662]; 0/10 -> [0, 0.2775].
    lo, hi = wilson_interval(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    # A perfect score on few images is not "1.0 +- 0": 4/4 could well be a 60% model.
    lo, hi = wilson_interval(4, 4)
    assert hi == 1.0 and 0.45 < lo < 0.55
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert format_accuracy(146, 153).startswith("0.954 [0.9")


def test_a_class_with_one_image_is_refused_with_a_clear_error(tmp_path, capsys):
    data = make_class_folder(tmp_path / "d", per_class=6)
    for extra in list((data / "blue").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(DatasetError, match="blue .1. has fewer than 2 images"):
        class_size_warnings(load_dataset(data))
    code = main(["train", str(data), "--backbone", "resnet18", "--weights", "none", "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "fewer than 2 images" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "best.pt").exists()


def test_classes_with_fewer_than_5_val_images_are_warned_about_each_by_name(tmp_path):
    data = make_class_folder(tmp_path / "d", per_class=6)  # 20% val: 1 val image per class
    warnings = class_size_warnings(load_dataset(data))
    assert len(warnings) == 3 and all("only 1 val image" in w for w in warnings)
    assert any("'red'" in w for w in warnings)
    big = make_class_folder(tmp_path / "big", per_class=25)  # 5 val images per class: no warning
    assert class_size_warnings(load_dataset(big)) == []


@pytest.mark.slow
def test_train_prints_and_stores_the_val_accuracy_with_its_interval(tmp_path, capsys):
    data = make_class_folder(tmp_path / "colours", per_class=8)
    out_dir = tmp_path / "run"
    code = main(["train", str(data), "--backbone", "resnet18", "--weights", "none", "--train-groups", "all",
                 "--epochs", "1", "--batch-size", "4", "--out", str(out_dir), "--no-augment", "--image-size", "32",
                 "--device", "cpu", "--recipe", "plain"])
    out = capsys.readouterr().out
    assert code == 0
    ev = json.loads((out_dir / "evaluation.json").read_text())
    assert ev["num_items"] == 6 and ev["ci_method"] == "wilson"
    assert (ev["accuracy_ci95"][0], ev["accuracy_ci95"][1]) == tuple(round(v, 4) for v in
                                                                     wilson_interval(ev["correct"], 6))
    assert ev["accuracy"] == pytest.approx(ev["correct"] / 6)
    assert len(ev["warnings"]) == 3  # 2 val images a class
    line = next(line for line in out.splitlines() if line.startswith("val accuracy "))
    assert f"({ev['correct']}/6)" in line and "95% Wilson interval" in line
    assert "warning: class 'red' has only 2 val images" in out
