"""Finding images and their labels: class folders, train/val[/test] folders, a .zip of either, or a CSV.

Every file is judged once (decoded in full by `ftui.data.images`); unusable files are kept aside with their
reason instead of breaking anything. Problems a user must fix raise `DatasetError` saying what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ftui.data import tasks
from ftui.data.images import check_image, is_ignored
from ftui.data.splits import move_share_to_val
from ftui.errors import FtuiError

SPLITS = ("train", "val", "test")
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "test": "test", "testing": "test"}
_CSV_PATH_COLUMNS = ("path", "file", "filename", "filepath", "file_path", "image", "image_path")
_CSV_LABEL_COLUMNS = ("label", "class", "category", "target")
MAX_ZIP_FILES = 100_000
MAX_ZIP_BYTES = 4 * 1024**3
# A zip may unpack to at most this many times its own size (but always to MIN_BOMB_BYTES).
MAX_ZIP_RATIO = 100
MIN_BOMB_BYTES = 64 * 1024**2


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
_EXTRACTED_MARKER = ".ftui-extracted.json"

Progress = Callable[[float, str], None]


class DatasetError(FtuiError):
    """A dataset ftui cannot train on; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Item:
    """One usable image: its file, class index and split ("train", "val" or "test").

    Multilabel and regression items carry `target` (0/1 per label, or the values) and label 0."""

    path: str
    label: int
    split: str
    target: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Skipped:
    """A file left out of the dataset, and why."""

    path: str
    reason: str


@dataclass
class Dataset:
    """Usable images with labels and splits, plus the files that were skipped."""

    classes: list[str]
    items: list[Item]
    skipped: list[Skipped] = field(default_factory=list)
    root: str = ""
    split_was_generated: bool = False
    # "classification", "multilabel" (classes: the label names) or "regression" (classes: the value names).
    task: str = tasks.CLASSIFICATION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def splits(self) -> list[str]:
        """The splits that hold at least one image, in train/val/test order."""
        present = {item.split for item in self.items}
        return [name for name in SPLITS if name in present]

    def split(self, name: str) -> list[Item]:
        """The items of one split, in a stable order."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}: use one of {', '.join(SPLITS)}")
        return [item for item in self.items if item.split == name]

    def class_counts(self, split: str) -> list[int]:
        """Number of images per class (in `classes` order) in one split; multilabel: images with each label;
        regression: images with each value."""
        if self.task != tasks.CLASSIFICATION:
            rows = [item.target for item in self.split(split)]
            if self.task == tasks.REGRESSION:
                return [len(rows)] * len(self.classes)
            return [int(sum(row[k] for row in rows)) for k in range(len(self.classes))]
        counts = Counter(item.label for item in self.split(split))
        return [counts.get(i, 0) for i in range(len(self.classes))]

    def summary(self) -> pd.DataFrame:
        """One row per class, a column of image counts per split, and their total."""
        table = pd.DataFrame({"class": self.classes})
        for name in self.splits:
            table[name] = self.class_counts(name)
        table["total"] = table[self.splits].sum(axis=1) if self.splits else 0
        return table

    def skipped_table(self) -> pd.DataFrame:
        """The skipped files (paths relative to the dataset root where possible) and the reasons."""
        rows = [(self._relative(s.path), s.reason) for s in self.skipped]
        return pd.DataFrame(rows, columns=["path", "reason"])

    def _relative(self, path: str) -> str:
        try:
            return str(Path(path).relative_to(self.root)) if self.root else path
        except ValueError:
            return path


@dataclass
class _Candidate:
    """A file found by a layout, before judging: where it is and what it claims to be."""

    path: Path
    class_name: str
    split: str | None  # None: to be assigned by the generated train/val split
    target: tuple[float, ...] | None = None  # multilabel / regression


def load_dataset(
    source: str | Path,
    val_fraction: float = 0.2,
    seed: int = 0,
    workdir: str | Path | None = None,
    progress: Progress | None = None,
    allowed_root: str | Path | None = None,
    extract_limit: int | None = None,
    task: str | None = None,
) -> Dataset:
    """Find, judge and split the images of a folder, .zip or .csv dataset; raise DatasetError if unusable.

    `allowed_root` confines what a folder's links and a CSV's paths may reach; `extract_limit` caps the bytes
    a zip may unpack to (the app passes what is left of its work-dir quota). `task`: None/"auto" (a CSV's
    columns decide, ftui/data/tasks.py; folders are classification), or one of tasks.TASKS.
    """
    task = _checked_task(task)
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    path = Path(source).expanduser()
    if not str(source).strip() or not path.exists():
        raise DatasetError(f"dataset not found: {str(source)!r}; give a folder, a .zip or a .csv file")
    skipped: list[Skipped] = []
    # A server that confines reads to allowed_root must not follow a link in the dataset out of it.
    confine = Path(allowed_root).expanduser().resolve() if allowed_root else None
    if path.is_dir():
        root, candidates, layout_skips, class_folders = _scan_folder(path, confine)
    elif path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        limit = MAX_ZIP_BYTES if extract_limit is None else min(MAX_ZIP_BYTES, extract_limit)
        extracted = _extract_cached(path, workdir, skipped, limit)
        root, candidates, layout_skips, class_folders = _scan_folder(extracted)
    elif path.suffix.lower() == ".csv":
        root, candidates, layout_skips, names, task = _read_csv(path, allowed_root, task)
        class_folders = {}
    else:
        raise DatasetError(f"{path.name} is not a dataset: give a folder of class folders, a .zip or a .csv")
    skipped.extend(layout_skips)
    if path.suffix.lower() != ".csv":
        task, candidates, names = _folder_task(task, candidates, class_folders, root)

    reasons = _judge([c.path for c in candidates], progress)
    usable = [c for c, reason in zip(candidates, reasons) if reason is None]
    bad = [(c, reason) for c, reason in zip(candidates, reasons) if reason is not None]
    skipped.extend(Skipped(str(c.path), reason) for c, reason in bad)

    if task != tasks.CLASSIFICATION:
        return _task_dataset(task, names, root, usable, bad, skipped, val_fraction, seed)
    _check_usable(root, candidates, usable, bad, class_folders)
    classes = sorted({c.class_name for c in usable if c.split in (None, "train")})
    index = {name: i for i, name in enumerate(classes)}
    items = [Item(str(c.path), index[c.class_name], c.split or "train") for c in usable]
    generated = not any(item.split == "val" for item in items)
    if generated:
        items = split_train_val(items, classes, val_fraction, seed)
    return Dataset(classes=classes, items=items, skipped=skipped, root=str(root), split_was_generated=generated)


def _checked_task(task: str | None) -> str:
    try:
        return tasks.check_task(task)
    except tasks.TaskError as exc:
        raise DatasetError(str(exc)) from None


def _folder_task(task: str, candidates: list[_Candidate], class_folders: dict[str | None, list[str]],
                 root: Path) -> tuple[str, list[_Candidate], list[str]]:
    """(task, candidates, output names) of a folder layout: classification, or regression when asked (class
    folders named by numbers); a folder cannot say which several labels an image has."""
    if task in (tasks.AUTO, tasks.CLASSIFICATION):
        return tasks.CLASSIFICATION, candidates, []
    if task == tasks.MULTILABEL:
        raise DatasetError("a folder of class folders cannot give an image several labels: for multilabel, "
                           "give a CSV of path,labels with labels separated by ';'")
    names = sorted({name for folder_names in class_folders.values() for name in folder_names})
    try:
        values = tasks.folder_values(names, str(root))
    except tasks.TaskError as exc:
        raise DatasetError(str(exc)) from None
    return task, [_Candidate(c.path, "", c.split, (values[c.class_name],)) for c in candidates], ["value"]


def _task_dataset(task: str, names: list[str], root: Path, usable: list[_Candidate],
                  bad: list[tuple[_Candidate, str]], skipped: list[Skipped], val_fraction: float,
                  seed: int) -> Dataset:
    """A multilabel or regression Dataset from the judged candidates (split by label sets / value quantiles)."""
    if not usable and not bad:
        raise DatasetError(f"no image files listed in {root}")
    if not usable:
        raise DatasetError(f"no usable images in {root}: all {len(bad)} files were skipped "
                           f"({_reason_counts([r for _, r in bad])})")
    items = [Item(str(c.path), 0, c.split or "train", c.target) for c in usable]
    train = [item.target for item in items if item.split == "train"]
    try:
        if task == tasks.REGRESSION:
            tasks.check_values(train, names, f"{root} (usable train images)")
    except tasks.TaskError as exc:
        raise DatasetError(str(exc)) from None
    if task == tasks.MULTILABEL and not any(any(t) for t in train):
        raise DatasetError(f"no usable train image has a label in {root}: give some images labels")
    if len(train) < 2:
        raise DatasetError(f"only {len(train)} usable train image: training needs at least 2")
    generated = not any(item.split == "val" for item in items)
    if generated:
        items = tasks.split_task_items(items, task, val_fraction, seed)
    items.sort(key=lambda item: (SPLITS.index(item.split), item.path))
    return Dataset(classes=list(names), items=items, skipped=skipped, root=str(root),
                   split_was_generated=generated, task=task)


# Fewer val images than this in a class and its recall is a coin toss: 4/4 is a 95% interval of [0.51, 1].
MIN_VAL_PER_CLASS = 5


def class_size_warnings(dataset: Dataset) -> list[str]:
    """Refuse a class with fewer than 2 images in all (nothing to both train and check on); warn, one line
    per class, when a class has fewer than MIN_VAL_PER_CLASS val images (its accuracy means little)."""
    if dataset.task == tasks.REGRESSION:  # the values were checked when read (2+ distinct, all finite)
        return []
    word, metric = ("label", "average precision") if dataset.task == tasks.MULTILABEL else ("class", "accuracy")
    totals = [sum(dataset.class_counts(s)[i] for s in dataset.splits) for i in range(len(dataset.classes))]
    tiny = [f"{name} ({n})" for name, n in zip(dataset.classes, totals) if n < 2]
    if tiny:
        raise DatasetError(f"{word} {', '.join(tiny)} has fewer than 2 images: a {word} needs at least one image "
                           f"to train on and one to check on. Add images to it or remove the {word}.")
    val = dataset.class_counts("val")
    return [f"warning: {word} {name!r} has only {n} val image{'s' if n != 1 else ''}: its {metric} is not "
            f"reliable (fewer than {MIN_VAL_PER_CLASS}); add images or raise the val fraction"
            for name, n in zip(dataset.classes, val) if n < MIN_VAL_PER_CLASS]


def split_train_val(items: list[Item], classes: list[str], val_fraction: float, seed: int) -> list[Item]:
    """Move a seeded, stratified `val_fraction` of each class's train items to val (>= 1 when a class has 2+)."""
    result = [item for item in items if item.split != "train"]
    for label, name in enumerate(classes):
        mine = [item for item in items if item.split == "train" and item.label == label]
        # Seeded per class by name, so adding a class or a file elsewhere leaves this class's split alone.
        result += move_share_to_val(mine, name, seed, val_fraction)
    return sorted(result, key=lambda item: (SPLITS.index(item.split), item.label, item.path))


# --- judging ---------------------------------------------------------------------------------------------
def _judge(paths: list[Path], progress: Progress | None, workers: int | None = None) -> list[str | None]:
    """Decode every file once, in a thread pool (PIL releases the GIL while decoding)."""
    if not paths:
        return []
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    reasons: list[str | None] = [None] * len(paths)
    step = max(1, len(paths) // 50)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(check_image, path): i for i, path in enumerate(paths)}
        for done, future in enumerate(as_completed(futures), start=1):
            reasons[futures[future]] = future.result()
            if progress and (done % step == 0 or done == len(paths)):
                progress(done / len(paths), f"checked {done}/{len(paths)} files")
    return reasons


def _check_usable(root: Path, candidates: list[_Candidate], usable: list[_Candidate],
                  bad: list[tuple[_Candidate, str]], class_folders: dict[str | None, list[str]]) -> None:
    """Raise DatasetError when the judged files cannot make a classification dataset."""
    if not candidates:
        raise DatasetError(f"no image files found in {root}: put images in one subfolder per class "
                           "(e.g. cats/, dogs/), or train/ and val/ folders of class subfolders")
    if not usable:
        raise DatasetError(f"no usable images in {root}: all {len(bad)} files were skipped "
                           f"({_reason_counts([r for _, r in bad])})")
    # (class, split) pairs that a folder or a CSV row names: each must end up with a usable image.
    named = {(c.class_name, c.split) for c in candidates}
    named |= {(name, split) for split, names in class_folders.items() for name in names}
    train_classes = {name for name, split in named if split in (None, "train")}
    if len(train_classes) < 2:
        found = ", ".join(repr(n) for n in sorted(train_classes))
        raise DatasetError(f"only one class ({found}) found: a classifier needs at least two classes, "
                           "one subfolder (or CSV label) each")
    for split in ("val", "test"):
        names = {name for name, s in named if s == split}
        extra, missing = sorted(names - train_classes), sorted(train_classes - names)
        # A test split may cover fewer classes; val must match train so every class is measured.
        if names and (extra or (split == "val" and missing)):
            parts = [f"missing from {split}: {', '.join(missing)}"] if missing and split == "val" else []
            parts += [f"not in train: {', '.join(extra)}"] if extra else []
            raise DatasetError(f"the {split} split's classes differ from train ({'; '.join(parts)}); "
                               f"give {split} the same class folders (or labels) as train")
    have = {(c.class_name, c.split) for c in usable}
    for name, split in sorted(named - have, key=lambda pair: (str(pair[1]), pair[0])):
        reasons = [r for c, r in bad if c.class_name == name and c.split == split]
        why = (f"{len(reasons)} files skipped ({_reason_counts(reasons)})" if reasons
               else "its folder holds no image files")
        where = f" in the {split} split" if split else ""
        raise DatasetError(f"class '{name}' has no usable image{where}: {why}")


def _reason_counts(reasons: list[str]) -> str:
    """'corrupt or truncated image x2, zero-byte file' from a list of reasons."""
    counts = Counter(reasons)
    return ", ".join(r if n == 1 else f"{r} x{n}" for r, n in counts.most_common())


# --- folders ---------------------------------------------------------------------------------------------
def _visible(folder: Path) -> tuple[list[Path], list[Path]]:
    """Sorted (subfolders, files) of a folder, leaving out hidden names and OS leftovers."""
    dirs, files = [], []
    for entry in sorted(folder.iterdir()):
        if is_ignored(entry.name):
            continue
        (dirs if entry.is_dir() else files).append(entry)
    return dirs, files


LINK_OUTSIDE = "link to outside the allowed folder, not followed"


def _inside(path: Path, confine: Path | None) -> bool:
    """True when `path`, links resolved, stays inside `confine` (always True without a confinement)."""
    if confine is None:
        return True
    try:
        return path.resolve().is_relative_to(confine)
    except (OSError, RuntimeError):
        return False


def _split_escaping(paths: list[Path], confine: Path | None, skipped: list[Skipped]) -> list[Path]:
    """The paths that stay inside `confine`; each one that leaves it is listed as skipped (its contents never)."""
    kept = []
    for p in paths:
        if _inside(p, confine):
            kept.append(p)
        else:
            skipped.append(Skipped(str(p), LINK_OUTSIDE))
    return kept


def _files_under(folder: Path, confine: Path | None = None, skipped: list[Skipped] | None = None) -> list[Path]:
    """Every visible file below `folder`, in sorted order (os.walk never descends into linked folders)."""
    found = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_ignored(d))
        found += [Path(current) / f for f in sorted(files) if not is_ignored(f)]
    return _split_escaping(found, confine, skipped if skipped is not None else [])


def _unwrap(folder: Path) -> Path:
    """Step into single wrapper folders (e.g. a zip of `mydata/`), stopping at train/val or class folders."""
    for _ in range(4):
        dirs, files = _visible(folder)
        if len(dirs) != 1 or files or dirs[0].name.lower() in _SPLIT_NAMES or not _visible(dirs[0])[0]:
            break
        folder = dirs[0]
    return folder


def _scan_folder(folder: Path, confine: Path | None = None,
                 ) -> tuple[Path, list[_Candidate], list[Skipped], dict[str | None, list[str]]]:
    """Candidates of a class-folder or train/val[/test] layout; returns (root, candidates, skips, classes)."""
    root = _unwrap(folder.resolve())
    if not _inside(root, confine):
        raise DatasetError(f"{folder} leads outside the folders this server may read")
    skipped: list[Skipped] = []
    dirs, files = (_split_escaping(found, confine, skipped) for found in _visible(root))
    by_split: dict[str, Path] = {}
    for d in dirs:
        split = _SPLIT_NAMES.get(d.name.lower())
        if split is None:
            continue
        if split in by_split:
            raise DatasetError(f"{root} has both {by_split[split].name}/ and {d.name}/: keep one {split} folder")
        by_split[split] = d
    if "train" not in by_split and set(by_split) & {"val", "test"}:
        raise DatasetError(f"{root} has {'/ and '.join(d.name for d in by_split.values())}/ but no train/ folder")
    if not dirs:
        raise DatasetError(f"no class folders in {root}: put images in one subfolder per class "
                           "(e.g. cats/, dogs/), or train/ and val/ folders of class subfolders")
    candidates: list[_Candidate] = []
    class_folders: dict[str | None, list[str]] = {}
    if by_split:
        for split, split_dir in by_split.items():
            class_dirs, loose = (_split_escaping(found, confine, skipped) for found in _visible(split_dir))
            class_folders[split] = [d.name for d in class_dirs]
            skipped += [Skipped(str(f), "not inside a class folder") for f in loose]
            for class_dir in class_dirs:
                candidates += [_Candidate(p, class_dir.name, split)
                               for p in _files_under(class_dir, confine, skipped)]
        outside = [d for d in dirs if d not in by_split.values()]
        skipped += [Skipped(str(f), "not under train/, val/ or test/") for d in outside
                    for f in _files_under(d, confine, skipped)]
    else:
        class_folders[None] = [d.name for d in dirs]
        for class_dir in dirs:
            candidates += [_Candidate(p, class_dir.name, None) for p in _files_under(class_dir, confine, skipped)]
    skipped += [Skipped(str(f), "not inside a class folder") for f in files]
    return root, candidates, skipped, class_folders


# --- CSV ---------------------------------------------------------------------------------------------------
def _no_rows_left(csv_path: Path, rows: int, skipped: list[Skipped]) -> None:
    """Raise the CSV's own message when none of its rows is usable: how many, why, and one example."""
    if not skipped:
        raise DatasetError(f"{csv_path.name} lists no images: add one row per image (path,label)")
    outside = any("outside" in s.reason for s in skipped)
    raise DatasetError(f"no row of {csv_path.name} names a usable image: all {rows} rows were left out "
                       f"({_reason_counts([s.reason for s in skipped])}; e.g. {skipped[0].path!r})"
                       + ("; every image must lie inside the CSV's folder" if outside else ""))


def _pick_column(columns: dict[str, str], choices: tuple[str, ...]) -> str | None:
    return next((columns[c] for c in choices if c in columns), None)


def _read_csv(csv_path: Path, allowed_root: str | Path | None, task: str = tasks.AUTO,
              ) -> tuple[Path, list[_Candidate], list[Skipped], list[str], str]:
    """Candidates from a CSV of path,label[,split] (or multilabel / regression columns: ftui/data/tasks.py);
    paths must stay inside the CSV's folder (or allowed_root). Returns (root, candidates, skips, output names
    ([] for classification), task)."""
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {csv_path.name} as CSV: {exc}") from None
    columns = {str(c).strip().lower(): c for c in table.columns}
    path_col, label_col = _pick_column(columns, _CSV_PATH_COLUMNS), _pick_column(columns, _CSV_LABEL_COLUMNS)
    parsed, spec = None, tasks.TaskSpec(tasks.CLASSIFICATION, ())
    if path_col is not None:
        try:
            spec = tasks.detect_csv_task(table, path_col, task)
            parsed = tasks.parse_targets(table, spec, csv_path.name) if spec.task != tasks.CLASSIFICATION else None
        except tasks.TaskError as exc:
            raise DatasetError(str(exc)) from None
    if path_col is None or (label_col is None and parsed is None):
        raise DatasetError(f"{csv_path.name} needs a 'path' and a 'label' column (found: "
                           f"{', '.join(map(str, table.columns)) or 'none'}); or 'labels' (multilabel, ';' "
                           "between labels) or number columns (regression)")
    if parsed is not None:
        label_col = None
    split_col = _pick_column(columns, ("split", "subset"))
    base = csv_path.resolve().parent
    allowed = [base] + ([Path(allowed_root).expanduser().resolve()] if allowed_root else [])
    candidates: list[_Candidate] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    paths = table[path_col].str.strip()
    labels = table[label_col].str.strip() if label_col is not None else ["-"] * len(table)
    splits = table[split_col].str.strip().str.lower() if split_col is not None else [""] * len(table)
    for row_number, (raw, label, split_text) in enumerate(zip(paths, labels, splits), start=2):
        if not raw:
            skipped.append(Skipped(f"{csv_path.name} row {row_number}", "no path"))
            continue
        resolved = (base / Path(raw).expanduser()).resolve()
        if not any(resolved.is_relative_to(folder) for folder in allowed):
            skipped.append(Skipped(raw, "outside the CSV's folder (refused)"))
            continue
        why_not = parsed.reasons[row_number - 2] if parsed is not None else (None if label else "no label")
        if why_not:
            skipped.append(Skipped(raw, why_not))
            continue
        if resolved in seen:
            skipped.append(Skipped(raw, "listed twice in the CSV"))
            continue
        seen.add(resolved)
        split = _SPLIT_NAMES.get(split_text or "train")
        if split is None:
            raise DatasetError(f"{csv_path.name} row {row_number}: unknown split {split_text!r} "
                               "(use train, val or test)")
        target = parsed.targets[row_number - 2] if parsed is not None else None
        candidates.append(_Candidate(resolved, label if parsed is None else "", split, target))
    if not candidates:  # the CSV's own message: the folder one ("put images in one subfolder per class") misled
        _no_rows_left(csv_path, len(table), skipped)
    if not any(c.split == "val" for c in candidates):
        # No val rows: val is generated from train like a folder without a split.
        candidates = [c if c.split == "test" else _Candidate(c.path, c.class_name, None, c.target)
                      for c in candidates]
    return base, candidates, skipped, (parsed.names if parsed is not None else []), spec.task


# --- zip ---------------------------------------------------------------------------------------------------
def _extract_cached(zip_path: Path, workdir: str | Path | None, skipped: list[Skipped],
                    max_bytes: int = MAX_ZIP_BYTES) -> Path:
    """Extract once per zip file version into workdir; later loads of the same file reuse the folder."""
    info = zip_path.stat()
    key = hashlib.sha1(f"{zip_path.resolve()}|{info.st_size}|{info.st_mtime_ns}".encode()).hexdigest()[:12]
    base = Path(workdir) if workdir else Path(tempfile.gettempdir()) / "ftui-unzipped"
    base.mkdir(parents=True, exist_ok=True)
    target = base / f"{zip_path.stem}-{key}"
    marker = target / _EXTRACTED_MARKER
    if marker.is_file():
        skipped += [Skipped(p, r) for p, r in json.loads(marker.read_text())["skipped"]]
        return target
    partial = Path(tempfile.mkdtemp(dir=base, prefix=f".{zip_path.stem}-partial-"))
    try:
        mine: list[Skipped] = []
        safe_extract_zip(zip_path, partial, max_bytes=max_bytes, skipped=mine)
        (partial / _EXTRACTED_MARKER).write_text(json.dumps({"skipped": [[s.path, s.reason] for s in mine]}))
        try:
            partial.rename(target)
        except OSError:
            # Another load of the same zip finished first: its folder holds the same files.
            if not marker.is_file():
                raise
        skipped += mine
        return target
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


def safe_extract_zip(
    zip_path: str | Path,
    target: str | Path,
    max_files: int = MAX_ZIP_FILES,
    max_bytes: int = MAX_ZIP_BYTES,
    skipped: list[Skipped] | None = None,
) -> Path:
    """Extract a zip into `target` without letting any entry escape it; unsafe entries go to `skipped`.

    Absolute paths, `..`, symlinks and encrypted entries are not extracted; hidden files, `__MACOSX` and
    `.DS_Store` are ignored. Too many files, too many bytes in all or a zip-bomb ratio (bytes really
    written, never the sizes the archive declares) raise DatasetError and leave nothing behind. Returns target.
    """
    zip_path, target = Path(zip_path), Path(target)
    # Photos barely compress; far more out than in is a decompression bomb, whatever the headers claim.
    max_bytes = min(max_bytes, max(MIN_BOMB_BYTES, MAX_ZIP_RATIO * zip_path.stat().st_size))
    skipped = skipped if skipped is not None else []
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{zip_path.name} is not a readable zip file ({exc})") from None
    target.mkdir(parents=True, exist_ok=True)
    top = target.resolve()
    with archive:
        entries = [e for e in archive.infolist() if not e.is_dir()]
        if len(entries) > max_files:
            raise DatasetError(f"{zip_path.name} holds {len(entries)} files, more than the limit of {max_files}")
        declared = sum(e.file_size for e in entries)
        if declared > max_bytes:
            raise DatasetError(f"{zip_path.name} unpacks to {_size(declared)}, more than the limit of "
                               f"{_size(max_bytes)}")
        written = 0
        for entry in entries:
            name = entry.filename.replace("\\", "/")
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if not parts:
                continue
            reason = _unsafe_entry_reason(entry, name, parts)
            if reason is None and any(is_ignored(p) for p in parts):
                continue
            dest = top.joinpath(*parts)
            if reason is None and not dest.resolve().is_relative_to(top):
                reason = "unsafe path in zip (outside the archive), not extracted"
            if reason:
                skipped.append(Skipped(name, reason))
                continue
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(entry) as src, dest.open("wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise DatasetError(f"{zip_path.name} unpacks to more than {_size(max_bytes)} (the "
                                               f"limit: at most {MAX_ZIP_RATIO}x the zip's size, "
                                               f"{_size(MAX_ZIP_BYTES)} in all, and the app's work-dir "
                                               "quota): extraction stopped")
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                if isinstance(exc, DatasetError):
                    raise
                if dest.is_file():
                    dest.unlink()
                skipped.append(Skipped(name, "damaged zip entry, not extracted"))
    return target


def _unsafe_entry_reason(entry: zipfile.ZipInfo, name: str, parts: list[str]) -> str | None:
    """Why a zip entry must not be extracted, or None."""
    if name.startswith("/") or (len(parts[0]) == 2 and parts[0][1] == ":"):
        return "unsafe path in zip (absolute), not extracted"
    if ".." in parts:
        return "unsafe path in zip (outside the archive), not extracted"
    if stat.S_ISLNK(entry.external_attr >> 16):
        return "symlink in zip, not extracted"
    if entry.flag_bits & 0x1:
        return "encrypted zip entry, not extracted"
    return None
