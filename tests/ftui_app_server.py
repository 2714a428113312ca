"""Launch the ftui Gradio app in-process on a free localhost port for the API and browser tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftui.ui import AppContext, AppSettings, build_app, launch_options


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(tmp: Path, data_root: Path | None = None, auth: tuple[str, str] | None = None,
                **limits) -> Iterator[tuple[str, AppContext]]:
    """(url, context) of a live app with its own runs and work folders; every job is stopped afterwards.

    `limits` are AppSettings fields (max_upload_bytes, work_quota_bytes).
    """
    settings = AppSettings(runs_dir=tmp / "runs", workdir=tmp / "work", data_root=data_root, **limits)
    demo, ctx = build_app(settings)
    demo.queue(default_concurrency_limit=1)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            quiet=True, auth=auth, **launch_options(settings))
    try:
        yield url, ctx
    finally:
        ctx.jobs.stop_all()
        for job in ctx.jobs.jobs():
            job.wait(30)
        demo.close()
