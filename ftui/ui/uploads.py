"""Rebuild uploaded files into a folder tree on the server, safely.

The browser's folder picker sends (relative path, uploaded temp file) pairs; `.zip` and CSV + image uploads
arrive as plain files. Everything lands in a fresh folder under the app's work dir; only the parts of a
relative path are used, so `..`, absolute paths and drive letters can never write outside it.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import uuid
from pathlib import Path, PurePosixPath

from ftui.errors import FtuiError
from ftui.ui.paths import is_inside

MAX_FILES = 50_000
_DRIVE = re.compile(r"^[A-Za-z]:$")


class UploadError(FtuiError):
    """An upload that cannot become a dataset folder; the message says why."""


def safe_parts(relative: str) -> tuple[str, ...]:
    """Split a browser-reported relative path into safe parts, or raise UploadError."""
    text = str(relative).replace("\\", "/")
    if not text or text.startswith("/") or "\x00" in text:
        raise UploadError(f"refusing upload path {relative!r}: it must be a relative path")
    parts = tuple(p for p in PurePosixPath(text).parts if p not in ("", "."))
    if not parts or any(p == ".." or _DRIVE.match(p) for p in parts):
        raise UploadError(f"refusing upload path {relative!r}: it must stay inside the uploaded folder")
    return parts


def parse_manifest(text: str) -> list[tuple[str, str]]:
    """The folder picker's JSON ({"files": [[relative_path, server_path], ...]}) as a list of pairs."""
    try:
        raw = json.loads(text or "{}")
    except json.JSONDecodeError:
        raise UploadError("the folder upload sent malformed data; pick the folder again") from None
    files = raw.get("files") if isinstance(raw, dict) else None
    if not isinstance(files, list) or not files:
        raise UploadError("the chosen folder is empty")
    if len(files) > MAX_FILES:
        raise UploadError(f"the folder has {len(files)} files; at most {MAX_FILES} can be uploaded")
    pairs = []
    for entry in files:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise UploadError("the folder upload sent malformed data; pick the folder again")
        pairs.append((entry[0], entry[1] if isinstance(entry[1], str) else ""))
    return pairs


def zip_manifest(text: str) -> str | None:
    """The server path of the folder picker's packed zip ({"zip": path, "count": n}), or None when the
    manifest lists files one by one."""
    try:
        raw = json.loads(text or "{}")
    except json.JSONDecodeError:
        raise UploadError("the folder upload sent malformed data; pick the folder again") from None
    path = raw.get("zip") if isinstance(raw, dict) else None
    if path is None:
        return None
    if not isinstance(path, str) or not path:
        raise UploadError("the folder upload sent malformed data; pick the folder again")
    return path


def materialize_zip(zip_path: str, dest: Path, upload_root: str | Path, max_bytes: int | None = None) -> Path:
    """Extract the browser-packed folder zip into dest (safely: no entry leaves it); returns the dataset root.

    Only a zip inside `upload_root` (Gradio's upload folder) is read. Like `materialize_tree`, a single top
    folder (the picked folder's name) becomes the root.
    """
    from ftui.data.datasets import MAX_ZIP_BYTES, safe_extract_zip

    if not Path(zip_path).is_file() or not is_inside(zip_path, upload_root):
        raise UploadError("the packed folder did not arrive on the server; try the upload again")
    # max_bytes: what is left of the work-dir quota (the bytes really written count, not the declared ones).
    limit = MAX_ZIP_BYTES if max_bytes is None else min(MAX_ZIP_BYTES, max_bytes)
    safe_extract_zip(zip_path, dest, max_files=MAX_FILES, max_bytes=limit)
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise UploadError("the chosen folder is empty")
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def new_upload_dir(workdir: Path) -> Path:
    """A fresh, unique folder for one upload."""
    folder = Path(workdir) / "uploads" / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    return folder


def materialize_tree(pairs: list[tuple[str, str]], dest: Path, upload_root: str | Path) -> tuple[Path, list[str]]:
    """Copy each uploaded temp file to dest/<relative path>; returns (dataset root, files that failed).

    Only temp files inside `upload_root` (Gradio's upload folder) are copied, so a crafted request cannot
    make the server copy its own files into a dataset. When every path shares one top folder (the picked
    folder's name), that folder is the dataset root.
    """
    failed: list[str] = []
    tops = set()
    for relative, server_path in pairs:
        parts = safe_parts(relative)
        if not server_path or not Path(server_path).is_file() or not is_inside(server_path, upload_root):
            failed.append(relative)
            continue
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy, not move: Gradio stores identical uploads once, so two entries may share a temp file.
        shutil.copyfile(server_path, target)
        tops.add(parts[0] if len(parts) > 1 else "")
    if not tops:
        raise UploadError("none of the uploaded files arrived on the server; try the upload again")
    if len(tops) == 1 and "" not in tops:
        return dest / tops.pop(), failed
    return dest, failed


def materialize_files(paths: list[str], dest: Path) -> Path:
    """Turn plain uploaded files (a .zip, or a CSV plus its images) into a loadable source path.

    A CSV names images by relative path, but plain file uploads keep only base names: each image is placed
    where a CSV row expects it (matched by file name), so the CSV loads unchanged.
    """
    files = [Path(p) for p in paths if p]
    if not files:
        raise UploadError("no files uploaded: drop a .zip, or a .csv together with its images")
    dest.mkdir(parents=True, exist_ok=True)
    zips = [f for f in files if f.suffix.lower() == ".zip"]
    csvs = [f for f in files if f.suffix.lower() == ".csv"]
    if zips:
        if len(files) > 1:
            raise UploadError("upload the .zip on its own (one archive holding the whole dataset)")
        target = dest / zips[0].name
        shutil.copyfile(zips[0], target)
        return target
    if len(csvs) != 1:
        raise UploadError(
            f"expected one .zip, or exactly one .csv plus its images; got {len(csvs)} CSV files"
        )
    csv_target = dest / csvs[0].name
    shutil.copyfile(csvs[0], csv_target)
    by_name = {f.name: f for f in files if f not in csvs}
    for relative in _csv_paths(csv_target):
        try:
            parts = safe_parts(relative)
        except UploadError:
            continue  # the dataset loader reports the row; nothing is written for it
        source = by_name.get(parts[-1])
        if source is not None:
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return csv_target


def _csv_paths(csv_file: Path) -> list[str]:
    """The first column of every row (the header, if any, simply matches no image)."""
    with open(csv_file, newline="", encoding="utf-8", errors="replace") as handle:
        return [row[0].strip() for row in csv.reader(handle) if row]


def dataset_source(folder: Path) -> Path:
    """A picked folder holding exactly one CSV at its top is a CSV dataset; otherwise the folder itself."""
    csvs = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv"]
    return csvs[0] if len(csvs) == 1 else folder
