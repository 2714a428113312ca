"""Errors meant for users, and logging for everything else.

`FtuiError` is the one base for messages a user can act on (a dataset not found, a bad setting, a weights
file that does not fit): its text is shown as is, with no traceback. Every other exception is a bug or an
environment failure: it is logged with its traceback (module loggers under "ftui", and for a training run
the run folder's log.txt) and the user sees "internal error, details in <run>/log.txt".

FtuiError is a ValueError so that the many `except ValueError` handlers that guard user input keep
catching it; the reverse no longer holds: a plain ValueError from pandas, PIL or numpy is internal.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

LOG_NAME = "log.txt"
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s"
_configured = False
_configure_lock = threading.Lock()


class FtuiError(ValueError):
    """A message for the user: shown as is, without a traceback."""


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, FtuiError)


def internal_message(log_path: str | Path | None, exc: BaseException | None = None) -> str:
    """What the user sees for an unexpected exception: where its traceback is. Without a run (the lr finder,
    a bare fit) the traceback is only in the process's log, so the exception's type and first words come
    along to tell failures apart."""
    if log_path:
        return f"internal error, details in {log_path}"
    what = f" ({type(exc).__name__}: {str(exc)[:200]})" if exc is not None else ""
    return f"internal error{what}, details in the server log"


def log_failure(logger: logging.Logger, exc: BaseException, what: str) -> None:
    """A user error as one info line (the user sees its message anyway); anything else as an error with
    its traceback."""
    if is_user_error(exc):
        logger.info("%s: %s", what, exc)
    else:
        logger.error("%s: %s: %s", what, type(exc).__name__, exc, exc_info=exc)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a redirected or captured stream included)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def shown_message(logger: logging.Logger, exc: BaseException, what: str) -> str:
    """The text a UI shows for an exception it caught: a user error's own message; anything else is logged
    with its traceback and shown as an internal error (its text may name server paths or mean nothing)."""
    log_failure(logger, exc, what)
    if is_user_error(exc) and callable(getattr(exc, "for_client", None)):
        return exc.for_client()  # e.g. a full disk: the file's name, not the server's folders
    return str(exc) if is_user_error(exc) else internal_message(None)


def configure_logging(console: int = logging.INFO) -> None:
    """Once per process (the app, the CLI): ftui's loggers pass INFO and up (a run's log.txt gets them),
    stderr shows `console` and up (the CLI: warnings and internal errors, not its own progress twice)."""
    global _configured
    with _configure_lock:
        if _configured:
            return
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.setLevel(console)
        root = logging.getLogger("ftui")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        _configured = True


class _RunHandler(logging.FileHandler):
    """A run's log.txt, taking only records logged from the thread that opened it: jobs for several
    devices may train at once in one app."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter(FORMAT))
        self.thread = threading.get_ident()
        self.addFilter(lambda record: record.thread == self.thread)


@contextlib.contextmanager
def run_log(run_dir: str | Path) -> Iterator[Path]:
    """For the block's length, what ftui logs from this thread also goes to `<run_dir>/log.txt` (appended:
    a resumed run keeps its history). Nested blocks for the same run (the job around the trainer) share one
    handler, so no line is written twice."""
    path = Path(run_dir).resolve() / LOG_NAME
    # Unconfigured (a library caller, a test) the "ftui" logger passes warnings and errors only.
    logger = logging.getLogger("ftui")
    here = threading.get_ident()
    if any(isinstance(h, _RunHandler) and h.thread == here and Path(h.baseFilename) == path
           for h in logger.handlers):
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _RunHandler(path)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
