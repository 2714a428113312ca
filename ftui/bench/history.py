"""`python -m ftui bench-history [RESULT.json|- ...]`: the bench's results kept per release, one JSON line each,
and a Markdown table rendered from them, so that a slip shows in docs/ the day it is measured.

    python -m ftui bench DATA --backbone mobilenet_v2 --weights W --json > bench.json
    python -m ftui bench-history bench.json --release 0.2.0 --note "idle"   # append, then render
    python -m ftui bench-history                                            # render only

Each line of the history file holds the whole `bench --json` object under "results" plus when, which release
and commit, and a free note. The rendered table shows the ratios that do not depend on how fast the machine is
that day, with the load averages the bench recorded around itself, and marks a ratio `slip` when it is worse
than the previous entry of the same machine, backbone and epochs by more than SLIP_FRACTION. The table is a
record to read, not a test: timings on a shared machine move, so the load columns say how much to trust a row.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftui.errors import FtuiError
from ftui.runs import write_bytes_atomic

DEFAULT_HISTORY = Path("docs/bench-history.jsonl")
DEFAULT_MARKDOWN = Path("docs/bench-history.md")

# A ratio this much worse (relative) than the previous comparable entry is marked: above this machine's
# run-to-run spread of the bench's ratios (README: 0.91-0.945 for the same code on an idle machine).
SLIP_FRACTION = 0.10


class HistoryError(FtuiError):
    """A results file that is not a bench result, or a history file that cannot be read."""


@dataclass(frozen=True)
class Column:
    """One rendered column: a key of the bench's results, how to print it, and which way is better."""

    key: str
    label: str
    higher_is_better: bool | None  # None: context, never marked as a slip
    digits: int = 3


COLUMNS = (
    Column("engine_vs_compute_limit", "train vs compute limit", True),
    Column("engine_infer_vs_compute_limit", "inference vs compute limit", True),
    Column("head_only_095_vs_inference_pass", "head only to 0.95 / one inference pass", False),
    Column("all_layers_best_acc", "all layers best epoch acc", True),
    Column("all_layers_kept_acc", "all layers kept (best.pt) acc", True),
    Column("all_layers_epochs_to_095", "all layers epochs to 0.95", False, 0),
    Column("engine_vs_tutorial_epoch", "all layers epoch / tutorial", False),
    Column("partial_freeze_epoch_ratio", "partial freeze cache / none", False),
    Column("first_metric_seconds", "first metric s", False, 2),
    Column("predict_ms", "predict ms", False, 1),
)

REQUIRED_KEYS = ("backbone", "epochs", "device", "engine_vs_compute_limit")


def load_results(source: str) -> dict[str, Any]:
    """A `bench --json` object from a file, or from stdin when `source` is "-"."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        results = json.loads(text)
    except OSError as exc:
        raise HistoryError(f"cannot read {source}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise HistoryError(f"{source} is not JSON ({exc.msg} at line {exc.lineno}): use `bench --json`") from None
    if not isinstance(results, dict) or any(k not in results for k in REQUIRED_KEYS):
        raise HistoryError(f"{source} is not a `bench --json` result (needs {', '.join(REQUIRED_KEYS)})")
    return results


def read_history(path: Path) -> list[dict[str, Any]]:
    """Every entry of the history file, oldest first (an absent file is an empty history)."""
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise HistoryError(f"{path} line {number} is not JSON") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("results"), dict):
            raise HistoryError(f"{path} line {number} is not a bench-history entry")
        entries.append(entry)
    return entries


def git_commit(cwd: Path | None = None) -> str | None:
    """The checkout's short commit (with -dirty when it has changes), or None outside git."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=cwd,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def make_entry(results: dict[str, Any], release: str, note: str = "", commit: str | None = None,
               when: datetime.datetime | None = None) -> dict[str, Any]:
    """One history line: when, which release and commit, a note, and the bench's whole result."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    return {"date": when.strftime("%Y-%m-%d %H:%M UTC"), "release": release, "commit": commit, "note": note,
            "results": results}


def append_entries(path: Path, entries: Sequence[dict[str, Any]]) -> None:
    """Add entries at the end of the history file (rewritten whole through a temp file: never half a line)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    new = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (old + new).encode("utf-8"))


def _machine(entry: dict[str, Any]) -> tuple:
    r = entry["results"]
    return (r.get("device_name") or r.get("cpu_model"), r.get("threads"), r.get("backbone"), r.get("epochs"),
            r.get("batch_size"))


def _slipped(column: Column, value: Any, before: Any) -> bool:
    """True when `value` is worse than `before` by more than SLIP_FRACTION (a target no longer reached too)."""
    if column.higher_is_better is None or before is None:
        return False
    if value is None:  # e.g. epochs to 0.95: reached before, not now
        return True
    if not isinstance(value, (int, float)) or not isinstance(before, (int, float)) or before == 0:
        return False
    change = (value - before) / abs(before)
    return change < -SLIP_FRACTION if column.higher_is_better else change > SLIP_FRACTION


def _cell(column: Column, value: Any, slipped: bool) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.{column.digits}f}"
    else:
        text = str(value)
    return f"**{text} slip**" if slipped else text


def _load(results: dict[str, Any]) -> str:
    before, after = results.get("load_average_before"), results.get("load_average_after")
    if not before or not after:
        return "not recorded"
    return f"{before[0]:.1f} / {after[0]:.1f}"


def render_markdown(entries: Sequence[dict[str, Any]]) -> str:
    """The history as a Markdown table, oldest first, slips in bold."""
    lines = [
        "# Bench history",
        "",
        "Generated by `python -m ftui bench-history` from `docs/bench-history.jsonl` (one `bench --json` result",
        "per line; do not edit this file by hand). Ratios are ours / reference measured in the same run, so",
        "they compare across days; **slip** marks a ratio worse than the previous entry on the same machine,",
        f"backbone, epochs and batch by more than {SLIP_FRACTION:.0%}. Load is the 1-minute load average",
        "before / after the bench (2 cores: above ~2 other work was sharing the machine).",
        "",
    ]
    header = ["date", "release", "commit", "machine", "load", *(c.label for c in COLUMNS), "note"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    previous: dict[tuple, dict[str, Any]] = {}
    for entry in entries:
        r, key = entry["results"], _machine(entry)
        before = previous.get(key, {})
        cells = [_cell(c, r.get(c.key), _slipped(c, r.get(c.key), before.get(c.key))) for c in COLUMNS]
        machine = f"{r.get('device_name') or r.get('cpu_model') or r.get('device')}, {r.get('threads')} threads, " \
                  f"{r.get('backbone')}, {r.get('epochs')} epochs, batch {r.get('batch_size')}"
        row = [entry.get("date", ""), entry.get("release", ""), entry.get("commit") or "-", machine, _load(r),
               *cells, (entry.get("note") or "").replace("|", "/")]
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
        previous[key] = r
    return "\n".join(lines) + "\n"


def write_markdown(history: Path, markdown: Path) -> str:
    """Render the history file into `markdown`; returns the text."""
    text = render_markdown(read_history(history))
    markdown.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(markdown, text.encode("utf-8"))
    return text


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench-history` subcommand's flags."""
    parser.add_argument("results", nargs="*", help="`bench --json` outputs to append ('-' reads stdin); none: "
                                                    "render only")
    parser.add_argument("--history", type=Path, default=DEFAULT_HISTORY, help="the JSON-lines history file")
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN, help="the rendered table")
    parser.add_argument("--release", default=None, help="the release measured (default: ftui.__version__)")
    parser.add_argument("--note", default="", help="what else to know: load, machine, what changed")


def run_cli(args: argparse.Namespace) -> int:
    """Append the given results (if any), then render the table; prints the table's path and row count."""
    from ftui import __version__

    if args.results:
        commit = git_commit()
        entries = [make_entry(load_results(s), args.release or __version__, args.note, commit)
                   for s in args.results]
        append_entries(args.history, entries)
    text = write_markdown(args.history, args.markdown)
    rows = sum(1 for line in text.splitlines() if line.startswith("| ") and not line.startswith("| date"))
    print(f"{args.markdown}: {rows} entries from {args.history}")
    return 0
