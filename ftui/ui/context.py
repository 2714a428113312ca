"""The server-side state of one app: settings, the job manager, the run store and small caches.

Gradio deep-copies `gr.State` per session, so sessions keep only ids and paths; everything heavy (datasets,
models, jobs) lives here, created once in `build_app`, shared by every session.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftui.data.demo import DEMO_RECIPE
from ftui.ui.paths import PathNotAllowedError, is_inside


@dataclass
class AppSettings:
    """What the operator chose on the command line."""

    runs_dir: Path
    workdir: Path
    data_root: Path | None = None
    # GPUs each training job gets (DistributedDataParallel when > 1); `python app.py --gpus all` gives every job
    # all visible GPUs.
    gpus: int = 1
    # The demo default: trained from random init when no pretrained weights are here (the usual offline case),
    # see ftui/data/demo.py DEMO_RECIPE for what it reaches.
    demo_backbone: str = DEMO_RECIPE["backbone"]
    demo_image_size: int = DEMO_RECIPE["image_size"]
    demo_epochs: int = DEMO_RECIPE["epochs"]
    # Limits for a shared server (flags --max-upload and --work-quota): one uploaded file, and everything
    # uploads and extracted zips may take under the work dir.
    max_upload_bytes: int = 1024**3
    work_quota_bytes: int = 20 * 1024**3
    # The proxy (address, or comma-separated addresses) whose X-Forwarded-For is believed (--trusted-proxy);
    # "" believes none: the login throttle counts the TCP peer, so a forged header cannot dodge it.
    trusted_proxy: str = ""
    # Fixes from the app (relabel/remove/merge) to a dataset under --data-root go to a copy per session unless
    # the operator allows editing the folder itself (--allow-data-root-edits).
    allow_data_root_edits: bool = False
    # What one client may queue (--max-jobs-per-address, --max-jobs-per-session, --max-job-images): unfinished
    # jobs per address (several people may share one behind a NAT) and per session, and epochs x training
    # images of one job (1,000,000: e.g. 10,000 images x 100 epochs).
    max_jobs_per_address: int = 3
    max_jobs_per_session: int = 2
    max_job_images: int = 1_000_000


class LRU:
    """A tiny thread-safe least-recently-used cache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def discard(self, matches) -> None:
        """Drop every entry whose key `matches(key)` (e.g. a dataset that was just edited)."""
        with self._lock:
            for key in [k for k in self._items if matches(k)]:
                del self._items[key]

    def put(self, key: Any, value: Any) -> Any:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


class AppContext:
    """Shared, server-side objects; one per running app."""

    def __init__(self, settings: AppSettings) -> None:
        from ftui.jobs import JobManager
        from ftui.runs import RunStore
        from ftui.ui import atomic_cache
        from ftui.ui.guard import Grants

        atomic_cache.install()  # many users at once: no half-written image output (see the module)
        self.settings = settings
        settings.runs_dir.mkdir(parents=True, exist_ok=True)
        settings.workdir.mkdir(parents=True, exist_ok=True)
        self.store = RunStore(settings.runs_dir)
        # Runs a killed app left "running" have no job any more: say so instead of "running" forever.
        self.store.mark_interrupted()
        # Which uploads each session may use: one client's files are never loadable by another.
        self.grants = Grants()
        self.jobs = JobManager(runs_dir=settings.runs_dir, gpus=settings.gpus)
        self.datasets = LRU(8)
        self.structures = LRU(16)
        self.predictors = LRU(2)
        # job id -> the browser token that started it; only that browser may stop it.
        self.owners: dict[str, str] = {}
        # job id -> (address, session) that queued it, and the lock that makes check + start one step (parallel
        # starts from one client must not all pass the per-client caps).
        self.clients: dict[str, tuple[str | None, str | None]] = {}
        self.admit_lock = threading.Lock()
        self._demo: Path | None = None
        self._demo_lock = threading.Lock()

    def browser_secret(self) -> str:
        """The key the browser's stored owner token is encrypted with, kept under the work dir (0600) so a
        server restart can still read it: with Gradio's default (a new random key per process) every browser
        came back as a stranger after a restart, and its form, runs and examples were gone."""
        import os
        import secrets

        path = self.settings.workdir / ".browser-state-secret"
        try:
            return path.read_text().strip()
        except OSError:
            pass
        secret = secrets.token_hex(16)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret)
        return secret

    def grant_owners_run(self, run_id: str, owner_token: str | None, session: str | None) -> bool:
        """Let `session` read the data of run `run_id` when this owner token started it (stamped in its
        status.json): after a restart the browser's grants are gone, but its runs are still its own."""
        from ftui.ui.guard import started_by

        if not owner_token or not run_id:
            return False
        try:
            folder = self.store.folder(self.settings.runs_dir / run_id)
            if not started_by(folder, owner_token):
                return False
            from ftui.config import TrainConfig

            data = TrainConfig.from_file(folder.path / "config.json").data
        except (OSError, ValueError):
            return False
        self.grants.grant(session, data if Path(data).suffix.lower() != ".csv" else Path(data).parent)
        return True

    @property
    def uploads_dir(self) -> Path:
        return self.settings.workdir / "uploads"

    def demo_source(self) -> Path:
        """The built-in demo dataset, generated once under the work dir."""
        with self._demo_lock:
            if self._demo is None:
                from ftui.data import demo

                self._demo = Path(demo.ensure_demo_dataset(self.settings.workdir / "demo"))
            return self._demo

    def quota_left(self) -> int:
        """Bytes uploads, extracted zips and sessions' edited copies of shared datasets may still take."""
        from ftui.ui.guard import folder_bytes

        used = sum(folder_bytes(d) for d in (self.uploads_dir, self.settings.workdir / "edited") if d.is_dir())
        return max(0, self.settings.work_quota_bytes - used)

    def readable(self, path: str | Path, session: str | None) -> bool:
        """May this session read `path`: the demo, under --data-root, or something it uploaded itself."""
        if is_inside(path, self.settings.workdir / "demo"):
            return True
        if self.settings.data_root is not None and is_inside(path, self.settings.data_root):
            return True
        return self.grants.allows(session, path)

    def shared_dataset(self, root: str | Path) -> bool:
        """The built-in demo and datasets under --data-root are shared (other sessions, the operator's own
        folder): a session's fixes go to a copy of its own, unless the app runs with --allow-data-root-edits."""
        data_root = self.settings.data_root
        return is_inside(root, self.settings.workdir / "demo") or (
            data_root is not None and is_inside(root, data_root) and not self.settings.allow_data_root_edits)

    def dataset_roots(self) -> list[Path]:
        """Folders a dataset's files may come from: the data root, uploads, the demo, edited copies."""
        roots = [self.uploads_dir, self.settings.workdir / "demo", self.settings.workdir / "edited"]
        if self.settings.data_root is not None:
            roots.append(self.settings.data_root)
        return roots

    def check_dataset_files(self, dataset: Any) -> None:
        """Refuse a dataset whose files lie outside the allowed folders (e.g. a CSV naming /etc files)."""
        roots = self.dataset_roots()
        for item in dataset.items:
            if not any(is_inside(item.path, root) for root in roots):
                raise PathNotAllowedError(
                    f"the dataset refers to {item.path}, which is outside the folders this app may read; "
                    "keep every image inside the uploaded folder (or under --data-root)"
                )
