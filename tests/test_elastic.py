"""Elastic multi-node training on CPU: two "nodes" (two torchrun agents, one gloo worker each) meet at a c10d
rendezvous on localhost; one worker is killed mid-run; the group restarts, resumes from last.pt, and finishes
with every epoch listed once and the weights of an unbroken run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from ftui.runs import load_checkpoint
from ftui.train.distributed import _free_port
from ftui.train.elastic import ElasticError, launch_command, launch_env, worker_argv
from tests.conftest import make_class_folder

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4


def _flags(data: Path, out: Path) -> list[str]:
    return ["train", str(data), "--backbone", "resnet18", "--weights", "none", "--train-groups", "all",
            "--recipe", "plain", "--optimizer", "sgd", "--lr", "0.01", "--scheduler", "none", "--epochs",
            str(EPOCHS), "--batch-size", "6", "--image-size", "32", "--no-augment", "--val-fraction", "0.25",
            "--device", "cpu", "--out", str(out)]


def test_launch_command_uses_c10d_rendezvous_and_strips_the_launch_flags():
    argv = ["train", "d", "--nnodes", "2", "--rdzv-endpoint=10.0.0.1:29400", "--max-restarts", "3", "--out", "r"]
    cmd = launch_command(argv, 2, "10.0.0.1:29400", 1, 3, "runs/r", None)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--standalone" not in cmd
    assert {"--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=10.0.0.1:29400", "--max-restarts=3",
            "--rdzv-id=ftui-r"} <= set(cmd)
    assert cmd[cmd.index("ftui") + 1:] == ["train", "d", "--out", "r"]
    assert worker_argv(["train", "--gpus=2", "--nproc-per-node", "2", "x"]) == ["train", "x"]
    with pytest.raises(ElasticError, match="--out"):
        launch_command(argv, 2, "h:1", 1, 0, None, None)
    with pytest.raises(ElasticError, match="HOST:PORT"):
        launch_command(argv, 2, "h; rm -rf /", 1, 0, "r", None)
    # a restarted worker group must not meet the killed group's keys in a store torchrun reuses
    assert launch_env({"PATH": "/bin", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "0"}) == {
        "PATH": "/bin", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc)."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _worker_of(launcher: subprocess.Popen) -> int | None:
    """The ftui worker process under a launcher (its command line has `-m ftui train` but no --nnodes)."""
    for pid in _children(launcher.pid):
        try:
            cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ftui" in cmd and b"train" in cmd and b"--nnodes" not in cmd and b"torch.distributed.run" not in cmd:
            return pid
    return None


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_bytes().decode(errors="replace")[-chars:]


def _epochs_written(out: Path) -> int:
    try:
        return len(pd.read_csv(out / "metrics.csv"))
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return 0


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason=(
    "quarantined, issue 24: root cause fixed (torchrun reused one worker store across restarts, "
    "ftui/train/elastic.py launch_env); kept until 5 runs in a row pass"))
def test_two_nodes_survive_a_killed_worker_and_match_an_unbroken_run(tmp_path, tmp_path_factory):
    from ftui.cli import main

    data = make_class_folder(tmp_path / "colours", per_class=7)
    out = tmp_path / "elastic"
    endpoint = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "ftui", *_flags(data, out), "--nnodes", "2", "--rdzv-endpoint", endpoint,
              "--max-restarts", "2"]
    # Logs go to files: an undrained pipe fills (tracebacks of the killed group) and blocks the agents.
    logs_dir = tmp_path_factory.mktemp("agent-logs")
    log_files = [(logs_dir / f"node{i}.txt").open("wb") for i in range(2)]
    nodes = [subprocess.Popen(launch, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
             for log in log_files]
    killed = None
    try:
        deadline = time.time() + 420
        while killed is None and time.time() < deadline and all(n.poll() is None for n in nodes):
            if _epochs_written(out) >= 2 and (out / "last.pt").is_file():
                killed = _worker_of(nodes[1])
                if killed:
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)
        assert killed is not None, "no worker was killed mid-run: " + _tail(logs_dir / "node1.txt")
        codes = [n.wait(timeout=max(1, deadline + 300 - time.time())) for n in nodes]
    finally:
        for n in nodes:
            if n.poll() is None:
                for pid in [*_children(n.pid), n.pid]:  # its torchrun agent and workers too
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        for log in log_files:
            log.close()
    assert codes == [0, 0], "\n---\n".join(_tail(logs_dir / f"node{i}.txt", 3000) for i in range(2))
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "done" and status.get("resumed_from_epoch", 0) >= 1, status
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == list(range(1, EPOCHS + 1))  # every epoch once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colours", "elastic"]  # no other run folder written

    assert main(_flags(data, tmp_path / "unbroken")) == 0  # one process, never interrupted
    a = load_checkpoint(out / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "unbroken" / "last.pt")["state_dict"]
    for key, value in b.items():
        assert torch.allclose(a[key].float(), value.float(), atol=1e-4, rtol=1e-3), key
