"""Fixes on a CSV-described dataset: rows change in an edited copy beside the CSV (the original and the image
files are never touched), every change is journaled, and undo restores the rows exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_class_folder

from ftui.data import fixes
from ftui.data.datasets import load_dataset


@pytest.fixture()
def csv_dataset(tmp_path: Path) -> Path:
    images = make_class_folder(tmp_path / "images", per_class=6)
    rows = ["path,label,note"]  # a column ftui does not use must survive every fix and undo
    for i, p in enumerate(sorted(images.rglob("*.jpg"))):
        rows.append(f"{p.relative_to(tmp_path)},{p.parent.name},n{i}")
    csv = tmp_path / "data.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def _labels(csv: Path) -> dict[str, str]:
    ds = load_dataset(csv)
    return {Path(i.path).name: ds.classes[i.label] for i in ds.items}


def test_relabel_remove_merge_and_undo_edit_rows_of_an_edited_copy(csv_dataset):
    original = csv_dataset.read_text()
    files = sorted(p for p in csv_dataset.parent.rglob("*.jpg"))
    result = fixes.relabel(csv_dataset, csv_dataset.parent / "images" / "red" / "red_0.jpg", "green")
    edited = Path(result.root)
    assert edited == csv_dataset.with_name("data-edited.csv") and result.copied_from == str(csv_dataset)
    assert csv_dataset.read_text() == original  # the user's CSV is kept as it was
    assert _labels(edited)["red_0.jpg"] == "green" and _labels(csv_dataset)["red_0.jpg"] == "red"
    assert "1 row changed in data-edited.csv" in result.message
    # Later fixes, given the original CSV, land in the same copy.
    fixes.remove(csv_dataset, str(csv_dataset.parent / "images" / "blue" / "blue_1.jpg"))
    assert "blue_1.jpg" not in _labels(edited)
    fixes.merge(csv_dataset, "blue", "red")
    assert "blue" not in load_dataset(edited).classes
    assert [e["op"] for e in fixes.read_journal(edited)] == ["relabel", "remove", "merge"]
    for _ in range(3):
        fixes.undo(csv_dataset)
    assert edited.read_text() == original  # rows back in place, cells as they were
    assert [e["op"] for e in fixes.history(edited)][:3] == ["undo", "undo", "undo"]
    assert sorted(p for p in csv_dataset.parent.rglob("*.jpg")) == files  # no image file moved
    with pytest.raises(fixes.FixError, match="nothing to undo"):
        fixes.undo(csv_dataset)


def test_csv_fix_errors_are_fix_errors(csv_dataset, tmp_path):
    with pytest.raises(fixes.FixError, match="no row"):
        fixes.remove(csv_dataset, tmp_path / "images" / "red" / "nope.jpg")
    with pytest.raises(fixes.FixError, match="already labelled"):
        fixes.relabel(csv_dataset, tmp_path / "images" / "red" / "red_0.jpg", "red")
    with pytest.raises(fixes.FixError, match="not a usable class name"):
        fixes.relabel(csv_dataset, tmp_path / "images" / "red" / "red_0.jpg", "../x")


def test_evaluation_and_panel_see_the_csv_copy(csv_dataset):
    assert fixes.current_root(csv_dataset) == csv_dataset
    result = fixes.remove(csv_dataset, csv_dataset.parent / "images" / "red" / "red_2.jpg")
    assert fixes.current_root(csv_dataset) == Path(result.root)
    assert len(fixes.changes_since(result.root, 0)) == 1
    shown = [str(csv_dataset.parent / "images" / "red" / "red_2.jpg")]
    assert fixes.follow_moves(shown, result) == shown  # files stay where they are
