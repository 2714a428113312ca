"""Fixes for a dataset described by a CSV (path,label[,split]): the images stay where they are, the rows change.

The first fix copies `data.csv` to `data-edited.csv` next to it (the original is never written; relative paths
keep working, and the loader's rule that paths stay inside the CSV's folder still holds), and every later fix
edits that copy. Relabel changes a row's label, remove takes the row out, merge relabels every row of a class.
Each change is appended to a journal beside the copy (`.data-edited.csv.ftui-journal.jsonl`) with the rows
as they were; undo finds each row by its image path (the CSV may have been re-sorted or given a column since),
checks every row before changing any, and writes the CSV once. Called through `ftui.data.fixes`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ftui.errors import FtuiError
from ftui.runs import write_bytes_atomic

EDITED_SUFFIX = "-edited"


class CsvFixError(FtuiError):
    """A CSV fix that cannot be applied (ftui.data.fixes re-raises it as FixError)."""


def is_csv(root: str | Path) -> bool:
    return Path(root).suffix.lower() == ".csv" and Path(root).is_file()


def journal_path(csv: Path) -> Path:
    return csv.with_name(f".{csv.name}.ftui-journal.jsonl")


def edited_path(csv: str | Path) -> Path:
    """The edited copy of a CSV (the CSV itself when it is already one)."""
    csv = Path(csv).resolve()
    return csv if csv.stem.endswith(EDITED_SUFFIX) else csv.with_name(f"{csv.stem}{EDITED_SUFFIX}{csv.suffix}")


def prepare(csv: str | Path) -> tuple[Path, str]:
    """(edited copy to change, original it was copied from or ""): the copy is made on the first fix."""
    csv = Path(csv).resolve()
    target = edited_path(csv)
    if target == csv:
        return csv, ""
    if not target.is_file():
        if not os.access(csv.parent, os.W_OK):
            raise CsvFixError(f"the folder of {csv.name} is read-only: an edited copy must sit beside it "
                              "(its image paths are relative to it)")
        write_bytes_atomic(target, csv.read_bytes())
    return target, str(csv)


class Table:
    """The CSV as strings (cells written back exactly as read), with its path and label columns found."""

    def __init__(self, csv: Path):
        from ftui.data.datasets import _CSV_LABEL_COLUMNS, _CSV_PATH_COLUMNS, _pick_column

        self.csv = csv
        self.frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        columns = {str(c).strip().lower(): c for c in self.frame.columns}
        self.path_col = _pick_column(columns, _CSV_PATH_COLUMNS)
        self.label_col = _pick_column(columns, _CSV_LABEL_COLUMNS)
        if self.path_col is None or self.label_col is None:
            raise CsvFixError(f"{csv.name} needs a 'path' and a 'label' column")

    def row_of(self, image: str | Path) -> int:
        """Index of the row naming `image` (absolute, or as written in the CSV)."""
        base = self.csv.parent
        wanted = (base / Path(image)).resolve()
        for index, raw in self.frame[self.path_col].items():
            if raw.strip() and (base / Path(raw.strip()).expanduser()).resolve() == wanted:
                return int(index)
        raise CsvFixError(f"no row of {self.csv.name} names {image}")

    def rel(self, index: int) -> str:
        return self.frame.at[index, self.path_col].strip()

    def save(self) -> None:
        write_bytes_atomic(self.csv, self.frame.to_csv(index=False).encode("utf-8"))


def relabel(csv: Path, image: str | Path, new_class: str) -> tuple[list[tuple[str, str]], dict]:
    """Change one row's label; returns (moves for the journal's file column, extra journal fields)."""
    table = Table(csv)
    index = table.row_of(image)
    old = table.frame.at[index, table.label_col].strip()
    if old == new_class:
        raise CsvFixError(f"{table.rel(index)} is already labelled {new_class}")
    table.frame.at[index, table.label_col] = new_class
    table.save()
    return [(table.rel(index), table.rel(index))], {"to_class": new_class, "rows": [[index, old]]}


def remove(csv: Path, image: str | Path) -> tuple[list[tuple[str, str]], dict]:
    """Take one row out of the CSV (the image file stays); the journal keeps the row, by column, for undo."""
    table = Table(csv)
    index = table.row_of(image)
    rel, row = table.rel(index), table.frame.loc[index].tolist()
    table.frame = table.frame.drop(index=index).reset_index(drop=True)
    table.save()
    return [(rel, rel)], {"rows": [[index, row]], "columns": [str(c) for c in table.frame.columns]}


def merge(csv: Path, source_class: str, target_class: str) -> tuple[list[tuple[str, str]], dict]:
    """Relabel every row of `source_class` as `target_class`."""
    table = Table(csv)
    labels = table.frame[table.label_col].str.strip()
    indices = [int(i) for i in labels.index[labels == source_class]]
    if not indices:
        raise CsvFixError(f"no row of {csv.name} is labelled {source_class!r}")
    for index in indices:
        table.frame.at[index, table.label_col] = target_class
    table.save()
    moves = [(table.rel(i), table.rel(i)) for i in indices]
    return moves, {"from_class": source_class, "to_class": target_class,
                   "rows": [[i, source_class] for i in indices]}


def undo(csv: Path, entry: dict) -> list[tuple[str, str]]:
    """Put back the rows a journal entry changed (labels for relabel/merge, whole rows for remove), finding each
    row by its image path, never by position: the CSV may have been re-sorted or given a column since. Every
    row is checked before any is changed; the CSV is written once."""
    table = Table(csv)
    what = f"cannot undo {entry['op']} #{entry['id']}"
    paths = [src for src, _ in entry["moves"]]
    if len(paths) != len(entry.get("rows", [])):
        raise CsvFixError(f"{what}: its journal entry is damaged")
    if entry["op"] == "remove":
        _put_rows_back(table, entry, paths, what)
    else:
        targets = [_row_labelled(table, path, entry.get("to_class", ""), what) for path in paths]
        for index, (_, old) in zip(targets, entry["rows"]):
            table.frame.at[index, table.label_col] = old
    table.save()
    return [(src, src) for src in paths]


def _rows_naming(table: Table, path: str) -> list[int]:
    wanted = (table.csv.parent / Path(path)).resolve()
    return [int(i) for i, raw in table.frame[table.path_col].items()
            if raw.strip() and (table.csv.parent / Path(raw.strip()).expanduser()).resolve() == wanted]


def _row_labelled(table: Table, path: str, label: str, what: str) -> int:
    """The row naming `path` that still carries the label the change gave it."""
    for index in _rows_naming(table, path):
        if table.frame.at[index, table.label_col].strip() == label:
            return index
    raise CsvFixError(f"{what}: no row of {table.csv.name} names {path} with the label {label!r} any more "
                      "(edited by hand since?); nothing was changed")


def _put_rows_back(table: Table, entry: dict, paths: list[str], what: str) -> None:
    """Re-insert removed rows, cell by column name (a column added since is left empty)."""
    columns = [str(c) for c in table.frame.columns]
    rows = []
    for path, (index, row) in zip(paths, entry["rows"]):
        if _rows_naming(table, path):
            raise CsvFixError(f"{what}: {path} is in {table.csv.name} again; nothing was changed")
        named = entry.get("columns") or columns  # older journals kept no names: same columns, same order
        if len(named) != len(row) or not set(named) <= set(columns):
            raise CsvFixError(f"{what}: the columns of {table.csv.name} changed since ({', '.join(columns)}); "
                              "nothing was changed")
        cells = dict(zip(named, row))
        rows.append((int(index), [cells.get(c, "") for c in columns]))
    for index, cells in sorted(rows):
        index = min(max(index, 0), len(table.frame))
        top, rest = table.frame.iloc[:index], table.frame.iloc[index:]
        table.frame = pd.concat([top, pd.DataFrame([cells], columns=table.frame.columns), rest],
                                ignore_index=True)
