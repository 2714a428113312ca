"""Fix a folder dataset in place: relabel (move to another class), remove (into `_removed/`), merge classes.

Every change is appended to a JSON-lines journal in the dataset folder (`.ftui-journal.jsonl`), and `undo`
reverses the newest change not yet undone by appending an undo entry: the journal is never rewritten.
A dataset ftui may not write (a read-only folder) is first copied under the work dir and edited there;
the caller then loads the copy (`FixResult.root`). Every path is checked to lie inside the dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftui.data import csvfixes
from ftui.data.datasets import _SPLIT_NAMES
from ftui.data.images import REMOVED_DIR, is_ignored
from ftui.errors import FtuiError
from ftui.runs import DiskFullError, append_line_atomic, disk_full

JOURNAL = ".ftui-journal.jsonl"
OPS = ("relabel", "remove", "merge", "undo")
_CLASS_NAME = re.compile(r"^[^/\\\x00-\x1f]{1,100}$")


class FixError(FtuiError):
    """A fix that cannot be applied; the message says why."""


@dataclass
class FixResult:
    """What one change did: the dataset root it applied to (a copy when the source was read-only)."""

    root: str
    entry: dict[str, Any]
    copied_from: str = ""
    moves: list[tuple[str, str]] = field(default_factory=list)

    @property
    def message(self) -> str:
        op, n = self.entry["op"], len(self.entry["moves"])
        if Path(self.root).suffix.lower() == ".csv":
            kept = f"; {Path(self.copied_from).name} is kept as it was" if self.copied_from else ""
            return f"{op}: {n} row{'s' if n != 1 else ''} changed in {Path(self.root).name}{kept}"
        where = " (in an edited copy: the original is left as it was)" if self.copied_from else ""
        return f"{op}: {n} file{'s' if n != 1 else ''} moved{where}"


def _inside(path: Path, root: Path) -> Path:
    """`path` (relative to root, or absolute) resolved, refused unless it lies strictly inside `root`."""
    full = (path if path.is_absolute() else root / path).resolve()
    try:
        rel = full.relative_to(root)
    except ValueError:
        raise FixError(f"{path} is not inside the dataset {root}") from None
    if not rel.parts:
        raise FixError("the dataset folder itself cannot be moved")
    return full


def _check_class_name(name: str) -> str:
    name = (name or "").strip()
    if not _CLASS_NAME.match(name) or name in (".", "..") or is_ignored(name):
        raise FixError(f"not a usable class name: {name!r}")
    return name


def class_dir_of(root: Path, file: Path) -> Path:
    """The class folder holding `file`: root/<class> or root/<split>/<class>."""
    parts = file.relative_to(root).parts
    if len(parts) >= 3 and parts[0].lower() in _SPLIT_NAMES:
        return root / parts[0] / parts[1]
    if len(parts) >= 2 and parts[0] != REMOVED_DIR:
        return root / parts[0]
    raise FixError(f"{file.relative_to(root)} is not inside a class folder")


def _free(target: Path) -> Path:
    """`target`, or `name_1.ext`, `name_2.ext`... when taken (a move never overwrites)."""
    candidate, n = target, 0
    while candidate.exists():
        n += 1
        candidate = target.with_name(f"{target.stem}_{n}{target.suffix}")
    return candidate


def _entry_inside(root: Path, path: Path, follow: bool = False) -> None:
    """Refuse `path` unless the folder holding it (with `follow`: the path itself) resolves inside `root`: a
    class folder (or `_removed/`, or a subfolder) that is a link out of the dataset would move images out of
    it or outside files into it. A file may be a link: moving a link moves the link, never what it points to."""
    try:
        (path.resolve() if follow else path.parent.resolve() / path.name).relative_to(root.resolve())
    except ValueError:
        raise FixError(f"{path.relative_to(root) if path.is_relative_to(root) else path} leads out of the "
                       f"dataset (a link to a folder outside it): nothing was moved") from None


def _plan_move(root: Path, src: Path, dst: Path) -> tuple[Path, Path]:
    """(src, dst) checked to stay inside `root` on both ends; nothing is moved yet."""
    _entry_inside(root, src)
    _entry_inside(root, dst)
    return src, dst


def _apply(root: Path, plan: list[tuple[Path, Path]]) -> list[tuple[str, str]]:
    """Make every planned move (each checked before the first one), never overwriting; an OS error half-way
    moves the done ones back, so a change is all or nothing."""
    done: list[tuple[Path, Path]] = []
    try:
        for src, dst in plan:
            dst = _free(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            _entry_inside(root, dst)  # mkdir followed no link: checked again now that the folder exists
            os.replace(src, dst)
            done.append((src, dst))
    except (OSError, FixError):
        for src, dst in reversed(done):
            os.replace(dst, src)
        raise
    return [(str(s.relative_to(root)), str(d.relative_to(root))) for s, d in done]


def read_journal(root: str | Path) -> list[dict[str, Any]]:
    """Every journal entry, oldest first (lines that do not parse are skipped, never fatal)."""
    path = _journal_file(Path(root))
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("op") in OPS:
            entries.append(entry)
    return entries


def _journal_file(root: Path) -> Path:
    """The journal of a dataset folder (inside it) or of a CSV's edited copy (beside it)."""
    return csvfixes.journal_path(root) if root.suffix.lower() == ".csv" else root / JOURNAL


def _append(root: Path, op: str, moves: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    entries = read_journal(root)
    entry = {"id": max((int(e.get("id", 0)) for e in entries), default=0) + 1, "op": op,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "moves": [list(m) for m in moves], **extra}
    append_line_atomic(_journal_file(root), json.dumps(entry))
    return entry


def _writable(folder: Path) -> bool:
    """Writable, and not marked read-only by its owner (root may write anything; ftui respects the mark)."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & stat.S_IWUSR)


@dataclass
class CopyPolicy:
    """Where and for whom a dataset is copied before it is fixed (the app's shared datasets; the CLI: none).

    workdir: where edited copies go (None: a read-only dataset is refused); copy: copy even a writable dataset
    (the demo and --data-root folders other sessions and the operator use too); owner: whose copy (the app's
    session: each gets its own); space: bytes the copy may take (the app's work quota left; None: no limit)."""

    workdir: str | Path | None = None
    copy: bool = False
    owner: str = ""
    space: int | None = None


def writable_root(root: str | Path, policy: CopyPolicy) -> tuple[Path, str]:
    """(root to edit, original root when that is a copy): a read-only dataset (or any, with `policy.copy`) is
    copied under the work dir on its first fix, once per owner; later fixes reuse the copy."""
    root = Path(root).resolve()
    if not policy.copy and all(_writable(d) for d in [root, *(d for d in root.rglob("*") if d.is_dir())]):
        return root, ""
    if policy.workdir is None:
        raise FixError(f"{root} is read-only and no work dir was given for an edited copy")
    copy = edited_copy_path(root, policy.workdir, policy.owner)
    if not copy.is_dir():
        _copy_tree(root, copy, policy.space)
    return copy, str(root)


def _copy_tree(root: Path, copy: Path, space: int | None) -> None:
    """Copy `root` to `copy` through a temp folder (links copied as links, never followed), within `space`."""
    if space is not None:
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        if size > space:
            raise FixError(f"fixes to this shared dataset go to a copy of your own, which needs "
                           f"{size / 2**20:.0f} MiB, but only {space / 2**20:.0f} MiB of this server's work "
                           "quota (--work-quota) is left")
    tmp = copy.with_name(copy.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(root, tmp, copy_function=shutil.copy2, symlinks=True)
        for path in [tmp, *tmp.rglob("*")]:  # the copy is ours: make it writable whatever the source was
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o200)
        os.replace(tmp, copy)
    except (OSError, shutil.Error) as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # half a copy would count against the disk for nothing
        if disk_full(exc) or "No space left" in str(exc) or "File too large" in str(exc):
            raise DiskFullError(copy) from None
        raise


def edited_copy_path(root: str | Path, workdir: str | Path, owner: str = "") -> Path:
    """Where the edited copy of a dataset ftui may not (or should not) change lives under the work dir (one per
    owner: the app's sessions each edit their own copy of a shared dataset)."""
    root = Path(root).resolve()
    key = str(root) if not owner else f"{root}\0{owner}"
    digest = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    return Path(workdir).resolve() / "edited" / f"{root.name}-{digest}"


def current_root(root: str | Path, workdir: str | Path | None = None) -> Path:
    """The folder holding a dataset's fixed files: its edited copy when fixes made one, else the folder (for a
    CSV: its edited copy beside it, else the CSV)."""
    if csvfixes.is_csv(root):
        edited = csvfixes.edited_path(root)
        return edited if edited.is_file() else Path(root)
    if workdir is not None:
        copy = edited_copy_path(root, workdir)
        if copy.is_dir():
            return copy
    return Path(root)


def changes_since(root: str | Path, when: float) -> list[dict[str, Any]]:
    """Journal entries (undos included) written at or after `when` (epoch seconds; the journal keeps whole
    seconds, so a change in the same second counts as later: stale rather than wrongly fresh)."""
    from datetime import datetime

    since = []
    for entry in read_journal(root):
        try:
            stamp = datetime.strptime(entry.get("time", ""), "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            stamp = float("inf")  # an unreadable time cannot prove the change is older
        if stamp >= int(when):
            since.append(entry)
    return since


def follow_moves(paths: list[str], result: FixResult) -> list[str]:
    """`paths` (absolute, in the dataset or in the original it was copied from) with the files this change
    moved replaced by where they are now; other paths unchanged."""
    if Path(result.root).suffix.lower() == ".csv":
        return list(paths)  # a CSV fix changes rows, never files
    moved = {src: dst for src, dst in result.moves}
    out = []
    for path in paths:
        rel = _relative(path, (result.root, result.copied_from))
        out.append(str(Path(result.root) / moved[rel]) if rel in moved else path)
    return out


def _relative(path: str, bases: tuple[str, ...]) -> str | None:
    for base in filter(None, bases):
        try:
            return str(Path(path).resolve().relative_to(Path(base).resolve()))
        except ValueError:
            continue
    return None


def _prepare(root: str | Path, policy: CopyPolicy) -> tuple[Path, str]:
    root = Path(root)
    if not root.is_dir():
        raise FixError(f"fixes apply to a dataset folder or CSV; {root} is neither")
    if policy.workdir is not None and root.resolve().is_relative_to(Path(policy.workdir).resolve() / "edited"):
        return writable_root(root, CopyPolicy(policy.workdir))  # already our own copy
    return writable_root(root, policy)


def _relocate(path: str | Path, original: str, root: Path) -> Path:
    """A path given against the original dataset, mapped into its edited copy."""
    path = Path(path)
    if original and path.is_absolute():
        try:
            return root / path.resolve().relative_to(original)
        except ValueError:
            pass
    return path


def relabel(root: str | Path, path: str | Path, new_class: str, workdir: str | Path | None = None,
            copy: bool = False, policy: CopyPolicy | None = None) -> FixResult:
    """Move one image into the class folder `new_class` next to its own (same split); in a CSV dataset,
    change its row's label."""
    if csvfixes.is_csv(root):
        return _csv_fix("relabel", root, path, _check_class_name(new_class))
    base, original = _prepare(root, policy or CopyPolicy(workdir, copy))
    file = _inside(_relocate(path, original, base), base)
    if not file.is_file():
        raise FixError(f"no such image: {path}")
    current = class_dir_of(base, file)
    new_class = _check_class_name(new_class)
    if current.name == new_class:
        raise FixError(f"{file.name} is already in {new_class}")
    moves = _apply(base, [_plan_move(base, file, current.parent / new_class / file.relative_to(current))])
    entry = _append(base, "relabel", moves, to_class=new_class)
    return FixResult(str(base), entry, original, moves)


def remove(root: str | Path, path: str | Path, workdir: str | Path | None = None,
           copy: bool = False, policy: CopyPolicy | None = None) -> FixResult:
    """Move one image into `_removed/` inside the dataset (same relative path), out of the loader's view; in a
    CSV dataset, take its row out."""
    if csvfixes.is_csv(root):
        return _csv_fix("remove", root, path)
    base, original = _prepare(root, policy or CopyPolicy(workdir, copy))
    file = _inside(_relocate(path, original, base), base)
    if not file.is_file():
        raise FixError(f"no such image: {path}")
    rel = file.relative_to(base)
    if rel.parts[0] == REMOVED_DIR:
        raise FixError(f"{rel} is already removed")
    moves = _apply(base, [_plan_move(base, file, base / REMOVED_DIR / rel)])
    entry = _append(base, "remove", moves)
    return FixResult(str(base), entry, original, moves)


def merge(root: str | Path, source_class: str, target_class: str, workdir: str | Path | None = None,
          copy: bool = False, policy: CopyPolicy | None = None) -> FixResult:
    """Move every image of `source_class` (in every split) into `target_class`; the emptied folder goes. In a
    CSV dataset, relabel the class's rows."""
    source_class, target_class = _check_class_name(source_class), _check_class_name(target_class)
    if source_class == target_class:
        raise FixError("pick two different classes to merge")
    if csvfixes.is_csv(root):
        return _csv_fix("merge", root, source_class, target_class)
    base, original = _prepare(root, policy or CopyPolicy(workdir, copy))
    parents = [base] + [d for d in base.iterdir() if d.is_dir() and d.name.lower() in _SPLIT_NAMES]
    folders = [p / source_class for p in parents if (p / source_class).is_dir()]
    if not folders:
        raise FixError(f"no class folder named {source_class!r} in the dataset")
    plan = []
    for folder in folders:  # every source and target checked before the first file moves
        _entry_inside(base, folder, follow=True)
        _entry_inside(base, folder.parent / target_class, follow=True)
        plan += [_plan_move(base, file, folder.parent / target_class / file.relative_to(folder))
                 for file in sorted(p for p in folder.rglob("*") if p.is_file())]
    moves = _apply(base, plan)
    entry = _append(base, "merge", moves, from_class=source_class, to_class=target_class)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)  # only empty folders are left after the moves
    return FixResult(str(base), entry, original, moves)


def undo(root: str | Path, workdir: str | Path | None = None,
         copy: bool = False, policy: CopyPolicy | None = None) -> FixResult:
    """Reverse the newest change that is not undone yet (an undo of an undo is not offered: redo by fixing)."""
    if csvfixes.is_csv(root):
        return _csv_fix("undo", root)
    base, original = _prepare(root, policy or CopyPolicy(workdir, copy))
    last = _last_pending(base)
    plan, gone = [], []
    for src, dst in reversed(last["moves"]):  # check every file first: an undo is all or nothing
        moved, back = base / dst, base / src
        _inside(Path(dst), base)
        _inside(Path(src), base)
        if not moved.is_file():
            gone.append(dst)
            continue
        plan.append(_plan_move(base, moved, back))
    if gone:
        raise FixError(f"cannot undo {last['op']} #{last['id']}: {len(gone)} of its files are gone "
                       f"({', '.join(gone[:3])}{' ...' if len(gone) > 3 else ''}); nothing was moved back. "
                       "Put them back (or fix by hand) and undo again")
    moves = _apply(base, plan)
    _tidy_removed(base)
    entry = _append(base, "undo", moves, undoes=last["id"], undid=last["op"])
    return FixResult(str(base), entry, original, moves)


def _last_pending(base: Path) -> dict[str, Any]:
    """The newest journal entry no undo has reversed yet."""
    entries = read_journal(base)
    undone = {e.get("undoes") for e in entries if e["op"] == "undo"}
    pending = [e for e in entries if e["op"] != "undo" and e["id"] not in undone]
    if not pending:
        raise FixError("nothing to undo")
    return pending[-1]


def _csv_fix(op: str, root: str | Path, *args: str) -> FixResult:
    """One change to a CSV dataset's edited copy (ftui.data.csvfixes), journaled beside it."""
    try:
        csv, original = csvfixes.prepare(root)
        if op == "undo":
            last = _last_pending(csv)
            moves, extra = csvfixes.undo(csv, last), {"undoes": last["id"], "undid": last["op"]}
        else:
            moves, extra = getattr(csvfixes, op)(csv, *args)
    except csvfixes.CsvFixError as exc:
        raise FixError(str(exc)) from None
    entry = _append(csv, op, moves, **extra)
    return FixResult(str(csv), entry, original, moves)


def _tidy_removed(base: Path) -> None:
    """Drop empty folders under `_removed/` left by an undo (never anything holding a file)."""
    removed = base / REMOVED_DIR
    if not removed.is_dir():
        return
    for folder in sorted((p for p in removed.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(removed.iterdir()):
        removed.rmdir()


def history(root: str | Path) -> list[dict[str, Any]]:
    """Journal entries newest first, with `undone` set on changes an undo reversed (for tables)."""
    entries = read_journal(root)
    undone = {e.get("undoes") for e in entries if e["op"] == "undo"}
    return [{**e, "undone": e["id"] in undone} for e in reversed(entries)]
