"""After a fix, Evaluate never shows pre-fix paths: a saved evaluation older than the dataset's journal is
evaluated again on the fixed files (the edited copy for a read-only source) and says the run trained before
the fixes; the fix panel's paths follow the moved files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ftui.data import fixes
from ftui.results.evaluate import evaluate
from ftui.runs import RunStore, write_json_atomic
from ftui.ui.context import AppContext, AppSettings
from ftui.ui.results_step import evaluation_of
from tests.run_fixtures import make_quick_run


@pytest.fixture()
def evaluated_run(tmp_path):
    """(ctx, run id, data folder, saved evaluation): a real run whose job-style evaluation.json has mistakes."""
    run_dir = make_quick_run(tmp_path, per_class=10)
    folder = RunStore(tmp_path / "runs").folder(run_dir)
    saved = evaluate(run_dir).to_dict()
    assert saved["mistakes"], "a random-init model must get some val images wrong"
    write_json_atomic(folder.evaluation_path, saved)
    ctx = AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work", data_root=tmp_path))
    return ctx, run_dir.name, tmp_path / "colours", saved


def _mistake_paths(result):
    return [m["path"] for m in result["mistakes"]]


@pytest.mark.slow
def test_saved_evaluation_is_reused_until_a_fix_then_evaluated_again_on_the_fixed_files(evaluated_run):
    ctx, run_id, data, saved = evaluated_run
    assert evaluation_of(ctx, run_id, "val") == saved  # nothing changed: the job's evaluation is reused
    wrong = saved["mistakes"][0]
    other = next(c for c in saved["classes"] if c != wrong["true"])
    moved = fixes.relabel(data, wrong["path"], other).moves[0][1]
    removed = saved["mistakes"][-1]["path"] if len(saved["mistakes"]) > 1 else None
    if removed:
        fixes.remove(data, removed)
    result = evaluation_of(ctx, run_id, "val")
    paths = _mistake_paths(result)
    assert wrong["path"] not in paths and removed not in paths
    assert all(Path(p).is_file() for p in paths)  # every listed image is where the gallery will look
    assert any("since this run trained" in w and "train again" in w for w in result["warnings"])
    if str(data / moved) in {i["path"] for i in result["mistakes"]}:  # still wrong: listed under its new class
        assert next(m for m in result["mistakes"] if m["path"] == str(data / moved))["true"] == other


@pytest.mark.slow
def test_read_only_dataset_is_evaluated_in_its_edited_copy(evaluated_run):
    ctx, run_id, data, saved = evaluated_run
    for p in [data, *data.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        wrong = saved["mistakes"][0]
        result = fixes.remove(data, wrong["path"], workdir=ctx.settings.workdir)
        assert result.copied_from and Path(wrong["path"]).is_file()  # the original keeps its file
        fresh = evaluation_of(ctx, run_id, "val")
        copy = Path(result.root)
        assert all(Path(p).is_relative_to(copy) for p in _mistake_paths(fresh))
        assert not any(Path(p).name == Path(wrong["path"]).name for p in _mistake_paths(fresh))
        assert any("edited copy" in w for w in fresh["warnings"])
    finally:
        for p in [data, *data.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_fix_panel_paths_follow_the_moved_files(tmp_path):
    from tests.conftest import make_class_folder

    data = make_class_folder(tmp_path / "colours", per_class=3)
    shown = [str(data / "red" / "red_0.jpg"), str(data / "blue" / "blue_1.jpg")]
    relabelled = fixes.relabel(data, shown[0], "green")
    shown = fixes.follow_moves(shown, relabelled)
    assert shown == [str(data / "green" / "red_0.jpg"), str(data / "blue" / "blue_1.jpg")]
    shown = fixes.follow_moves(shown, fixes.undo(data))
    assert shown[0] == str(data / "red" / "red_0.jpg") and Path(shown[0]).is_file()


def test_changes_since_counts_journal_entries_from_that_second_on(tmp_path):
    import time

    from tests.conftest import make_class_folder

    data = make_class_folder(tmp_path / "colours", per_class=3)
    before = time.time() - 5
    fixes.remove(data, data / "red" / "red_0.jpg")
    assert len(fixes.changes_since(data, before)) == 1
    assert fixes.changes_since(data, time.time() + 5) == []
