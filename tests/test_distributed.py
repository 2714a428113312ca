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

from ftui.train.distributed import Dist, DistributedError, env_world, torchrun_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(7, 5, generator=g), torch.randint(0, 3, (7,), generator=g)


def _join(rank: int, world: int, port: int):
    """This spawned process's Dist in a gloo group, set up from the environment as torchrun would."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from ftui.train.distributed import init_from_env

    return init_from_env("cpu")


def _run_two(worker, out: Path, name: str) -> tuple[dict, dict]:
    """Spawn `worker` as ranks 0 and 1 and read the JSON each wrote to out/<name><rank>.json."""
    mp.spawn(worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    r0, r1 = (json.loads((out / f"{name}{i}.json").read_text()) for i in range(2))
    return r0, r1


def _worker(rank: int, world: int, port: int, out: str) -> None:
    from ftui.train.distributed import shutdown

    d = _join(rank, world, port)
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
    r0, r1 = _run_two(_worker, tmp_path, "rank")
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


def _cache_worker(rank: int, world: int, port: int, out: str) -> None:
    """Each rank computes its share of every global batch's features; every rank then holds all of them."""
    from ftui.train.distributed import shutdown
    from ftui.train.featurecache import CachedTrainFeatures, CachedValFeatures, FeatureStore, PrefixRunner

    d = _join(rank, world, port)
    computed: list[int] = []

    def images(view, order):
        # An item's "image" is its index (plus 100 per view), its label the index too; the batch size is
        # the share per rank, as ImageSource sets it.
        for chunk in order.split(2):
            computed.extend(chunk.tolist())
            x = (chunk.float() + 100 * view).unsqueeze(1).repeat(1, 3)
            yield x, chunk.clone()

    try:
        runner = PrefixRunner(torch.nn.Identity(), torch.device("cpu"))
        store = FeatureStore(7 * 2 + 5, (3,), 1 << 20, torch.device("cpu"))
        gen = torch.Generator().manual_seed(3)
        train = CachedTrainFeatures(runner, store, images, 7, 2, 3, gen, d)
        val = CachedValFeatures(runner, store, images, 5, 3, row_offset=14, dist=d)
        epochs = [[y.tolist() for _, y in train.batches()] for _ in range(3)]
        val_epochs = [[y.tolist() for _, y in val.batches()] for _ in range(2)]
        result = {"epochs": epochs, "val": val_epochs, "computed": computed,
                  "store": store.data[:, 0].tolist(), "labels": train.labels.tolist()}
        Path(out, f"cache{rank}.json").write_text(json.dumps(result))
    finally:
        shutdown()


@pytest.mark.slow
def test_feature_cache_with_two_processes_computes_each_share_once_and_stores_everything_everywhere(tmp_path):
    from ftui.train.distributed import IGNORE

    r0, r1 = _run_two(_cache_worker, tmp_path, "cache")
    # Both ranks store every item of both views and every val item, with the right labels.
    expected = [float(i) for i in range(7)] + [100.0 + i for i in range(7)] + [float(i) for i in range(5)]
    assert r0["store"] == r1["store"] == expected
    assert r0["labels"] == r1["labels"] == list(range(7))
    # Each epoch, the two ranks' shares (padding removed) make up each global batch of 3 exactly once.
    for e0, e1 in zip(r0["epochs"] + r0["val"], r1["epochs"] + r1["val"]):
        assert len(e0) == len(e1)
        seen = [i for b0, b1 in zip(e0, e1) for i in b0 + b1 if i != IGNORE]
        assert sorted(seen) == list(range(len(seen))) and len(seen) in (7, 5)
    # The prefix ran on each item once per stored view and once for val: work is split, not repeated.
    assert len(r0["computed"]) + len(r1["computed"]) <= 2 * (7 + 1) + (5 + 1) + 2 * 2


def test_sync_batchnorm_on_cuda_processes_keeps_parameters_and_repoints_the_groups():
    from ftui.models.backbones import build, layer_groups
    from ftui.models.freezing import set_train_mode

    model = build("resnet18", 3, weights="none")
    groups = layer_groups(model, "resnet18")
    params = {id(p) for p in model.parameters()}
    # Off with one process, with frozen BatchNorm, and on CPU processes (SyncBatchNorm needs CUDA).
    assert Dist.single().sync_batchnorm(model, groups, "train") == (groups, None)
    assert Dist(rank=0, world_size=2, device=torch.device("cuda")).sync_batchnorm(model, groups, "frozen") == (groups, None)
    same, note = Dist(rank=0, world_size=2, device=torch.device("cpu")).sync_batchnorm(model, groups, "train")
    assert same is groups and "per process" in note
    # Conversion needs no process group: only running it in training mode does.
    synced, note = Dist(rank=0, world_size=2, device=torch.device("cuda")).sync_batchnorm(model, groups, "train")
    assert "SyncBatchNorm" in note
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, torch.nn.SyncBatchNorm) for m in bns)
    assert {id(p) for p in model.parameters()} == params  # the optimizer's parameters are the same objects
    inside = {id(m) for m in model.modules()}
    assert [g.name for g in synced] == [g.name for g in groups]
    # Every BatchNorm a group reaches is a live one of the model (groups may hold slices made for them).
    reached = [m for g in synced for top in g.modules for m in top.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert reached and all(id(m) in inside for m in reached)
    # The stem group's BatchNorm is the new module: freezing it by group reaches the live layer.
    set_train_mode(model, synced, {synced[-1].name}, bn_mode="train")
    assert not model.bn1.training and model.fc.training
