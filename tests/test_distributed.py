"""torch.distributed helpers with 2 real processes on CPU (gloo), as torchrun would start them."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ftui.distributed import Dist, DistributedError, env_world, torchrun_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(7, 5, generator=g), torch.randint(0, 3, (7,), generator=g)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from ftui.distributed import init_from_env, shutdown

    d = init_from_env("cpu")
    try:
        x, y = _data()
        part, weights = d.shard(range(7))
        torch.manual_seed(0)
        model = d.wrap(torch.nn.Linear(5, 3))
        ce = torch.nn.functional.cross_entropy(model(x[part]), y[part], reduction="none")
        # The whole global batch's weight (7), times the world size: DDP's average is then the global mean.
        loss = (ce * torch.tensor(weights)).sum() / 7 * d.world_size
        loss.backward()
        result = {
            "part": part, "weights": weights, "sum": d.sum([rank + 1, 1]), "any_one": d.any(rank == 1),
            "any_none": d.any(False), "broadcast": d.broadcast(f"from rank {rank}"), "main": d.is_main,
            "grad": model.module.weight.grad.flatten().tolist(),
        }
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        shutdown()


@pytest.mark.slow
def test_two_gloo_processes_shard_sum_stop_and_average_gradients_like_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2))
    assert (r0["part"], r0["weights"]) == ([0, 1, 2, 3], [1.0] * 4)
    assert (r1["part"], r1["weights"]) == ([4, 5, 6, 0], [1.0, 1.0, 1.0, 0.0])
    assert r0["sum"] == r1["sum"] == [3.0, 2.0]
    assert r0["any_one"] and r1["any_one"] and not r0["any_none"] and not r1["any_none"]
    assert r0["broadcast"] == r1["broadcast"] == "from rank 0"
    assert r0["main"] and not r1["main"]
    # One process on the whole batch of 7.
    x, y = _data()
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    expected = model.weight.grad.flatten()
    for r in (r0, r1):
        assert torch.allclose(torch.tensor(r["grad"]), expected, atol=1e-6)


def test_one_process_is_the_single_case(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert env_world() is None
    d = Dist.single()
    assert not d.enabled and d.is_main
    assert d.shard([3, 1, 2]) == ([3, 1, 2], [1.0, 1.0, 1.0])
    assert d.sum([1, 2.5]) == [1.0, 2.5] and d.any(True) and not d.any(False) and d.broadcast(5) == 5
    model = torch.nn.Linear(2, 2)
    assert d.wrap(model) is model
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(DistributedError):
        env_world()


def test_shard_gives_every_rank_the_same_count_even_for_a_tiny_last_batch():
    parts = [Dist(rank=r, world_size=4).shard([9, 8]) for r in range(4)]
    assert [p for p, _ in parts] == [[9], [8], [9], [9]]
    assert [w for _, w in parts] == [[1.0], [1.0], [0.0], [0.0]]


def test_torchrun_command_runs_this_package_as_n_processes():
    cmd = torchrun_command(4, ["train", "data", "--epochs", "1"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc-per-node=4" in cmd
    assert cmd[-6:] == ["-m", "ftui", "train", "data", "--epochs", "1"]
    with pytest.raises(DistributedError):
        torchrun_command(0, [])
