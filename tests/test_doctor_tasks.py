"""The doctor on multilabel and regression CSVs (real image files): planted problems are found under the right
check, the clean sets are not flagged."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from task_builders import make_multilabel_csv, make_regression_csv, write_label_image, write_value_image

from ftui.doctor import check, colour_histogram_features, run_cli
from ftui.doctor.cli import add_cli_arguments
from ftui.doctor.duplicates import LEAKAGE
from ftui.ui.doctor_view import CHECK_TITLES, run_check


def colour_features(images):
    """A real, cheap feature of the images: an 8-level joint RGB histogram (the test sets are colour-coded)."""
    return colour_histogram_features(images, bins=8)


FEATURES = {"feature_fn": colour_features, "feature_name": "colour histograms"}


@pytest.fixture(scope="module")
def clean_multilabel(tmp_path_factory) -> Path:
    return make_multilabel_csv(tmp_path_factory.mktemp("ml_clean"), n=64)


@pytest.fixture(scope="module")
def clean_regression(tmp_path_factory) -> Path:
    return make_regression_csv(tmp_path_factory.mktemp("reg_clean"), n=60)


@pytest.fixture(scope="module")
def planted_multilabel(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """64 colour-square images with a split column, plus: a red+green image labelled only red, an exact copy
    of an image under another label set, a same-labels copy in the other split, a label on two images."""
    root = tmp_path_factory.mktemp("ml_planted")
    csv = make_multilabel_csv(root, n=64)
    table = pd.read_csv(csv, keep_default_na=False)
    table["split"] = ["val" if i % 5 == 0 else "train" for i in range(len(table))]
    planted = {}
    missing = table.index[table["labels"] == "red;green"][1]
    table.loc[missing, "labels"] = "red"
    planted["missing_label"] = table.loc[missing, "path"]
    source, leaked = table.loc[1], table.loc[2]  # train images
    shutil.copy(root / source["path"], root / "images" / "copy_other_labels.png")
    shutil.copy(root / leaked["path"], root / "images" / "copy_in_val.png")
    other = "blue" if source["labels"] != "blue" else "red"
    extra = [{"path": "images/copy_other_labels.png", "labels": other, "split": "train"},
             {"path": "images/copy_in_val.png", "labels": leaked["labels"], "split": "val"}]
    for i in range(2):
        write_label_image(root / "images" / f"rare{i}.png", ["red"], seed=500 + i)
        extra.append({"path": f"images/rare{i}.png", "labels": "red;rare", "split": "train"})
    pd.concat([table, pd.DataFrame(extra)]).to_csv(csv, index=False)
    return csv, planted


@pytest.fixture(scope="module")
def planted_regression(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """60 brightness images (value = brightness), plus a typo (1000 for a value of 40) and a dark image (value
    15) labelled 85."""
    root = tmp_path_factory.mktemp("reg_planted")
    csv = make_regression_csv(root, n=60)
    table = pd.read_csv(csv)
    write_value_image(root / "images" / "typo.png", 40, seed=900)
    write_value_image(root / "images" / "dark_labelled_bright.png", 15, seed=901)
    extra = pd.DataFrame([{"path": "images/typo.png", "value": 1000.0},
                          {"path": "images/dark_labelled_bright.png", "value": 85.0}])
    pd.concat([table, extra]).to_csv(csv, index=False)
    return csv, {"typo": "images/typo.png", "mislabelled": "images/dark_labelled_bright.png"}


def names(result) -> list[str]:
    return sorted(Path(p).name for p in result.table["path"])


def test_clean_multilabel_set_is_not_flagged(clean_multilabel):
    report = check(clean_multilabel, **FEATURES)
    assert report.task == "multilabel" and report.classes == ["blue", "green", "red"]
    balance, labels = report.check("balance"), report.check("labels")
    assert balance.severity == "ok", balance.summary
    assert list(balance.table["class"]) == ["blue", "green", "red"]
    # Every label is on 4 of the 8 label sets the builder cycles through: 32 of 64 images.
    assert list(balance.table["total"]) == [32, 32, 32]
    assert balance.stats["images_without_label"] == 8 and balance.stats["mean_labels_per_image"] == 1.5
    assert labels.ran and labels.severity == "ok" and labels.table.empty, labels.summary
    assert labels.stats["probe_cv_map"] > 0.95
    assert report.check("duplicates").severity == "ok" and report.check("unreadable").severity == "ok"


def test_planted_multilabel_problems_are_found(planted_multilabel):
    csv, planted = planted_multilabel
    report = check(csv, **FEATURES)
    labels = report.check("labels")
    assert labels.severity == "warning"
    row = labels.table[labels.table["path"].str.endswith(Path(planted["missing_label"]).name)]
    assert len(row) == 1 and "may also show 'green'" in row["issue"].iloc[0]
    assert row["label"].iloc[0] == "red" and "green" in row["probe_says"].iloc[0]
    duplicates = report.check("duplicates").table
    scopes = dict(zip(duplicates["path"].map(lambda p: Path(p).name), duplicates["scope"]))
    assert scopes["copy_other_labels.png"] == "with different label sets"
    assert scopes["copy_in_val.png"] == LEAKAGE
    assert report.check("duplicates").severity == "error"
    balance = report.check("balance")
    rare = balance.table.set_index("class").loc["rare"]
    assert rare["train"] == 2 and rare["level"] == "warning" and "too few to learn" in rare["issue"]
    assert "too few to measure" in rare["issue"]  # no val image has it
    assert report.status == "errors"


def test_clean_regression_set_is_not_flagged(clean_regression):
    report = check(clean_regression, **FEATURES)
    assert report.task == "regression" and report.classes == ["value"]
    balance, labels = report.check("balance"), report.check("labels")
    assert balance.severity == "ok" and balance.table.empty, balance.summary
    histogram = balance.stats["outputs"]["value"]["histogram"]
    assert sum(row["images"] for row in histogram) == 60
    assert labels.ran and labels.severity == "ok" and labels.table.empty, labels.summary
    assert labels.stats["probe_cv_r2"][0] > 0.9
    # (The builder's flat grey fields are "near-blank" to the properties check: that one is not the task's.)
    assert report.check("duplicates").severity == "ok" and report.check("unreadable").severity == "ok"


def test_planted_regression_problems_are_found(planted_regression):
    csv, _ = planted_regression
    report = check(csv, **FEATURES)
    balance, labels = report.check("balance"), report.check("labels")
    assert names(balance) == ["typo.png"]
    assert "value = 1000 is far outside the rest" in balance.table["issue"].iloc[0]
    # The typo is the value check's; the probe flags the dark image labelled bright, and nothing else.
    assert names(labels) == ["dark_labelled_bright.png"], labels.table
    issue = labels.table["issue"].iloc[0]
    assert "value = 85 but the probe predicts" in issue
    assert float(labels.table["probe_says"].iloc[0]) < 40


def test_cli_checks_a_task_csv_and_reads_numbered_folders_as_values(planted_multilabel, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    csv, _ = planted_multilabel
    assert run_cli(parser.parse_args([str(csv), "--no-labels", "--json"])) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "multilabel" and out["classes"] == ["blue", "green", "rare", "red"]
    balance = next(c for c in out["checks"] if c["name"] == "balance")
    assert {row["class"]: row["train"] for row in balance["rows"]}["rare"] == 2
    for value, count in ((10, 6), (20, 6), (30, 6), (40, 6), (500, 1)):
        for i in range(count):
            write_value_image(tmp_path / "ages" / str(value) / f"{i}.png", min(value, 95), seed=value + i)
    assert run_cli(parser.parse_args([str(tmp_path / "ages"), "--no-labels", "--task", "regression"])) == 0
    text = capsys.readouterr().out
    assert "regression: 1 values (value)" in text and "value = 500 is far outside the rest" in text


def test_app_doctor_view_names_the_task_checks_and_charts_the_values(planted_regression):
    csv, _ = planted_regression
    card, *tables, chart, gallery, error, paths, suggested = run_check(str(csv), False, "mobilenet_v3_small",
                                                                       None)
    assert error == "" and suggested == {}  # nothing to move into a class folder
    assert "Value distribution" in card and "regression: 1 values" in card
    balance = tables[list(CHECK_TITLES).index("balance")]
    assert [Path(p).name for p in balance["path"]] == ["typo.png"]
    assert chart["images"].sum() == 62 and set(chart["split"]) == {"train", "val"}
    captions = dict(zip((Path(p).name for p in paths), (caption for _, caption in gallery)))
    assert captions["typo.png"].startswith("1000 · value = 1000")
