"""The Train step's Resume: carry on an interrupted or stopped run from its last.pt; only its owner may.

The owner is recorded in the run's status.json as a hash of the owner token (a browser keeps its token in
local storage), so the same browser or API client can resume after the app itself was restarted.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ftui.ui.guard import InputError, address_of, client_quota, owner_quota, session_of, started_by, token

_RESUME_LOCK = threading.Lock()




def resume_run(ctx: Any, run_id: str, owner_token: str | None, request: Any = None) -> str:
    """Queue a job that resumes run `run_id`; returns its job id. ValueError says why it cannot."""
    from ftui.train.resume import open_for_resume
    from ftui.ui.results_step import run_folder

    if not owner_token:
        raise InputError("no owner token: reload the page; API clients pass the owner_token that started the run")
    token(owner_token)
    folder = run_folder(ctx, run_id)
    if not started_by(folder, owner_token):
        raise InputError("only the browser (or API client token) that started this run can resume it")
    _folder, config, _checkpoint = open_for_resume(folder.path)  # says why not before anything is queued
    # One run, one job: the check and the start happen under one lock (three calls at once queued two jobs),
    # and a queued job counts by the folder it was asked to resume (its run_dir is only set once it runs).
    with getattr(ctx, "admit_lock", _RESUME_LOCK):
        if any(_resumes(job, folder.path) for job in ctx.jobs.jobs()):
            raise InputError(f"run {folder.id} is already training or queued to")
        owner_quota(ctx.jobs.jobs(), ctx.owners, owner_token)
        client = (address_of(request), session_of(request))
        client_quota(ctx.jobs.jobs(), ctx.clients, *client,
                     (ctx.settings.max_jobs_per_address, ctx.settings.max_jobs_per_session))
        job = ctx.jobs.start(config.replace(runs_dir=str(ctx.settings.runs_dir)), run_dir=folder.path,
                             resume=True)
        ctx.owners[job.id], ctx.clients[job.id] = owner_token, client
    return job.id


def _resumes(job: Any, path: Path) -> bool:
    """True when an unfinished job trains (or will train) the run folder at `path`."""
    where = job.run_dir or getattr(job, "run_dir_request", None)
    return where is not None and not job.done() and Path(where).resolve() == Path(path).resolve()
