"""Fix in place: relabel, remove, merge, every change journaled and undoable; read-only data gets a copy."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from conftest import make_class_folder

from ftui.data import fixes
from ftui.data.datasets import load_dataset


def _labels(root: Path) -> dict[str, str]:
    ds = load_dataset(root)
    return {Path(i.path).name: ds.classes[i.label] for i in ds.items}


def test_relabel_moves_the_file_and_the_loader_sees_the_new_class(class_folder):
    result = fixes.relabel(class_folder, "red/red_0.jpg", "green")
    assert (class_folder / "green" / "red_0.jpg").is_file() and not (class_folder / "red" / "red_0.jpg").exists()
    assert _labels(class_folder)["red_0.jpg"] == "green"
    assert result.entry["op"] == "relabel" and result.moves == [("red/red_0.jpg", "green/red_0.jpg")]


def test_remove_moves_into_removed_which_the_loader_ignores(split_folder):
    before = len(load_dataset(split_folder).items)
    fixes.remove(split_folder, split_folder / "val" / "red" / "v0.png")
    assert (split_folder / "_removed" / "val" / "red" / "v0.png").is_file()
    ds = load_dataset(split_folder)
    assert len(ds.items) == before - 1 and not ds.skipped  # not reported as a stray file either


def test_merge_moves_every_split_and_undo_restores_it(split_folder):
    fixes.merge(split_folder, "blue", "green")
    ds = load_dataset(split_folder)
    assert ds.classes == ["green", "red"] and len(ds.split("val")) == 9
    fixes.undo(split_folder)
    assert load_dataset(split_folder).classes == ["blue", "green", "red"]


def test_journal_is_append_only_and_undo_goes_newest_first(class_folder):
    fixes.relabel(class_folder, "red/red_0.jpg", "green")
    fixes.remove(class_folder, "blue/blue_1.jpg")
    journal = class_folder / fixes.JOURNAL
    first_lines = journal.read_text().splitlines()
    undo = fixes.undo(class_folder)
    assert undo.entry["undoes"] == 2 and (class_folder / "blue" / "blue_1.jpg").is_file()
    assert not (class_folder / "_removed").exists()
    assert journal.read_text().splitlines()[:2] == first_lines  # earlier lines never rewritten
    fixes.undo(class_folder)
    assert _labels(class_folder)["red_0.jpg"] == "red"
    with pytest.raises(fixes.FixError, match="nothing to undo"):
        fixes.undo(class_folder)
    ops = [json.loads(line)["op"] for line in journal.read_text().splitlines()]
    assert ops == ["relabel", "remove", "undo", "undo"]
    assert [h["undone"] for h in fixes.history(class_folder)] == [False, False, True, True]


def test_a_taken_name_is_never_overwritten(class_folder):
    (class_folder / "green" / "red_0.jpg").write_bytes((class_folder / "green" / "green_0.jpg").read_bytes())
    fixes.relabel(class_folder, "red/red_0.jpg", "green")
    assert (class_folder / "green" / "red_0_1.jpg").is_file()
    fixes.undo(class_folder)
    assert (class_folder / "red" / "red_0.jpg").is_file() and (class_folder / "green" / "red_0.jpg").is_file()


@pytest.mark.parametrize("path", ["../outside.jpg", "/etc/passwd", "red/../../x.jpg", "."])
def test_paths_outside_the_dataset_are_refused(class_folder, path):
    (class_folder.parent / "outside.jpg").write_bytes(b"x")
    with pytest.raises(fixes.FixError):
        fixes.remove(class_folder, path)
    assert (class_folder.parent / "outside.jpg").is_file()


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "_removed"])
def test_hostile_class_names_are_refused(class_folder, name):
    with pytest.raises(fixes.FixError):
        fixes.relabel(class_folder, "red/red_0.jpg", name)


def test_symlink_escaping_the_dataset_is_refused(class_folder, tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"x")
    (class_folder / "red" / "link.jpg").symlink_to(secret)
    with pytest.raises(fixes.FixError, match="not inside"):
        fixes.remove(class_folder, "red/link.jpg")


def test_read_only_dataset_is_edited_in_a_copy(tmp_path):
    src = make_class_folder(tmp_path / "ro", per_class=3)
    for p in [src, *src.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        result = fixes.relabel(src, src / "red" / "red_0.jpg", "blue", workdir=tmp_path / "work")
        copy = Path(result.root)
        assert result.copied_from == str(src.resolve()) and copy.is_relative_to(tmp_path / "work")
        assert (src / "red" / "red_0.jpg").is_file()  # the original is untouched
        assert _labels(copy)["red_0.jpg"] == "blue" and "edited copy" in result.message
        # The next fix, given the original's path, lands in the same copy.
        again = fixes.remove(src, src / "green" / "green_0.jpg", workdir=tmp_path / "work")
        assert again.root == result.root and len(fixes.read_journal(copy)) == 2
    finally:
        for p in [src, *src.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_cli_fix_and_undo_round_trip(class_folder, capsys):
    from ftui.cli import main

    assert main(["fix", "relabel", str(class_folder), "green", "red/red_0.jpg", "red/red_1.jpg"]) == 0
    assert main(["fix", "remove", str(class_folder), "blue/blue_0.jpg"]) == 0
    assert _labels(class_folder)["red_1.jpg"] == "green" and "blue_0.jpg" not in _labels(class_folder)
    assert main(["undo", str(class_folder)]) == 0
    assert "blue_0.jpg" in _labels(class_folder)
    assert main(["fix", "log", str(class_folder)]) == 0
    assert "remove (undone)" in capsys.readouterr().out
    assert main(["fix", "remove", str(class_folder), "../x.jpg"]) == 2
    assert "not inside the dataset" in capsys.readouterr().err
