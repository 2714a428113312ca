"""`python -m ftui bench-history`: bench results appended per release and rendered as a Markdown table.

The input is real `bench --json` output: tests/data/bench_tiny.json was printed by
`python -m ftui bench SPLIT --backbone mobilenet_v3_small --weights none --image-size 32 --epochs 1
--batch-size 8 --tutorial-workers 0 --json` on the conftest split folder (tests/test_bench.py runs the same
bench fresh and feeds its output through bench-history too). Nothing here measures time.
"""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path

import pytest

from ftui.bench import history
from ftui.cli import main

TINY = Path(__file__).parent / "data" / "bench_tiny.json"


@pytest.fixture
def tiny_results() -> dict:
    return json.loads(TINY.read_text())


def _rows(markdown: str) -> list[list[str]]:
    """The table's data rows as cells (header and separator left out)."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]


def _column(name: str) -> int:
    header = ["date", "release", "commit", "machine", "load", *(c.label for c in history.COLUMNS), "note"]
    return header.index(name)


def test_the_fixture_is_a_real_bench_result(tiny_results):
    # What the renderer reads is there, measured (not a hand-written stand-in).
    for key in history.REQUIRED_KEYS + ("engine_train_images_per_s", "compute_limit_train_images_per_s",
                                        "load_average_before", "cpu_model"):
        assert key in tiny_results, key
    assert tiny_results["engine_train_images_per_s"] > 0 and tiny_results["compute_limit_interleaved"] is True


def test_cli_appends_each_result_and_renders_one_row_per_entry(tmp_path, tiny_results, capsys):
    hist, md = tmp_path / "h.jsonl", tmp_path / "h.md"
    args = ["bench-history", str(TINY), "--history", str(hist), "--markdown", str(md)]
    assert main([*args, "--release", "0.1.0", "--note", "first"]) == 0
    assert main([*args, "--release", "0.2.0", "--note", "a | pipe"]) == 0
    assert f"{md}: 2 entries" in capsys.readouterr().out
    lines = hist.read_text().splitlines()
    assert len(lines) == 2
    entries = [json.loads(line) for line in lines]
    assert [e["release"] for e in entries] == ["0.1.0", "0.2.0"]
    assert entries[0]["results"] == tiny_results  # the whole result is kept, not a summary
    rows = _rows(md.read_text())
    assert [r[1] for r in rows] == ["0.1.0", "0.2.0"]
    ratio = f"{tiny_results['engine_vs_compute_limit']:.3f}"
    assert rows[0][_column("train vs compute limit")] == ratio
    before, after = tiny_results["load_average_before"][0], tiny_results["load_average_after"][0]
    assert rows[0][_column("load")] == f"{before:.1f} / {after:.1f}"
    assert rows[1][-1] == "a / pipe"  # a note cannot break the table


def test_render_only_rereads_the_history(tmp_path, tiny_results):
    hist, md = tmp_path / "h.jsonl", tmp_path / "h.md"
    history.append_entries(hist, [history.make_entry(tiny_results, "0.1.0")])
    assert main(["bench-history", "--history", str(hist), "--markdown", str(md)]) == 0
    assert len(_rows(md.read_text())) == 1


def test_a_worse_ratio_on_the_same_machine_is_marked_as_a_slip(tiny_results):
    when = datetime.datetime(2026, 12, 4, tzinfo=datetime.timezone.utc)
    slower = copy.deepcopy(tiny_results)
    slower["engine_vs_compute_limit"] = tiny_results["engine_vs_compute_limit"] * 0.75  # the 0.75x
    within = copy.deepcopy(tiny_results)
    within["engine_vs_compute_limit"] = slower["engine_vs_compute_limit"] * 0.95  # within the spread
    other_machine = copy.deepcopy(slower)
    other_machine["cpu_model"] = other_machine["device_name"] = "another CPU"
    entries = [history.make_entry(r, "0.1.0", when=when) for r in (tiny_results, slower, within, other_machine)]
    rows = _rows(history.render_markdown(entries))
    cells = [r[_column("train vs compute limit")] for r in rows]
    assert "slip" not in cells[0]
    assert cells[1] == f"**{slower['engine_vs_compute_limit']:.3f} slip**"
    assert "slip" not in cells[2]  # compared with the entry before it, 5% worse: inside SLIP_FRACTION
    assert "slip" not in cells[3]  # first entry of another machine: nothing to compare with


def test_a_target_no_longer_reached_is_a_slip(tiny_results):
    reached = dict(tiny_results, all_layers_epochs_to_095=2)
    missed = dict(tiny_results, all_layers_epochs_to_095=None)
    rows = _rows(history.render_markdown([history.make_entry(r, "0.1.0") for r in (reached, missed)]))
    assert rows[1][_column("all layers epochs to 0.95")] == "**- slip**"


def test_history_refuses_what_is_not_a_bench_result(tmp_path, capsys):
    not_json = tmp_path / "table.txt"
    not_json.write_text("ftui bench: mobilenet_v2 on cpu\nmeasure | ours\n")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"val_acc": 0.9}))
    hist = tmp_path / "h.jsonl"
    for path in (not_json, other, tmp_path / "missing.json"):
        assert main(["bench-history", str(path), "--history", str(hist), "--markdown", str(tmp_path / "h.md")]) == 2
    err = capsys.readouterr().err
    assert "is not JSON" in err and "is not a `bench --json` result" in err and "cannot read" in err
    assert not hist.exists()  # nothing appended


def test_a_corrupt_history_line_is_reported_by_number(tmp_path, tiny_results):
    hist = tmp_path / "h.jsonl"
    history.append_entries(hist, [history.make_entry(tiny_results, "0.1.0")])
    with hist.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(history.HistoryError, match="line 2"):
        history.read_history(hist)


def test_the_repository_history_renders_to_the_committed_table():
    repo = Path(__file__).resolve().parent.parent
    hist, md = repo / history.DEFAULT_HISTORY, repo / history.DEFAULT_MARKDOWN
    if not hist.exists():
        pytest.skip("no docs/bench-history.jsonl in this checkout")
    assert md.read_text() == history.render_markdown(history.read_history(hist)), \
        "docs/bench-history.md is stale: run `python -m ftui bench-history`"
