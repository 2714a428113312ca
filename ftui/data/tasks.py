"""What a dataset asks: one class per image (classification), a set of labels (multilabel) or numbers
(regression). Detected from a CSV's columns, overridable; targets parsed with errors that name the row; and the
train/val splits each task needs (label combinations / value quantiles kept in both splits).

CSV layouts (paths relative to the CSV's folder, an optional split column as for classification):
- multilabel: `path,labels` with labels separated by ";" (an empty cell: no label), or one 0/1 column per label;
- regression: `path,value` or several numeric columns (one output each);
- classification: `path,label` as before (a `label`/`class` column of numbers stays classification unless asked).
A folder of class folders whose names are all numbers is regression when asked (task="regression").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ftui.data.splits import move_share_to_val
from ftui.errors import FtuiError

CLASSIFICATION, MULTILABEL, REGRESSION = "classification", "multilabel", "regression"
TASKS = (CLASSIFICATION, MULTILABEL, REGRESSION)
AUTO = "auto"
LABEL_SEPARATOR = ";"
# Separators people use instead of ";" (a cell holding one of them is refused, never silently one label).
_OTHER_SEPARATORS = (",", "|", "/")
_SET_COLUMNS = ("labels", "tags")
_CLASS_COLUMNS = ("label", "class", "category", "target")
_NOT_TARGETS = ("path", "file", "filename", "filepath", "file_path", "image", "image_path", "split", "subset")
# Regression splits stratify on this many value quantiles at most.
MAX_VALUE_BINS = 10


class TaskError(FtuiError):
    """A dataset's targets ftui cannot use for the asked task; the message names the row and what to fix."""


@dataclass(frozen=True)
class TaskSpec:
    """How a CSV's columns make targets: the task, the target columns and (multilabel) their layout."""

    task: str
    columns: tuple[str, ...]  # the label-set column, the 0/1 columns, the value columns or the class column
    layout: str = ""  # multilabel: "set" (one ;-separated column) or "binary" (one 0/1 column per label)


def check_task(task: str | None) -> str:
    """`task` as one of TASKS or AUTO (None -> AUTO); anything else raises TaskError."""
    task = (task or AUTO).strip().lower().replace("-", "").replace("_", "")
    aliases = {"multilabel": MULTILABEL, "regression": REGRESSION, "classification": CLASSIFICATION,
               "singlelabel": CLASSIFICATION, "auto": AUTO}
    if task not in aliases:
        raise TaskError(f"unknown task {task!r}: use one of {', '.join(TASKS)} (or auto)")
    return aliases[task]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric_column(values: Sequence[str]) -> bool:
    """Numbers in at least 90% of the filled cells: a column of values with a typo is still a value column
    (parse_targets then names the row), a column of names is not."""
    filled = [v for v in values if v != ""]
    return bool(filled) and sum(_is_number(v) for v in filled) >= 0.9 * len(filled)


def _binary_column(values: Sequence[str]) -> bool:
    return bool(values) and all(v.strip() in ("0", "1", "0.0", "1.0") for v in values)


def detect_csv_task(table: pd.DataFrame, path_column: str, requested: str | None = None) -> TaskSpec:
    """The task a CSV's columns describe (or `requested`, checked against them)."""
    requested = check_task(requested)
    columns = {str(c).strip().lower(): c for c in table.columns}
    targets = [c for name, c in columns.items() if name not in _NOT_TARGETS and c != path_column]
    set_col = next((columns[c] for c in _SET_COLUMNS if c in columns), None)
    class_col = next((columns[c] for c in _CLASS_COLUMNS if c in columns), None)
    values = {c: [str(v).strip() for v in table[c]] for c in targets}
    binary = [c for c in targets if c not in (set_col, class_col) and _binary_column(values[c])]
    numeric = [c for c in targets if c not in (set_col, class_col) and _numeric_column(values[c])]
    if requested == MULTILABEL:
        if set_col is not None or class_col is not None:
            return TaskSpec(MULTILABEL, (set_col if set_col is not None else class_col,), "set")
        if targets:  # one 0/1 column per label (a bad cell is named by parse_targets)
            return TaskSpec(MULTILABEL, tuple(targets), "binary")
        raise TaskError("a multilabel CSV needs a 'labels' column (labels separated by ';') or one 0/1 column "
                        f"per label (found: {', '.join(map(str, table.columns))})")
    if requested == REGRESSION:
        only = [c for c in targets if c != set_col]
        chosen = numeric or ([class_col] if class_col is not None else only if len(only) == 1 else [])
        if not chosen:
            raise TaskError("a regression CSV needs a column of numbers, e.g. path,value (found: "
                            f"{', '.join(map(str, table.columns))})")
        return TaskSpec(REGRESSION, tuple(chosen))
    if requested == CLASSIFICATION:
        return TaskSpec(CLASSIFICATION, (class_col,) if class_col is not None else ())
    # Auto: a label-set column or ";" in the class column is multilabel; a class column stays classification;
    # else 2+ 0/1 columns are multilabel and numeric columns are regression.
    if set_col is not None:
        return TaskSpec(MULTILABEL, (set_col,), "set")
    if class_col is not None:
        if any(LABEL_SEPARATOR in v for v in values.get(class_col, [])):
            return TaskSpec(MULTILABEL, (class_col,), "set")
        return TaskSpec(CLASSIFICATION, (class_col,))
    if len(binary) >= 2:
        return TaskSpec(MULTILABEL, tuple(binary), "binary")
    if numeric:
        return TaskSpec(REGRESSION, tuple(numeric))
    return TaskSpec(CLASSIFICATION, ())


@dataclass
class ParsedTargets:
    """Per CSV row: its target (None: skipped, reason in `reasons`); `names` are the outputs' names."""

    names: list[str]
    targets: list[tuple[float, ...] | None]
    reasons: list[str | None]


def parse_targets(table: pd.DataFrame, spec: TaskSpec, csv_name: str, first_row: int = 2) -> ParsedTargets:
    """The targets of every row of a multilabel or regression CSV; a bad cell raises TaskError naming it."""
    if spec.task == MULTILABEL and spec.layout == "set":
        return _label_sets(table[spec.columns[0]], csv_name, first_row)
    if spec.task == MULTILABEL:
        return _binary_columns(table, spec.columns, csv_name, first_row)
    if spec.task == REGRESSION:
        return _values(table, spec.columns, csv_name, first_row)
    raise TaskError(f"parse_targets is for multilabel and regression, not {spec.task}")


def _label_sets(column: pd.Series, csv_name: str, first_row: int) -> ParsedTargets:
    sets: list[list[str]] = []
    for row, cell in enumerate(column, start=first_row):
        text = str(cell).strip()
        if LABEL_SEPARATOR not in text:
            other = next((s for s in _OTHER_SEPARATORS if s in text), None)
            if other is not None:
                raise TaskError(f"{csv_name} row {row}: labels {text!r} look separated by {other!r}; separate "
                                f"labels with {LABEL_SEPARATOR!r} (e.g. cat;dog)")
        sets.append(sorted({part.strip() for part in text.split(LABEL_SEPARATOR) if part.strip()}))
    names = sorted({name for labels in sets for name in labels})
    if not names:
        raise TaskError(f"{csv_name}: every row's label set is empty: a multilabel CSV needs labels "
                        f"(separated by {LABEL_SEPARATOR!r}) on at least some rows")
    index = {name: i for i, name in enumerate(names)}
    targets = []
    for labels in sets:
        vector = [0.0] * len(names)
        for name in labels:
            vector[index[name]] = 1.0
        targets.append(tuple(vector))
    return ParsedTargets(names, targets, [None] * len(targets))


def _binary_columns(table: pd.DataFrame, columns: tuple[str, ...], csv_name: str, first_row: int) -> ParsedTargets:
    targets = []
    for row, cells in enumerate(zip(*(table[c] for c in columns)), start=first_row):
        vector = []
        for column, cell in zip(columns, cells):
            text = str(cell).strip()
            if text not in ("0", "1", "0.0", "1.0"):
                raise TaskError(f"{csv_name} row {row}: column {column!r} holds {text!r}; a label column holds "
                                "1 (the image has the label) or 0")
            vector.append(float(text))
        targets.append(tuple(vector))
    if not any(any(t) for t in targets):
        raise TaskError(f"{csv_name}: no row has any label (every 0/1 column is 0 everywhere)")
    return ParsedTargets([str(c) for c in columns], targets, [None] * len(targets))


def _values(table: pd.DataFrame, columns: tuple[str, ...], csv_name: str, first_row: int) -> ParsedTargets:
    targets: list[tuple[float, ...] | None] = []
    reasons: list[str | None] = []
    for row, cells in enumerate(zip(*(table[c] for c in columns)), start=first_row):
        texts = [str(cell).strip() for cell in cells]
        if any(t == "" for t in texts):
            targets.append(None)
            reasons.append("no value")
            continue
        vector = []
        for column, text in zip(columns, texts):
            try:
                value = float(text)
            except ValueError:
                raise TaskError(f"{csv_name} row {row}: {text!r} in column {column!r} is not a number") from None
            if not math.isfinite(value):
                raise TaskError(f"{csv_name} row {row}: {text!r} in column {column!r} is not a finite number; "
                                "give a value or leave the cell empty to skip the image")
            vector.append(value)
        targets.append(tuple(vector))
        reasons.append(None)
    check_values([t for t in targets if t is not None], [str(c) for c in columns], csv_name)
    return ParsedTargets([str(c) for c in columns], targets, reasons)


def check_values(targets: Sequence[tuple[float, ...]], names: Sequence[str], where: str) -> None:
    """Refuse a regression output with fewer than 2 distinct values (nothing to learn, R² undefined)."""
    for k, name in enumerate(names):
        distinct = {t[k] for t in targets}
        if len(distinct) < 2:
            seen = f"only {next(iter(distinct)):g}" if distinct else "no values"
            raise TaskError(f"{where}: column {name!r} has {seen}; regression needs at least 2 distinct values")


def folder_values(class_names: Sequence[str], where: str) -> dict[str, float]:
    """Regression from class folders named by numbers ("0", "2.5", "-10"): folder name -> value."""
    values = {}
    for name in class_names:
        try:
            value = float(name)
        except ValueError:
            raise TaskError(f"{where}: folder {name!r} is not a number; for regression from folders every "
                            "class folder must be named by its value (e.g. 0/, 1.5/, 10/)") from None
        if not math.isfinite(value):
            raise TaskError(f"{where}: folder {name!r} is not a finite number")
        values[name] = value
    check_values([(v,) for v in values.values()], ["folder name"], where)
    return values


# --- splits ----------------------------------------------------------------------------------------------
def multilabel_strata(items: Sequence, val_fraction: float) -> list[str]:
    """A stratum per item: its label combination when that combination has enough images for at least one
    val image at `val_fraction`, else "rare" (combinations too small to split are pooled and split together)."""
    keys = ["".join("1" if v else "0" for v in item.target) for item in items]
    counts = defaultdict(int)
    for key in keys:
        counts[key] += 1
    return [key if counts[key] * val_fraction >= 1 else "rare" for key in keys]


def value_strata(items: Sequence, val_fraction: float) -> list[str]:
    """A stratum per item: its value's quantile bin (of the first output); each bin holds about 2/val_fraction
    items, so rounding each bin's val share stays close to the asked fraction."""
    n = len(items)
    bins = max(1, min(MAX_VALUE_BINS, int(n * val_fraction / 2)))
    order = sorted(range(n), key=lambda i: (items[i].target[0], items[i].path))
    strata = [""] * n
    for rank, i in enumerate(order):
        strata[i] = f"q{rank * bins // n}"
    return strata


def split_by_strata(items: Sequence, strata: Sequence[str], val_fraction: float, seed: int) -> list:
    """Move a seeded `val_fraction` of each stratum's train items to val (copies of one image stay together).
    Items are anything with .path and .split (dataclasses: `replace` makes the val copies)."""
    result = [item for item in items if item.split != "train"]
    by_stratum: dict[str, list] = defaultdict(list)
    for item, stratum in zip(items, strata):
        if item.split == "train":
            by_stratum[stratum].append(item)
    for stratum in sorted(by_stratum):
        result += move_share_to_val(by_stratum[stratum], str(stratum), seed, val_fraction)
    return result


def split_task_items(items: Sequence, task: str, val_fraction: float, seed: int) -> list:
    """The train/val split for a multilabel or regression dataset (strata from the train items)."""
    train = [item for item in items if item.split == "train"]
    strata = (multilabel_strata(train, val_fraction) if task == MULTILABEL else value_strata(train, val_fraction))
    rest = [item for item in items if item.split != "train"]
    return split_by_strata(train, strata, val_fraction, seed) + rest


def target_text(task: str, names: Sequence[str], target: Sequence[float]) -> str:
    """A target as a person reads it: a label set ('cat;dog', '(no label)') or the value(s) ('12.5')."""
    if task == MULTILABEL:
        return LABEL_SEPARATOR.join(n for n, t in zip(names, target) if t) or "(no label)"
    return ", ".join(f"{v:g}" for v in target)
