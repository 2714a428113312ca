"""Run folders: config, classes, status, metrics.csv, checkpoints; listing and reloading runs.

Layout of `runs/<run-id>/`: config.json, classes.json, status.json, metrics.csv, best.pt, last.pt,
evaluation.json. Checkpoints hold tensors and plain types only, so `torch.load(weights_only=True)` reads them.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ftui.config import TrainConfig
from ftui.errors import FtuiError

RUN_COLUMNS = ["id", "backbone", "status", "best_val_acc", "epochs", "started", "seconds"]


# metrics.csv's columns, one row per epoch (written by callbacks.CSVLogger; here so runs needs no callbacks).
EPOCH_COLUMNS = ["epoch", "phase", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


class RunError(FtuiError):
    """A run folder that is missing, incomplete or cannot be created."""


class DiskFullError(RunError):
    """A write failed because the disk (or a quota, or a file-size limit) is full; names the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(f"disk full while writing {self.path}")

    def for_client(self) -> str:
        """The message without the server's folders (for web clients)."""
        return f"disk full while writing {self.path.name} on the server: ask its operator to free space"


def new_run_id(backbone: str, name: str = "", now: float | None = None) -> str:
    """`YYYYmmdd-HHMMSS-<backbone>-<4 hex>`, plus `-<name>` when the user gave the run a name."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    run_id = f"{stamp}-{_slug(backbone)}-{secrets.token_hex(2)}"
    if name.strip():
        run_id += f"-{_slug(name)}"
    return run_id


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text.strip()).strip("_")[:40] or "run"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file and os.replace, so readers never see half a file."""
    _atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, default=str).encode() + b"\n"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write bytes through a temp file and os.replace (readers never see half a file)."""
    _atomic_write(Path(path), lambda f: f.write(data))


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text through a temp file and os.replace (model cards, CSVs, exported metadata)."""
    _atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def append_line_atomic(path: Path, line: str) -> None:
    """Add one line to a small text file (a journal) by rewriting it whole through a temp file: a full disk
    leaves the old file intact rather than a torn last line."""
    path = Path(path)
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    _atomic_write(path, lambda f: f.write(old + line.rstrip("\n").encode("utf-8") + b"\n"))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """For writers that want a file name (onnx): yields a temp path in the same folder; on success it is
    fsynced and renamed to `path`, on any failure removed. A full disk becomes DiskFullError naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if disk_full(exc) or _disk_full_inside(exc):
            raise DiskFullError(path) from None
        raise


def _disk_full_inside(exc: BaseException) -> bool:
    """A library that wrapped the OSError of a full disk (onnx, torch) in its own exception."""
    seen = exc
    while seen is not None:
        if disk_full(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return any(word in text for word in ("No space left on device", "File too large", "Disk quota exceeded"))


def disk_full(exc: BaseException) -> bool:
    """True for the OSErrors of a full disk, a quota or a file-size limit."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same folder; on any failure the temp file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if disk_full(exc):
            raise DiskFullError(path) from None
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if disk_full(exc):
            raise DiskFullError(path) from None
        raise


def remove_temp_files(folder: Path) -> None:
    """Delete the temp files interrupted atomic writes left behind (`.<name>.<random>.tmp`)."""
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def _alive(status: dict[str, Any]) -> bool:
    """True when the process that wrote this status.json still runs (same host, pid alive)."""
    pid, host = status.get("pid"), status.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """state_dict (on CPU) + plain metadata, written atomically (a crash never leaves half a checkpoint)."""
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    payload = {"state_dict": state, **meta}
    # Serialised in memory first: torch.save writing to a full disk fails with a cryptic C++ "enforce fail";
    # a plain write fails with ENOSPC, which becomes "disk full while writing <file>".
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    _atomic_write(Path(path), lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True; RunError when it is missing or unreadable."""
    path = Path(path)
    if path.is_symlink():
        raise RunError(f"{path.name} in {path.parent.name} is a link: a run's checkpoints are read only as files "
                       "in its own folder (a link may lead to any file on the server)")
    if not path.is_file():
        raise RunError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        # a truncated or foreign file: say which, not a pickle traceback
        raise RunError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "classes" not in ckpt:
        raise RunError(f"{path} is not an ftui checkpoint (no state_dict/classes)")
    return ckpt


def update_checkpoint(path: str | Path, **meta: Any) -> None:
    """Add or replace plain metadata in a checkpoint (e.g. the fitted temperature), written atomically."""
    ckpt = load_checkpoint(path)
    ckpt.update(meta)
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    _atomic_write(Path(path), lambda f: f.write(buffer.getbuffer()))


@dataclass
class RunFolder:
    """One run's folder and the small files in it."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def best_path(self) -> Path:
        return self.path / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.path / "last.pt"

    @property
    def evaluation_path(self) -> Path:
        return self.path / "evaluation.json"

    def write_config(self, config: TrainConfig) -> None:
        """config.json (the full TrainConfig)."""
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path / "config.json", lambda f: f.write(config.to_json().encode() + b"\n"))

    def write_classes(self, classes: list[str]) -> None:
        """classes.json: class names in label order."""
        write_json_atomic(self.path / "classes.json", list(classes))

    def read_status(self) -> dict[str, Any]:
        """status.json as a dict ({} when absent or unreadable)."""
        try:
            return json.loads((self.path / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Merge fields into status.json (status, started, ended, seconds, best_val_acc, message...)."""
        status = self.read_status()
        status.update(fields)
        write_json_atomic(self.path / "status.json", status)
        return status

    def metrics(self) -> pd.DataFrame:
        """metrics.csv as a DataFrame (empty when no epoch finished)."""

        if not self.metrics_path.is_file() or self.metrics_path.stat().st_size == 0:
            return pd.DataFrame(columns=EPOCH_COLUMNS)
        return pd.read_csv(self.metrics_path)


class RunStore:
    """All runs under one root folder (default `runs/`)."""

    def __init__(self, root: str | Path = "runs") -> None:
        self.root = Path(root)

    def create(self, config: TrainConfig, run_dir: str | Path | None = None) -> RunFolder:
        """A fresh run folder with config.json; `run_dir` names it exactly (it must be new or empty)."""
        if run_dir is not None:
            path = Path(run_dir)
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise RunError(f"run folder {path} already exists and is not empty: choose another one")
        else:
            path = self.root / new_run_id(config.backbone, config.run_name)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
        folder = RunFolder(path)
        folder.write_config(config)
        # pid + host let a restarted app tell a run still training elsewhere from one whose process died.
        folder.update_status(status="created", backbone=config.backbone, epochs=config.epochs,
                             started=time.strftime("%Y-%m-%d %H:%M:%S"), pid=os.getpid(),
                             host=socket.gethostname())
        return folder

    def mark_interrupted(self) -> list[str]:
        """Mark runs left "created"/"running" by a process that no longer lives as "interrupted".

        Called when the app starts: a kill -9 or power cut leaves status.json saying "running" forever.
        Leftover temp files of interrupted writes are removed. Returns the ids marked.
        """
        marked = []
        if not self.root.is_dir():
            return marked
        for path in sorted(self.root.iterdir()):
            folder = RunFolder(path)
            status = folder.read_status() if (path / "status.json").is_file() else {}
            if status.get("status") not in ("created", "running") or _alive(status):
                continue
            remove_temp_files(path)
            folder.update_status(status="interrupted", message="the process training this run ended without "
                                 "finishing it (killed or crashed); resume it from last.pt")
            marked.append(path.name)
        return marked

    def folder(self, run: str | Path) -> RunFolder:
        """A run by id (under root) or by path; RunError when there is no run there."""
        path = Path(run)
        if not (path / "config.json").is_file():
            path = self.root / str(run)
        if not (path / "config.json").is_file():
            raise RunError(f"no run found at {run!r} (looked for config.json in {path})")
        return RunFolder(path)

    def list_runs(self) -> pd.DataFrame:
        """One row per run folder, newest first: id, backbone, status, best_val_acc, epochs, started, seconds."""
        rows = []
        if self.root.is_dir():
            for path in sorted(self.root.iterdir(), reverse=True):
                if not (path / "config.json").is_file():
                    continue
                status = RunFolder(path).read_status()
                rows.append({
                    "id": path.name,
                    "backbone": status.get("backbone"),
                    "status": status.get("status", "unknown"),
                    "best_val_acc": status.get("best_val_acc"),
                    "epochs": status.get("epochs_done", status.get("epochs")),
                    "started": status.get("started"),
                    "seconds": status.get("seconds"),
                })
        return pd.DataFrame(rows, columns=RUN_COLUMNS)

