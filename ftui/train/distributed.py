"""Several processes, one model: DistributedDataParallel through torch.distributed, started by torchrun.

`torchrun --nproc-per-node N -m ftui train ...` (or `python -m ftui train ... --gpus N`, which starts torchrun
itself) runs N copies of the same command; each reads its RANK / WORLD_SIZE / LOCAL_RANK from the
environment. Every global batch is split across the ranks in equal parts (short parts padded with
zero-weight samples), each rank's loss is divided by the whole global batch's weight and multiplied by the
world size, so DDP's gradient average equals one process training on the whole batch. Metrics are summed
over ranks before any event fires; rank 0 alone writes the run folder; a Stop on any rank stops them all.
`Dist.single()` is the one-process case with the same methods, so the engine has one code path.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ftui.errors import FtuiError

# The label of a padding sample (a short share of a global batch): CrossEntropyLoss's ignore_index, so it
# adds no loss and no gradient, and it is never counted as seen or correct.
IGNORE = -100


class DistributedError(FtuiError, RuntimeError):
    """A distributed setting that cannot work (e.g. more GPUs asked for than this machine has)."""


@dataclass
class Dist:
    """This process's place in the job: rank, world size, local rank, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @classmethod
    def single(cls, device: torch.device | None = None) -> Dist:
        return cls(device=device)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and reports to the user."""
        return self.rank == 0

    # --- data ---------------------------------------------------------------------------------
    def shard(self, batch: Sequence[int]) -> tuple[list[int], list[float]]:
        """This rank's equal part of one global batch (indices, weights 1.0); short parts are padded with
        the batch's first index at weight 0.0, so every rank runs the same number of steps and samples."""
        batch = list(batch)
        if not self.enabled:
            return batch, [1.0] * len(batch)
        per_rank = -(-len(batch) // self.world_size)
        part = batch[self.rank * per_rank:(self.rank + 1) * per_rank]
        pad = per_rank - len(part)
        return part + [batch[0]] * pad, [1.0] * len(part) + [0.0] * pad

    def shard_order(self, order: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(this rank's indices, padding mask) for each global batch of `order`; one process gets every
        batch whole with no padding."""
        for chunk in order.split(batch_size):
            part, weights = self.shard(chunk.tolist())
            yield torch.tensor(part, dtype=torch.long), torch.tensor(weights) == 0

    # --- communication -------------------------------------------------------------------------
    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's `tensor` (equal shapes on all ranks) concatenated in rank order, on the tensor's
        device; the tensor itself in one process. How each rank's share of cached features reaches all."""
        if not self.enabled:
            return tensor
        comm = self._comm_device()
        local = tensor.detach().to(comm).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        return torch.cat(parts).to(tensor.device)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over every rank (the values themselves in one process)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank (how a Stop reaches them all)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, obj):
        """Rank 0's value of `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        """NCCL talks through CUDA tensors; gloo through CPU ones."""
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    # --- a training step ------------------------------------------------------------------------
    def loss_norm(self, y: torch.Tensor, class_weight: torch.Tensor | None) -> tuple[torch.Tensor | float, float]:
        """(what the summed loss divides by, gradient scale): the batch size or its labels' summed class
        weights, over the whole global batch when several processes share it. DDP averages gradients over
        the ranks, so each rank's part is scaled by the world size: the sum is one process's mean loss."""
        if not self.enabled:  # no padding in one process: no mask (and no GPU sync for its size)
            return (float(y.shape[0]) if class_weight is None else class_weight[y].sum()), 1.0
        valid = y[y != IGNORE]
        local = float(valid.shape[0]) if class_weight is None else float(class_weight[valid].sum())
        return self.sum([local])[0], float(self.world_size)

    def sync_gradients(self, forward: torch.nn.Module, last: bool):
        """DDP's gradient all-reduce on the last micro-batch only (no_sync before it)."""
        if self.enabled and not last and hasattr(forward, "no_sync"):
            return forward.no_sync()
        return contextlib.nullcontext()

    def batch_totals(self, loss: float, correct: int, y: torch.Tensor) -> tuple[float, int, int]:
        """(mean loss, correct, images) of the global batch from this rank's share (padding not counted)."""
        if not self.enabled:
            return loss, correct, int(y.shape[0])
        loss, correct, n = self.sum([loss, correct, int((y != IGNORE).sum())])
        return loss, int(correct), int(n)

    # --- model ---------------------------------------------------------------------------------
    def sync_batchnorm(self, model: torch.nn.Module, groups: list, bn_mode: str) -> tuple[list, str | None]:
        """With BatchNorm training over several CUDA processes, every BatchNorm becomes a SyncBatchNorm
        (statistics over the whole global batch, as one process would compute them); the layer groups are
        re-pointed at the new modules (same parameters and buffers). Returns (groups, note for the run)."""
        if not self.enabled or bn_mode != "train" or not _has_batchnorm(model):
            return groups, None
        if self.device is None or self.device.type != "cuda":
            # SyncBatchNorm runs on GPUs only: on CPU processes each rank normalises with its own share.
            return groups, "BatchNorm statistics per process (SyncBatchNorm needs CUDA)"
        names = {id(m): name for name, m in model.named_modules()}
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:
            raise DistributedError("a model that is itself a BatchNorm layer cannot be synchronised in place")
        by_name = dict(model.named_modules())

        def live(module: torch.nn.Module) -> torch.nn.Module:
            if id(module) in names:
                return by_name[names[id(module)]]
            # A container made for the group (e.g. a slice of a Sequential) is not in the model: its children are.
            for key, child in module.named_children():
                module._modules[key] = live(child)
            return module

        synced = [type(g)(g.name, [live(m) for m in g.modules], g.num_params) for g in groups]
        return synced, "SyncBatchNorm: BatchNorm statistics over all processes' samples"

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module in DistributedDataParallel (gradients averaged over ranks) when there are several."""
        if not self.enabled or not any(p.requires_grad for p in module.parameters()):
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)


def _has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


_CURRENT = Dist()
# A job thread of the app that leads a group of its own (see `local_group`) sees that group; others don't.
_THREAD = threading.local()


def current() -> Dist:
    """This thread's Dist: a `local_group` it leads, else the process's (set by `init_from_env`), else the
    single-process case."""
    return getattr(_THREAD, "dist", None) or _CURRENT


def env_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun with more than one process, else None."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise DistributedError("WORLD_SIZE is set but RANK / LOCAL_RANK are not numbers: start with torchrun") from None


def init_from_env(device_preference: str = "auto") -> Dist:
    """Join the process group torchrun set up (one process: nothing to join). Each rank takes the GPU of its
    local rank; CPU runs (device cpu, or no CUDA) use the gloo backend."""
    from ftui import devices

    global _CURRENT
    found = env_world()
    if found is None:
        _CURRENT = Dist.single(devices.pick_device(device_preference))
        return _CURRENT
    rank, world, local = found
    device = devices.pick_device(device_preference)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise DistributedError(f"local rank {local} has no GPU: this machine has {torch.cuda.device_count()}")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, device_id=device if backend == "nccl" else None)
    _CURRENT = Dist(rank=rank, world_size=world, local_rank=local, device=device)
    return _CURRENT


def shutdown() -> None:
    """Leave the process group (at the end of a distributed run)."""
    global _CURRENT
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = Dist()


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The command that runs `python -m ftui <argv>` as `nproc` processes on this machine (torchrun)."""
    if nproc < 1:
        raise DistributedError(f"--gpus must be >= 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "ftui", *argv]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _package_env() -> dict[str, str]:
    """This environment with this ftui importable (a checkout need not be installed)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def local_group(config, nproc: int) -> Iterator[Dist]:
    """The app's "all GPUs" job: this thread is rank 0 (its events drive the UI as usual, it alone writes the
    run folder) and ranks 1..N-1 run `python -m ftui train --config ...` as worker processes that train
    silently. `config` is the job's TrainConfig; a CPU config uses N CPU processes over gloo."""
    from ftui import devices

    device = devices.pick_device(config.device)
    if device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise DistributedError(f"{nproc} GPUs asked for, this machine has {torch.cuda.device_count()}")
    if dist.is_initialized():
        raise DistributedError("another multi-GPU job is running in this process: wait for it to finish")
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="ftui-ranks-"))
    config.to_json(workdir / "run.json")
    env = {**_package_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nproc)}
    procs = [subprocess.Popen([sys.executable, "-m", "ftui", "train", "--config", str(workdir / "run.json")],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.DEVNULL)
             for r in range(1, nproc)]
    if device.type == "cuda":
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        # A worker that never starts or dies must not hang the app's job for torch's default 30 minutes.
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=nproc,
                                timeout=datetime.timedelta(minutes=10))
        _THREAD.dist = Dist(rank=0, world_size=nproc, local_rank=0, device=device)
        yield _THREAD.dist
    finally:
        _THREAD.dist = None
        if dist.is_initialized():
            dist.destroy_process_group()
        for proc in procs:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:  # a worker stuck after rank 0 failed: nothing left to wait for
                proc.kill()
