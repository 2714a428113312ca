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
                port: int | None = None, **limits) -> Iterator[tuple[str, AppContext]]:
    """(url, context) of a live app with its own runs and work folders; every job is stopped afterwards.

    `limits` are AppSettings fields (max_upload_bytes, work_quota_bytes); `port` the same one again for a
    restart (the browser's localStorage belongs to the address, port included).
    """
    settings = AppSettings(runs_dir=tmp / "runs", workdir=tmp / "work", data_root=data_root, **limits)
    demo, ctx = build_app(settings)
    demo.queue(default_concurrency_limit=1)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port or free_port(), prevent_thread_lock=True,
                            quiet=True, auth=auth, **launch_options(settings))
    try:
        yield url, ctx
    finally:
        ctx.jobs.stop_all()
        for job in ctx.jobs.jobs():
            job.wait(30)
        demo.close()


def start_app_process(tmp: Path, *flags: str, preexec_fn=None, timeout: float = 120):
    """`python app.py` in its own process (runs and work folders under tmp); returns (url, Popen).

    For the tests that kill the app (-9) and start it again on the same runs folder.
    """
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    root = Path(__file__).resolve().parents[1]
    log = open(tmp / f"app-{port}.log", "w")  # noqa: SIM115 - closed with the process by the caller's kill
    proc = subprocess.Popen(
        [sys.executable, str(root / "app.py"), "--port", str(port), "--runs-dir", str(tmp / "runs"),
         "--workdir", str(tmp / "work"), *flags],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,  # noqa: PLW1509 - only setrlimit
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}: {(tmp / f'app-{port}.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return url, proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("app did not start in time")
