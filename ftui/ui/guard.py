"""What keeps one client from hurting the server or another client.

- `number`: API inputs type-checked and bounded on the server, with messages naming the field and range;
- `Grants`: the files each session uploaded (datasets, weights); nobody else's session may load them;
- `owner_quota`: at most one running and one waiting job per owner token; `client_quota`: per address and
  per session (tokens are free to mint); `job_size`: epochs x training images of one job;
- `public_snapshot`: the job status other clients see, without server paths, notes or error details;
- `private_download`: a download handed to one client is a private copy, never a path into the runs folder;
- `LoginThrottle`: HTTP 429 after too many failed logins from one address;
- `parse_size`, `folder_bytes`: the upload and work-dir limits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from ftui.errors import FtuiError
from ftui.ui.paths import is_inside

MAX_JOBS_PER_OWNER = 2  # one running + one waiting
MAX_TOKEN_CHARS = 200
MIN_TOKEN_CHARS = 22  # secrets.token_urlsafe(16): 128 bits
DOWNLOAD_PREFIX = "ftui-dl-"
DOWNLOAD_TTL_S = 3600.0


class InputError(FtuiError):
    """An API input of the wrong type or out of range; the message names the field and the allowed range."""


def number(name: str, value: Any, low: float, high: float, whole: bool = True) -> int | float:
    """`value` as an int (whole) or float inside [low, high], else InputError naming `name` and the range."""
    want = f"{'a whole number' if whole else 'a number'} in [{low}, {high}]"
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InputError(f"{name} must be {want}, got {value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be {want}, got {str(value)[:40]!r}")
    if whole and not float(value).is_integer():
        raise InputError(f"{name} must be {want}, got {value}")
    if not low <= value <= high:
        raise InputError(f"{name} must be {want}, got {value}")
    return int(value) if whole else float(value)


def token(value: Any) -> str:
    """An owner token: at least 128 bits' worth of text (a guessable one, like the README's old "me", let anyone
    stop another client's runs and restore their uploads), at most MAX_TOKEN_CHARS (memory)."""
    if not isinstance(value, str) or len(value) > MAX_TOKEN_CHARS:
        raise InputError(f"owner_token must be text of at most {MAX_TOKEN_CHARS} characters")
    if len(value.strip()) < MIN_TOKEN_CHARS or len(set(value)) < 8:
        raise InputError(f"owner_token is too short to be secret: use one the server issues (the /new_token "
                         f"endpoint; {MIN_TOKEN_CHARS}+ random characters, 128 bits)")
    return value


def new_owner_token() -> str:
    """A fresh owner token: 128 random bits, URL-safe (what browsers get on their first visit)."""
    return secrets.token_urlsafe(16)


class Grants:
    """Which uploaded files and folders each session may use (keyed by Gradio's session hash)."""

    def __init__(self, max_sessions: int = 2000) -> None:
        self._paths: OrderedDict[str, set[str]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_sessions = max_sessions

    def grant(self, session: str | None, path: str | Path) -> None:
        if not session:
            return
        with self._lock:
            self._paths.setdefault(session, set()).add(str(Path(path).resolve()))
            self._paths.move_to_end(session)
            while len(self._paths) > self.max_sessions:
                self._paths.popitem(last=False)

    def allows(self, session: str | None, path: str | Path) -> bool:
        """True when `path` is (inside) something this session uploaded."""
        if not session:
            return False
        with self._lock:
            granted = list(self._paths.get(session, ()))
        return any(is_inside(path, root) for root in granted)


def session_of(request: Any) -> str | None:
    """Gradio's per-connection session hash (a page load or a gradio_client.Client), or None."""
    return getattr(request, "session_hash", None) if request is not None else None


def owner_quota(jobs: list[Any], owners: dict[str, str], owner_token: str) -> None:
    """Refuse a start when this owner already has a running and a waiting job."""
    mine = [j for j in jobs if owners.get(j.id) == owner_token and not j.done()]
    if len(mine) >= MAX_JOBS_PER_OWNER:
        raise InputError(f"you already have {len(mine)} unfinished jobs (at most one running and one waiting per "
                         "owner): wait for one to finish or stop it")


def address_of(request: Any) -> str | None:
    """The client's address as the server sees it (the TCP peer; a --trusted-proxy's X-Forwarded-For)."""
    client = getattr(request, "client", None) if request is not None else None
    return getattr(client, "host", None) or None


def client_quota(jobs: list[Any], clients: dict[str, tuple[str | None, str | None]], address: str | None,
                 session: str | None, limits: tuple[int, int]) -> None:
    """Refuse a start when this address or session already has `limits` = (per address, per session)
    unfinished jobs: owner tokens are free to mint, so one client with many of them filled the machine's
    queue for hours (issue 20, finding 9). `clients` maps job id -> (address, session) of who queued it."""
    unfinished = [clients.get(j.id, (None, None)) for j in jobs if not j.done()]
    for index, (who, what, flag) in enumerate(((address, "address", "--max-jobs-per-address"),
                                              (session, "session", "--max-jobs-per-session"))):
        count = sum(1 for c in unfinished if who is not None and c[index] == who)
        if who is not None and count >= limits[index]:
            raise InputError(f"{count} unfinished jobs already come from your {what} (this server allows "
                             f"{limits[index]} per {what}, {flag}): wait for one to finish or stop it")


def job_size(epochs: int, train_images: int, limit: int) -> None:
    """Refuse a job of more than `limit` image passes (epochs x training images): one request may not hold
    the machine for days."""
    if epochs * train_images > limit:
        most = max(1, limit // max(1, train_images))
        raise InputError(f"{epochs} epochs x {train_images} training images = {epochs * train_images:,} image "
                         f"passes; this server allows at most {limit:,} per job (--max-job-images): use at most "
                         f"{most} epochs here")


def public_snapshot(snap: dict[str, Any]) -> dict[str, Any]:
    """A job's status as shown to clients that did not start it: progress only, no paths, notes or errors."""
    out = dict(snap)
    out.update(run_dir=None, notes=[])
    if out.get("error") or out.get("status") == "failed":
        out["error"] = "the run failed (details are shown to the client that started it)"
        out["message"] = out["error"]
    return out


def private_download(path: str | Path, upload_folder: str | Path) -> str:
    """A copy of `path` under a fresh unguessable folder in Gradio's upload folder, for one response.

    The runs folder is never served as such (its config.json names other clients' uploads); Gradio serves
    files in its upload folder only to who knows the full path. Copies older than an hour are removed.
    """
    source = Path(path)
    base = Path(upload_folder)
    _remove_old_downloads(base)
    folder = base / f"{DOWNLOAD_PREFIX}{secrets.token_hex(16)}"
    folder.mkdir(parents=True)
    target = folder / source.name
    try:
        os.link(source, target)  # the run may replace the file later; the link keeps this version
    except OSError:
        shutil.copyfile(source, target)
    return str(target)


def _remove_old_downloads(base: Path) -> None:
    cutoff = time.time() - DOWNLOAD_TTL_S
    try:
        old = [p for p in base.glob(f"{DOWNLOAD_PREFIX}*") if p.stat().st_mtime < cutoff]
    except OSError:
        return
    for folder in old:
        shutil.rmtree(folder, ignore_errors=True)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """'500mb', '2GB', '1.5g', '1048576' -> bytes (binary units); ValueError for anything else."""
    match = _SIZE.match(str(text))
    if not match:
        raise InputError(f"not a size: {text!r} (use e.g. 500mb or 2gb)")
    unit = (match.group(2) or "").lower()[:1]
    return int(float(match.group(1)) * _UNITS[unit])


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (links not followed)."""
    total = 0
    for current, _dirs, files in os.walk(folder):
        for name in files:
            try:
                info = os.lstat(os.path.join(current, name))
            except OSError:
                continue
            total += info.st_size
    return total


class LoginThrottle:
    """ASGI middleware: after `max_failures` failed logins within `window_s` from one address, answer 429.

    Gradio's /login answers 400 to wrong credentials; the middleware counts those per client address and
    refuses further attempts from that address until the window has passed.
    """

    def __init__(self, app: Any, max_failures: int = 10, window_s: float = 60.0) -> None:
        self.app = app
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.setdefault(address, deque())
        while times and times[0] < now - self.window_s:
            times.popleft()
        return times

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or \
                not scope.get("path", "").rstrip("/").endswith("/login"):
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown",))[0]
        with self._lock:
            times = self._recent(address, time.monotonic())
            blocked = len(times) >= self.max_failures
            retry = int(self.window_s - (time.monotonic() - times[0])) + 1 if blocked else 0
        if blocked:
            body = json.dumps({"detail": f"too many failed logins from {address}: try again in {retry} s"}).encode()
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", str(retry).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        status: dict[str, int] = {}

        async def watch(message: dict) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = message.get("status", 0)
            await send(message)

        await self.app(scope, receive, watch)
        if status.get("code") in (400, 401, 403):
            with self._lock:
                self._recent(address, time.monotonic()).append(time.monotonic())
                if len(self._failures) > 10_000:  # forget the oldest addresses rather than grow forever
                    self._failures.pop(next(iter(self._failures)))


def owner_stamp(owner_token: str) -> dict[str, str]:
    """The status.json field naming a run's owner without storing the token itself."""
    return {"owner": hashlib.sha256(owner_token.encode()).hexdigest()}


def started_by(folder: Any, owner_token: str) -> bool:
    """Whether the run in `folder` (a RunFolder) was started with this owner token (its status.json stamp)."""
    return folder.read_status().get("owner") == owner_stamp(owner_token)["owner"]
