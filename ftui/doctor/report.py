"""The doctor's report: one result per check, renderable as text, JSON-ready dict or pandas frames."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ftui.errors import FtuiError

SEVERITIES = ("ok", "warning", "error")
# Row levels inside a check's table; "info" rows are worth knowing but need no action.
LEVELS = ("info", "warning", "error")


class DoctorError(FtuiError):
    """The doctor cannot run on this input; the message says what to change."""


@dataclass
class CheckResult:
    """One check: how bad (ok | warning | error), a one-line summary, and the rows behind it."""

    name: str
    severity: str
    summary: str
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Aggregate numbers (distributions, counts) that are not per-file rows.
    stats: dict[str, Any] = field(default_factory=dict)
    # Things to do about it, in plain words.
    suggestions: list[str] = field(default_factory=list)
    # False when the check could not run (the summary says why).
    ran: bool = True

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of this check."""
        return {
            "name": self.name,
            "severity": self.severity,
            "summary": self.summary,
            "ran": self.ran,
            "suggestions": list(self.suggestions),
            "stats": _jsonable(self.stats),
            "rows": _jsonable(self.table.to_dict(orient="records")),
        }


@dataclass
class Report:
    """Everything the doctor found in one dataset."""

    source: str
    checks: list[CheckResult]
    classes: list[str] = field(default_factory=list)
    num_files: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per phase
    cpu_timings: dict[str, float] = field(default_factory=dict)  # process CPU seconds per phase
    # "classification", or "multilabel" / "regression" (then `classes` are the label / value names).
    task: str = "classification"

    @property
    def class_word(self) -> str:
        """What `classes` are: classes, labels (multilabel) or values (regression)."""
        return {"multilabel": "labels", "regression": "values"}.get(self.task, "classes")

    @property
    def status(self) -> str:
        """'errors' if any check failed, 'warnings' if any warned, else 'green'."""
        severities = {c.severity for c in self.checks}
        if "error" in severities:
            return "errors"
        if "warning" in severities:
            return "warnings"
        return "green"

    @property
    def exit_code(self) -> int:
        """1 when errors were found (a pipeline gate), else 0."""
        return 1 if self.status == "errors" else 0

    def check(self, name: str) -> CheckResult:
        """The result of the check called `name`."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r}; have {[c.name for c in self.checks]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the whole report."""
        return {
            "source": self.source,
            "task": self.task,
            "status": self.status,
            "classes": list(self.classes),
            "num_files": self.num_files,
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "cpu_timings": {k: round(v, 3) for k, v in self.cpu_timings.items()},
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_frames(self) -> dict[str, pd.DataFrame]:
        """One DataFrame per check (its rows), plus 'summary' with one row per check."""
        frames = {"summary": self.summary_frame()}
        for result in self.checks:
            frames[result.name] = result.table
        return frames

    def summary_frame(self) -> pd.DataFrame:
        """One row per check: name, severity, summary."""
        return pd.DataFrame(
            [{"check": c.name, "severity": c.severity, "summary": c.summary} for c in self.checks],
            columns=["check", "severity", "summary"],
        )

    def flagged(self, levels: tuple[str, ...] = ("warning", "error")) -> pd.DataFrame:
        """Every flagged file across checks: check, path, label, split, level, reason."""
        rows = []
        for result in self.checks:
            table = result.table
            if table.empty or "path" not in table.columns or "level" not in table.columns:
                continue
            for row in table.itertuples(index=False):
                if row.level in levels:
                    rows.append({
                        "check": result.name, "path": row.path, "label": getattr(row, "label", ""),
                        "split": getattr(row, "split", ""), "level": row.level, "reason": row.issue,
                    })
        return pd.DataFrame(rows, columns=["check", "path", "label", "split", "level", "reason"])

    def relative(self, path: str) -> str:
        """`path` relative to the dataset root when it lies inside it (shorter to read)."""
        try:
            return str(Path(path).relative_to(self.source))
        except ValueError:
            return str(path)

    def task_text(self) -> str:
        return "" if self.task == "classification" else f"{self.task}: "

    def to_text(self, max_rows: int = 15) -> str:
        """A compact, human-readable report: a header, then a short table per check."""
        mark = {"ok": "OK", "warning": "WARN", "error": "ERROR"}
        lines = [
            f"Dataset doctor: {self.source}",
            (f"{self.num_files} files, {self.task_text()}{len(self.classes)} {self.class_word} "
             f"({', '.join(self.classes)}), "
            f"checked in {self.seconds:.1f} s -> {self.status.upper()}"),
            "",
        ]
        for result in self.checks:
            # A check that did not run is not "OK": it says SKIP and why.
            shown_mark = mark[result.severity] if result.ran else "SKIP"
            lines.append(f"[{shown_mark:>5}] {result.name}: {result.summary}")
            for tip in result.suggestions:
                lines.append(f"        suggestion: {tip}")
            if not result.table.empty:
                shown = result.table.head(max_rows).copy()
                if "path" in shown.columns:
                    shown["path"] = shown["path"].map(self.relative)
                body = shown.to_string(index=False, max_colwidth=60)
                lines.extend("        " + line for line in body.splitlines())
                if len(result.table) > max_rows:
                    lines.append(f"        ... {len(result.table) - max_rows} more rows (use --json for all)")
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"


def _jsonable(value: Any) -> Any:
    """Numpy scalars, NaN and tuples turned into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value
