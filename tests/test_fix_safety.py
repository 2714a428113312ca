"""`ftui fix` and undo on hostile or changed datasets (issue 20, findings 5 and 6): class folders that are links
out of the dataset are refused before anything moves; an undo is all or nothing; a CSV undo finds its rows by
path, whatever was re-sorted or added to the CSV since."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_class_folder

from ftui.data import fixes


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (links not followed) with its bytes: to prove nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A folder next to the dataset with images of its own (what a link may lead to)."""
    return make_class_folder(tmp_path / "outside", per_class=3, classes=["private"])


def _journal(root: Path) -> list[dict]:
    return fixes.read_journal(root)


def test_relabel_into_a_class_folder_that_links_outside_is_refused(class_folder, outside):
    (class_folder / "evil").symlink_to(outside / "private", target_is_directory=True)
    before, outside_before = _tree(class_folder), _tree(outside)
    with pytest.raises(fixes.FixError, match="leads out of the dataset"):
        fixes.relabel(class_folder, "red/red_0.jpg", "evil")
    assert _tree(class_folder) == before and _tree(outside) == outside_before and not _journal(class_folder)


@pytest.mark.parametrize("link", ["source", "target"])
def test_merge_with_a_class_folder_that_links_outside_moves_nothing(class_folder, outside, link):
    if link == "source":  # merge would pull the outside files in, then crash on the link, unjournaled
        (class_folder / "evil").symlink_to(outside / "private", target_is_directory=True)
        source, target = "evil", "red"
    else:  # merge would push the dataset's images out
        (class_folder / "evil").symlink_to(outside / "private", target_is_directory=True)
        source, target = "blue", "evil"
    before, outside_before = _tree(class_folder), _tree(outside)
    with pytest.raises(fixes.FixError, match="leads out of the dataset"):
        fixes.merge(class_folder, source, target)
    assert _tree(class_folder) == before and _tree(outside) == outside_before and not _journal(class_folder)
    assert (class_folder / "evil").is_symlink()


def test_remove_into_a_removed_folder_that_links_outside_is_refused(class_folder, outside):
    (class_folder / "_removed").symlink_to(outside, target_is_directory=True)
    outside_before = _tree(outside)
    with pytest.raises(fixes.FixError, match="leads out of the dataset"):
        fixes.remove(class_folder, "red/red_0.jpg")
    assert (class_folder / "red" / "red_0.jpg").is_file() and _tree(outside) == outside_before


def test_the_cli_refuses_a_linked_class_folder_with_exit_2(class_folder, outside, capsys):
    from ftui.cli import main

    (class_folder / "evil").symlink_to(outside / "private", target_is_directory=True)
    outside_before = _tree(outside)
    assert main(["fix", "merge", str(class_folder), "evil", "red"]) == 2
    assert main(["fix", "relabel", str(class_folder), "evil", "red/red_0.jpg"]) == 2
    assert "leads out of the dataset" in capsys.readouterr().err
    assert _tree(outside) == outside_before and (class_folder / "red" / "red_0.jpg").is_file()


def test_undo_with_a_moved_file_gone_moves_nothing_and_works_once_it_is_back(class_folder):
    fixes.merge(class_folder, "blue", "green")  # 6 files moved
    lost = class_folder / "green" / "blue_3.jpg"
    kept = lost.read_bytes()
    lost.unlink()
    after_merge = _tree(class_folder)
    with pytest.raises(fixes.FixError, match="blue_3.jpg.*nothing was moved back"):
        fixes.undo(class_folder)
    assert _tree(class_folder) == after_merge  # not 5 of 6 moved back
    assert [e["op"] for e in _journal(class_folder)] == ["merge"]
    lost.write_bytes(kept)
    result = fixes.undo(class_folder)  # not stuck: once the file is back, the undo goes through
    assert len(result.moves) == 6 and sorted(p.name for p in (class_folder / "blue").iterdir()) == [
        f"blue_{i}.jpg" for i in range(6)]


@pytest.fixture()
def csv_dataset(tmp_path: Path) -> Path:
    images = make_class_folder(tmp_path / "images", per_class=4)
    rows = ["path,label,note"]
    for i, p in enumerate(sorted(images.rglob("*.jpg"))):
        rows.append(f"{p.relative_to(tmp_path)},{p.parent.name},n{i}")
    csv = tmp_path / "data.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def _rows(csv: Path) -> dict[str, list[str]]:
    lines = csv.read_text().splitlines()
    return {line.split(",")[0]: line.split(",")[1:] for line in lines[1:]}


def test_csv_undo_after_a_re_sort_puts_the_label_back_on_the_same_image(csv_dataset):
    before = _rows(csv_dataset)
    result = fixes.relabel(csv_dataset, "images/blue/blue_0.jpg", "red")
    edited = Path(result.root)
    lines = edited.read_text().splitlines()
    edited.write_text("\n".join([lines[0], *lines[4:], *lines[1:4]]) + "\n")  # rows re-ordered by hand
    fixes.undo(edited)
    assert _rows(edited) == before  # by path: blue_0 is blue again, no other row changed


def test_csv_undo_of_a_merge_after_a_re_sort(csv_dataset):
    before = _rows(csv_dataset)
    edited = Path(fixes.merge(csv_dataset, "green", "red").root)
    lines = edited.read_text().splitlines()
    edited.write_text("\n".join([lines[0], *lines[4:], *lines[1:4]]) + "\n")
    fixes.undo(edited)
    assert _rows(edited) == before


def test_csv_undo_of_a_remove_after_a_column_was_added(csv_dataset):
    edited = Path(fixes.remove(csv_dataset, "images/red/red_2.jpg").root)
    lines = edited.read_text().splitlines()
    edited.write_text("\n".join([lines[0] + ",extra", *(line + ",x" for line in lines[1:])]) + "\n")
    result = fixes.undo(edited)  # was "internal error" (a row of 3 cells into 4 columns)
    assert result.entry["undid"] == "remove"
    rows = _rows(edited)
    assert rows["images/red/red_2.jpg"] == ["red", "n10", ""] and len(rows) == 12


def test_csv_undo_refuses_without_changing_anything_when_a_row_was_edited_away(csv_dataset):
    edited = Path(fixes.merge(csv_dataset, "green", "red").root)
    text = edited.read_text().replace("images/green/green_1.jpg,red", "images/green/green_1.jpg,blue")
    edited.write_text(text)
    with pytest.raises(fixes.FixError, match="green_1.jpg.*nothing was changed"):
        fixes.undo(edited)
    assert edited.read_text() == text
    journal = fixes.csvfixes.journal_path(edited)
    assert [json.loads(line)["op"] for line in journal.read_text().splitlines()] == ["merge"]
