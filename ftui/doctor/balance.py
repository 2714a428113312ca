"""Unreadable files and class balance: the checks that need no pixels beyond 'did it decode'."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ftui.data.images import has_image_extension
from ftui.doctor.report import CheckResult
from ftui.doctor.scan import ImageRecord
from ftui.stats import counted

SPLIT_ORDER = ("train", "val", "test")
LEVEL_ORDER = {"error": 0, "warning": 1, "info": 2, "ok": 3}
# Reasons the dataset loader gives for files it left out because of where they are, not what they are.
LAYOUT_REASONS = ("not inside a class folder", "not under train/")


@dataclass
class BalanceLimits:
    """Per-class counts below which a class is too small to learn or to validate."""

    min_train: int = 10
    min_val: int = 3
    # Largest/smallest train class at or above this: suggest the class-weighted loss.
    max_imbalance: float = 3.0


def _skip_level(path: str, reason: str) -> str:
    """An image that failed to decode is an error; an image left out by the layout is a warning;
    anything else (notes, CSV rows) is info."""
    if not has_image_extension(path):
        return "info"
    return "warning" if reason.startswith(LAYOUT_REASONS) else "error"


def _where(path: str, classes: list[str]) -> tuple[str, str]:
    """(label, split) read off a skipped file's folders, '' where they say nothing."""
    parent = Path(path).parent
    label = parent.name if parent.name in classes else ""
    split = parent.parent.name.lower() if label and parent.parent.name.lower() in SPLIT_ORDER else ""
    return label, split


def check_unreadable(records: list[ImageRecord], classes: list[str],
                     skipped: list[tuple[str, str]] = ()) -> CheckResult:
    """Files that cannot be decoded (with the reason), including those the dataset loader skipped.

    Non-image files are listed as info (never images); images outside the layout as warnings.
    """
    rows = [{"path": r.path, "label": classes[r.label], "split": r.split, "level": "error", "issue": r.reason}
            for r in records if not r.ok]
    rows += [{"path": path, "label": _where(path, classes)[0], "split": _where(path, classes)[1],
              "level": _skip_level(path, reason), "issue": reason} for path, reason in skipped]
    table = pd.DataFrame(rows, columns=["path", "label", "split", "level", "issue"])
    table = table.sort_values("level", key=lambda s: s.map(LEVEL_ORDER), kind="stable").reset_index(drop=True)
    counts = table["level"].value_counts()
    errors, ignored = int(counts.get("error", 0)), int(counts.get("warning", 0))
    notes = int(counts.get("info", 0))
    tail = "".join([f"; {counted(ignored, 'image')} outside the class folders, not used" if ignored else "",
                    f"; {counted(notes, 'non-image file')} ignored" if notes else ""])
    if not errors:
        severity = "warning" if ignored else "ok"
        suggestions = ["move images left outside the layout into a class folder"] if ignored else []
        return CheckResult("unreadable", severity, f"all {len(records)} images decode{tail}", table,
                           suggestions=suggestions)
    reasons = table.loc[table["level"] == "error", "issue"].value_counts()
    summary = f"{errors} unusable image file{'s' if errors > 1 else ''}: " + ", ".join(
        f"{n} {reason}" for reason, n in reasons.items()) + tail
    return CheckResult("unreadable", "error", summary, table, stats={"reasons": reasons.to_dict()},
                       suggestions=["delete or replace these files; training skips them"])


def class_counts(records: list[ImageRecord], classes: list[str]) -> pd.DataFrame:
    """Readable images per class (rows) and split (columns), plus a total column."""
    splits = [s for s in SPLIT_ORDER if any(r.split == s for r in records)]
    splits += sorted({r.split for r in records} - set(splits))
    counts = pd.DataFrame(0, index=pd.Index(classes, name="class"), columns=splits, dtype=int)
    for r in records:
        if r.ok:
            counts.loc[classes[r.label], r.split] += 1
    counts["total"] = counts.sum(axis=1)
    return counts


def check_balance(records: list[ImageRecord], classes: list[str],
                  limits: BalanceLimits | None = None) -> CheckResult:
    """Counts per class and split, the imbalance ratio, and classes too small to learn or validate."""
    limits = limits or BalanceLimits()
    counts = class_counts(records, classes)
    train_col = "train" if "train" in counts.columns else "total"
    train = counts[train_col]
    issues: dict[str, list[tuple[str, str]]] = {c: [] for c in classes}
    if len(classes) < 2:
        summary = f"only {len(classes)} class: a classifier needs at least two"
        table = counts.reset_index().assign(level="error", issue="needs a second class")
        return CheckResult("balance", "error", summary, table)
    for name in classes:
        n = int(train[name])
        if n == 0:
            issues[name].append(("error", "no training images"))
        elif n < limits.min_train:
            issues[name].append(("warning", f"only {counted(n, 'training image')}: too few to learn"))
        if "val" in counts.columns and int(counts.loc[name, "val"]) < limits.min_val:
            issues[name].append(("warning", (f"only {counted(int(counts.loc[name, 'val']), 'validation image')}: "
                                            "too few to measure")))
    nonzero = train[train > 0]
    ratio = float(nonzero.max() / nonzero.min()) if len(nonzero) else float("nan")
    table = counts.reset_index()
    table["share"] = (table["total"] / max(int(table["total"].sum()), 1)).round(3)
    table["level"] = [max((lv for lv, _ in issues[c]), key=("ok", "warning", "error").index, default="ok")
                      for c in table["class"]]
    table["issue"] = ["; ".join(text for _, text in issues[c]) for c in table["class"]]
    suggestions = []
    severity = "ok"
    if (table["level"] == "error").any():
        severity = "error"
    elif (table["level"] == "warning").any():
        severity = "warning"
    if ratio >= limits.max_imbalance:
        severity = "error" if severity == "error" else "warning"
        suggestions.append(f"imbalance {ratio:.1f}:1 - turn on the class-weighted loss "
                           "(TrainConfig.class_weighted_loss) or collect more of the small classes")
    if any(text for c in classes for lv, text in issues[c] if "training" in text):
        suggestions.append(f"aim for at least {limits.min_train} training images per class")
    spread = (f"largest {train.idxmax()} {int(train.max())} / smallest {train.idxmin()} {int(train.min())}"
              if train.max() != train.min() else f"{int(train.max())} each")
    summary = (f"{len(classes)} classes, {int(counts['total'].sum())} images, "
               f"imbalance {ratio:.1f}:1 ({spread} in {train_col})")
    flagged = int((table["level"] != "ok").sum())
    if flagged:
        summary += f"; {flagged} class{'es' if flagged > 1 else ''} too small"
    stats = {"imbalance_ratio": ratio, "counts": {c: counts.loc[c].to_dict() for c in classes},
             "split_column": train_col}
    return CheckResult("balance", severity, summary, table, stats=stats, suggestions=suggestions)
