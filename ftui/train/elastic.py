"""Several machines, one run: `ftui train ... --nnodes N --rdzv-endpoint HOST:PORT --out RUN [--max-restarts K]`.

The same command on each of the N machines starts torchrun (torch.distributed.run) with c10d rendezvous at
HOST:PORT (a port on one of the machines; every node names the same one) and `--nproc-per-node` workers, each
running `python -m ftui train ...` without these flags. torchrun (torch.distributed.elastic) watches the
workers: when one dies, every node's agent stops its workers and starts the whole group again, up to K times.

A restarted group resumes: rank 0 finds `RUN/last.pt` (the end of the last finished epoch, with optimizer,
scheduler, epoch and RNG state), trims metrics.csv to it (ftui/train/resume.py) and the other ranks load the
same last.pt read-only after a barrier, so every epoch is trained, and listed, once. A group that died before
its first epoch ended starts the run again. Only rank 0 writes, and after a restart rank 0 may be on another
machine: RUN must be on storage that every node sees (the shared file system of a cluster).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ftui.errors import FtuiError

# Flags of the launching command that the workers must not see again.
_LAUNCH_FLAGS = ("--nnodes", "--rdzv-endpoint", "--max-restarts", "--nproc-per-node", "--rdzv-id")
_ENDPOINT = re.compile(r"^[A-Za-z0-9_.\-]+:\d{1,5}$")


# torchrun's c10d rendezvous (torch >= 2.5) by default lends its agents' own TCPStore to the workers: the rank-0
# agent starts it once and every later worker group gets the same one back (torch/distributed/elastic/
# rendezvous/dynamic_rendezvous.py caches `_shared_tcp_store_server`), with no per-attempt key prefix
# (torch/distributed/rendezvous.py). A restarted group's gloo rendezvous then meets the keys the killed group
# left: measured here, both restarted workers sat in init_process_group's gloo connectFullMesh for minutes
# (until gloo's timeout: 'connectFullMesh ... Connection refused' when a dead worker's address is read).
# TORCHELASTIC_RESTART_COUNT cannot namespace it either: each agent counts its own restarts (pytorch#135712,
# #108158). Opting out gives every round a fresh store: the rank-0 agent picks a port for that round and the
# rank-0 worker hosts the store there.
_FRESH_STORE_EACH_ROUND = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


class ElasticError(FtuiError):
    """Multi-node settings that cannot work (no --out, a malformed endpoint, bad counts)."""


def launch_command(argv: Sequence[str], nnodes: int, endpoint: str, nproc_per_node: int, max_restarts: int,
                   out: str | None, rdzv_id: str | None) -> list[str]:
    """torchrun with c10d rendezvous running `python -m ftui <argv without the launch flags>` per worker."""
    if not out:
        raise ElasticError("--nnodes needs --out RUN_DIR: every node must write and resume the same run folder")
    if not 1 <= nnodes <= 1024:
        raise ElasticError(f"--nnodes must be in [1, 1024], got {nnodes}")
    if not _ENDPOINT.match(endpoint or ""):
        raise ElasticError(f"--rdzv-endpoint must be HOST:PORT, got {endpoint!r}")
    if not 1 <= nproc_per_node <= 64 or not 0 <= max_restarts <= 100:
        raise ElasticError("--nproc-per-node must be in [1, 64] and --max-restarts in [0, 100]")
    run_id = rdzv_id or "ftui-" + re.sub(r"[^A-Za-z0-9_-]+", "_", Path(out).name)[:60]
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
            f"--nproc-per-node={nproc_per_node}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
            f"--rdzv-id={run_id}", f"--max-restarts={max_restarts}", "-m", "ftui", *worker_argv(argv)]


def launch_env(env: dict[str, str]) -> dict[str, str]:
    """The environment torchrun runs in: `env` with a fresh worker store for every rendezvous round."""
    return {**env, **_FRESH_STORE_EACH_ROUND}


def worker_argv(argv: Sequence[str]) -> list[str]:
    """argv without the launch flags (`--flag V` and `--flag=V`) and without --gpus."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in (*_LAUNCH_FLAGS, "--gpus"):
            skip = True
        elif not arg.startswith(tuple(f"{f}=" for f in (*_LAUNCH_FLAGS, "--gpus"))):
            out.append(arg)
    return out


def is_elastic_worker() -> bool:
    """True in a worker that torch.distributed.elastic started."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def restart_count() -> int:
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def prepare_restart(out: str | Path, dist) -> bool:
    """In a worker of a restarted group: True when the run in `out` resumes from its last.pt (rank 0 reopens
    it, the others wait for that); False when the group starts the run from the beginning (rank 0 empties
    the folder a group that died before its first epoch left)."""
    from ftui.runs import RunFolder

    folder = RunFolder(Path(out))
    resumable = folder.last_path.is_file() and (folder.path / "config.json").is_file()
    if dist.is_main:
        if resumable:
            if folder.read_status().get("status") in ("running", "created"):
                # Its process died with the old group (torchrun restarts only a stopped group).
                folder.update_status(status="interrupted", message="worker group restarted by torchrun")
        elif restart_count() > 0 and folder.path.is_dir():
            for child in folder.path.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    dist.barrier()
    return resumable
