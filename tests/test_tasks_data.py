"""Multilabel and regression datasets: detection from a CSV, overrides, errors naming the row, splits."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
from conftest import make_class_folder, write_class_image
from task_builders import LABEL_COLOURS, make_multilabel_csv, make_regression_csv, write_value_image

from ftui.data.datasets import DatasetError, load_dataset
from ftui.data.tasks import MULTILABEL, REGRESSION, split_task_items, value_strata


def test_label_set_csv_is_detected_as_multilabel(tmp_path):
    ds = load_dataset(make_multilabel_csv(tmp_path, n=48))
    assert ds.task == MULTILABEL
    assert ds.classes == sorted(LABEL_COLOURS)
    assert len(ds.items) == 48
    # Every image's target is its label set: m1 (second subset) is {"red"} alone.
    by_name = {item.path.rsplit("/", 1)[1]: item.target for item in ds.items}
    assert by_name["m0.png"] == (0.0, 0.0, 0.0)
    assert by_name["m1.png"] == (0.0, 0.0, 1.0)  # classes sorted: blue, green, red
    assert by_name["m7.png"] == (1.0, 1.0, 1.0)
    # class_counts: images with each label (8 subsets x 6 cycles; each label is in 4 of the 8 subsets).
    assert [a + b for a, b in zip(ds.class_counts("train"), ds.class_counts("val"))] == [24, 24, 24]


def test_binary_columns_are_multilabel_and_equal_the_label_sets(tmp_path):
    sets = load_dataset(make_multilabel_csv(tmp_path / "a", n=24))
    binary = load_dataset(make_multilabel_csv(tmp_path / "b", n=24, binary_columns=True))
    assert binary.task == MULTILABEL
    assert binary.classes == list(LABEL_COLOURS)  # column order
    order = [binary.classes.index(name) for name in sets.classes]
    a = {item.path.rsplit("/", 1)[1]: item.target for item in sets.items}
    b = {item.path.rsplit("/", 1)[1]: tuple(item.target[k] for k in order) for item in binary.items}
    assert a == b


def test_value_csv_is_regression_with_its_values(tmp_path):
    csv = make_regression_csv(tmp_path, n=40)
    table = pd.read_csv(csv)
    ds = load_dataset(csv)
    assert ds.task == REGRESSION and ds.classes == ["value"]
    got = {item.path.rsplit("/", 1)[1]: item.target[0] for item in ds.items}
    assert got == {p.rsplit("/", 1)[1]: v for p, v in zip(table["path"], table["value"])}


def test_numeric_class_labels_stay_classification_unless_asked(tmp_path):
    root = make_class_folder(tmp_path / "d", per_class=5, classes=["red", "green"])
    rows = [(f"{c}/{c}_{i}.jpg", "3" if c == "red" else "7") for c in ("red", "green") for i in range(5)]
    csv = root / "digits.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(csv, index=False)
    assert load_dataset(csv).task == "classification"
    forced = load_dataset(csv, task="regression")
    assert forced.task == REGRESSION
    assert sorted({item.target[0] for item in forced.items}) == [3.0, 7.0]


def test_override_to_classification_and_multilabel(tmp_path):
    csv = make_regression_csv(tmp_path, n=20)
    with pytest.raises(DatasetError, match="needs a 'path' and a 'label' column"):
        load_dataset(csv, task="classification")
    with pytest.raises(DatasetError, match=r"row 2: column 'value' holds '[0-9.]+'; a label column holds 1"):
        load_dataset(csv, task="multilabel")
    with pytest.raises(DatasetError, match="unknown task 'ranking'"):
        load_dataset(csv, task="ranking")


def test_numbered_folders_are_regression_on_request_only(tmp_path):
    root = tmp_path / "angles"
    for value in ("0", "45", "90.5"):
        for i in range(4):
            write_value_image(root / value / f"{i}.png", float(value) / 2, seed=i)
    assert load_dataset(root).task == "classification"
    ds = load_dataset(root, task="regression")
    assert ds.task == REGRESSION
    assert Counter(item.target[0] for item in ds.items) == {0.0: 4, 45.0: 4, 90.5: 4}
    with pytest.raises(DatasetError, match="multilabel"):
        load_dataset(root, task="multilabel")
    (root / "big").mkdir()
    write_value_image(root / "big" / "x.png", 10, seed=9)
    with pytest.raises(DatasetError, match="folder 'big' is not a number"):
        load_dataset(root, task="regression")


def _csv(tmp_path, rows, columns):
    for i in range(len(rows)):
        write_class_image(tmp_path / f"{i}.png", (100, 100, 100), seed=i, size=16)
    csv = tmp_path / "data.csv"
    pd.DataFrame([(f"{i}.png", *row) for i, row in enumerate(rows)], columns=["path", *columns]).to_csv(
        csv, index=False)
    return csv


@pytest.mark.parametrize("bad, message", [
    ("abc", r"data.csv row 4: 'abc' in column 'value' is not a number"),
    ("nan", r"data.csv row 4: 'nan' in column 'value' is not a finite number"),
    ("inf", r"data.csv row 4: 'inf' in column 'value' is not a finite number"),
])
def test_bad_values_name_the_row(tmp_path, bad, message):
    csv = _csv(tmp_path, [("1",), ("2",), (bad,), ("3",)], ["value"])
    with pytest.raises(DatasetError, match=message):
        load_dataset(csv, task="regression")


def test_single_value_and_empty_label_sets_are_refused(tmp_path):
    csv = _csv(tmp_path / "a", [("5",)] * 6, ["value"])
    with pytest.raises(DatasetError, match="only 5; regression needs at least 2 distinct values"):
        load_dataset(csv, task="regression")
    csv = _csv(tmp_path / "b", [("",)] * 6, ["labels"])
    with pytest.raises(DatasetError, match="every row's label set is empty"):
        load_dataset(csv)


def test_unknown_separator_and_bad_binary_cell_name_the_row(tmp_path):
    csv = _csv(tmp_path / "a", [("cat;dog",), ("cat",), ("cat|dog",)], ["labels"])
    with pytest.raises(DatasetError, match=r"row 4: labels 'cat\|dog' look separated by '\|'"):
        load_dataset(csv)
    csv = _csv(tmp_path / "b", [("1", "0"), ("0", "1"), ("2", "1")], ["cat", "dog"])
    with pytest.raises(DatasetError, match=r"row 4: column 'cat' holds '2'"):
        load_dataset(csv, task="multilabel")


def test_empty_value_cell_skips_the_image_with_a_reason(tmp_path):
    csv = _csv(tmp_path, [("1",), ("",), ("2",), ("3",), ("4",)], ["value"])
    ds = load_dataset(csv)
    assert len(ds.items) == 4
    assert list(ds.skipped_table()["reason"]) == ["no value"]


def test_multilabel_split_keeps_every_combination_in_both_splits(tmp_path):
    ds = load_dataset(make_multilabel_csv(tmp_path, n=80), val_fraction=0.2)
    combos = {split: Counter(item.target for item in ds.split(split)) for split in ("train", "val")}
    assert set(combos["val"]) == set(combos["train"])  # all 8 combinations of 10 images: 2 each to val
    assert all(n == 2 for n in combos["val"].values())
    again = load_dataset(make_multilabel_csv(tmp_path, n=80), val_fraction=0.2)
    assert [(i.path, i.split) for i in again.items] == [(i.path, i.split) for i in ds.items]


def test_regression_split_covers_the_value_range(tmp_path):
    ds = load_dataset(make_regression_csv(tmp_path, n=60), val_fraction=0.2)
    val = sorted(item.target[0] for item in ds.split("val"))
    train = sorted(item.target[0] for item in ds.split("train"))
    assert len(val) == 12
    # Two val images from each of 6 value sextiles: the val range spans most of train's.
    quantiles = value_strata(list(ds.items), 0.2)
    assert len(set(quantiles)) == 6
    assert val[0] < train[len(train) // 5] and val[-1] > train[-len(train) // 5]


def test_rare_combinations_are_pooled_not_dropped(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Row:
        path: str
        split: str
        target: tuple

    rows = [Row(f"/nonexistent/{i}.png", "train", (1.0, 0.0)) for i in range(20)]
    rows += [Row(f"/nonexistent/r{i}.png", "train", (0.0, 1.0) if i % 2 else (1.0, 1.0)) for i in range(6)]
    out = split_task_items(rows, MULTILABEL, 0.2, seed=0)
    assert len(out) == 26
    assert sum(r.split == "val" for r in out if r.target == (1.0, 0.0)) == 4
    assert sum(r.split == "val" for r in out if r.target != (1.0, 0.0)) == 1  # the pooled 6 rare rows
