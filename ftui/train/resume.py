"""Resume: carry an interrupted or stopped run on from its last.pt.

At each epoch's end the trainer's state (optimizer, scheduler, grad scaler, epoch, best so far, RNG) goes into
last.pt under "resume", next to the weights, as tensors and plain types only: the file stays readable with
`torch.load(weights_only=True)`. `open_for_resume` checks a run folder can go on; `trainer_state` turns the
checkpoint back into what `Trainer.load_state_dict` takes.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftui.config import ConfigError, TrainConfig
from ftui.runs import RunError, RunFolder, load_checkpoint, remove_temp_files, write_bytes_atomic

RESUMABLE = ("interrupted", "stopped", "failed")


def rng_state() -> dict[str, Any]:
    """Python's, numpy's and torch's global random states (what last.pt keeps for a resume)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


@contextlib.contextmanager
def rng_preserved(generator: torch.Generator | None = None) -> Iterator[None]:
    """The global random states (and `generator`'s) as they were before the block, whatever it drew."""
    state = rng_state()
    own = generator.get_state() if generator is not None else None
    try:
        yield
    finally:
        set_rng_state(state)
        if generator is not None:
            generator.set_state(own)


def training_state(trainer) -> dict[str, Any]:
    """What last.pt stores next to a trainer's weights for a resume (Trainer.state_dict without the model)."""
    return {
        "epoch": trainer.epoch, "phase_index": trainer.phase_index,
        "optimizer": copy.deepcopy(trainer.optimizer.state_dict()), "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(), "best_val_acc": trainer.result.best_val_acc,
        "best_epoch": trainer.result.best_epoch, "global_step": trainer.global_step, "rng": rng_state(),
    }


def restore_phase(trainer, state: dict[str, Any] | None, index: int) -> None:
    """The optimizer, scheduler and grad scaler of phase `index` as `state` saved them (a resume into it)."""
    if state is not None and state.get("phase_index") == index:
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.scaler.load_state_dict(state["scaler"])


def checkpoint_state(state: dict[str, Any]) -> dict[str, Any]:
    """`Trainer.state_dict()` without the model (saved beside it), RNG states as tensors and plain types."""
    out = {k: v for k, v in state.items() if k != "model"}
    rng = state["rng"]
    name, keys, pos, has_gauss, cached = rng["numpy"]
    out["rng"] = {
        "python": rng["python"],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": rng["torch"],
    }
    return out


def trainer_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What `Trainer.load_state_dict` takes, from a last.pt written with a "resume" entry."""
    saved = dict(checkpoint["resume"])
    name, keys, pos, has_gauss, cached = saved["rng"]["numpy"]
    python = saved["rng"]["python"]
    saved["rng"] = {
        "python": (python[0], tuple(python[1]), python[2]),
        "numpy": (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached),
        "torch": saved["rng"]["torch"],
    }
    saved["model"] = checkpoint["state_dict"]
    return saved


def open_for_resume(run_dir: str | Path) -> tuple[RunFolder, TrainConfig, dict[str, Any]]:
    """(folder, config, last.pt) of a run that may go on; RunError saying why not otherwise.

    metrics.csv keeps only the epochs last.pt has (a row written just before a crash is dropped, so the
    resumed epoch is not listed twice) and leftover temp files are removed.
    """
    folder = RunFolder(Path(run_dir))
    if not (folder.path / "config.json").is_file():
        raise RunError(f"{run_dir} is not a run folder (no config.json)")
    status = folder.read_status().get("status", "unknown")
    if status not in RESUMABLE:
        raise RunError(f"run {folder.id} is {status}: only an interrupted, stopped or failed run can be resumed")
    try:
        config = TrainConfig.from_file(folder.path / "config.json")
    except ConfigError as exc:
        raise RunError(str(exc)) from None
    if not folder.last_path.is_file():
        raise RunError(f"run {folder.id} has no last.pt: it finished no epoch, start it again instead")
    checkpoint = load_checkpoint(folder.last_path)
    if "resume" not in checkpoint:
        raise RunError(f"{folder.last_path} holds no training state to resume from (saved by an older ftui or "
                       "before the first epoch ended): start the run again instead")
    if int(checkpoint["resume"]["epoch"]) >= config.epochs:
        raise RunError(f"run {folder.id} already trained all {config.epochs} epochs")
    remove_temp_files(folder.path)
    _keep_metrics_until(folder, int(checkpoint["resume"]["epoch"]))
    return folder, config, checkpoint


def _keep_metrics_until(folder: RunFolder, epoch: int) -> None:
    """Drop metrics.csv rows after `epoch` (written before a crash that lost their checkpoint)."""
    metrics = folder.metrics()
    if metrics.empty or "epoch" not in metrics or int(metrics["epoch"].max()) <= epoch:
        return
    kept = metrics[metrics["epoch"] <= epoch]
    write_bytes_atomic(folder.metrics_path, kept.to_csv(index=False).encode())
