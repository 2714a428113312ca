"""Reload a finished (or stopped) run: its model in eval mode, classes, config, transform and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ftui.config import ConfigError, TrainConfig
from ftui.data.augment import eval_transform
from ftui.models.backbones import build
from ftui.results.trust import Trust
from ftui.runs import RunError, RunFolder, load_checkpoint
from ftui.train.tasks import CLASSIFICATION, Task, make_task


@dataclass
class LoadedRun:
    """A reloaded run, ready for prediction and evaluation."""

    id: str
    path: Path
    model: nn.Module
    classes: list[str]
    config: TrainConfig
    # image_size, resize_size, mean, std: what the eval transform needs.
    transform: dict[str, Any]
    metrics: pd.DataFrame
    status: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = "best"
    # What the head predicts and how its outputs read (ftui/train/tasks.py; classification for older runs).
    task: Task | None = None

    @property
    def kind(self) -> str:
        return self.task.kind if self.task is not None else CLASSIFICATION
    # Temperature and abstain threshold fitted after training (ftui/results/trust.py); T = 1 for old runs.
    trust: Trust = field(default_factory=Trust)
    # An ensemble's members as best.pt records them (run, path, backbone, temperature); [] for a plain run.
    members: list[dict[str, Any]] = field(default_factory=list)

    def eval_transform(self):
        """The eval pipeline (resize, center crop, normalise) this run was validated with."""
        t = self.transform
        return eval_transform(t["image_size"], t["resize_size"], tuple(t["mean"]), tuple(t["std"]))


def load_run(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu") -> LoadedRun:
    """Load `best.pt` (falling back to `last.pt`) from a run folder into an eval-mode model."""
    folder = RunFolder(Path(run_dir))
    if not (folder.path / "config.json").is_file():
        raise RunError(f"{run_dir} is not a run folder (no config.json)")
    try:
        config = TrainConfig.from_file(folder.path / "config.json")
    except ConfigError as exc:
        raise RunError(f"{run_dir}/config.json: {exc}") from None
    candidates = [folder.best_path, folder.last_path] if which == "best" else [folder.last_path]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise RunError(f"{run_dir} has no checkpoint yet (no best.pt or last.pt): the run saved no epoch")
    ckpt = load_checkpoint(path)
    classes = list(ckpt["classes"])
    try:
        if ckpt.get("members"):  # an ensemble of runs (ftui/results/ensemble.py)
            from ftui.models.ensemble import load_ensemble_model

            model = load_ensemble_model(ckpt, len(classes))
        else:
            model = build(ckpt["backbone"], len(classes), weights="none")
            model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise RunError(f"{path} does not fit backbone {ckpt['backbone']}: {str(exc)[:300]}") from None
    model.to(device).eval()
    transform = checked_transform(ckpt, path)
    return LoadedRun(
        id=folder.id, path=folder.path, model=model, classes=classes, config=config,
        transform=transform, metrics=folder.metrics(), status=folder.read_status(),
        checkpoint=path.stem, trust=Trust.from_meta(ckpt.get("trust")),
        members=list(ckpt.get("members") or []), task=make_task(ckpt),
    )


# What a run's transform may say: the sizes TrainConfig allows (a checkpoint is a file anyone may have edited:
# image_size 100000 made export allocate 480 GB), three finite channel statistics, no zero std.
MAX_IMAGE_SIZE = 1024
MAX_RESIZE = 2 * MAX_IMAGE_SIZE


def checked_transform(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """image_size, resize_size, mean, std from a checkpoint, range-checked; RunError naming the bad value."""
    import math

    def bad(what: str) -> RunError:
        return RunError(f"{path.name} holds an unusable {what}: the file is damaged or was edited")

    try:
        size, resize = ckpt["image_size"], ckpt["resize_size"]
        mean, std = [float(v) for v in ckpt["mean"]], [float(v) for v in ckpt["std"]]
    except (KeyError, TypeError, ValueError):
        raise bad("transform (image_size, resize_size, mean, std)") from None
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= MAX_IMAGE_SIZE:
        raise bad(f"image_size {str(size)[:20]} (allowed 16..{MAX_IMAGE_SIZE})")
    if isinstance(resize, bool) or not isinstance(resize, int) or not size <= resize <= MAX_RESIZE:
        raise bad(f"resize_size {str(resize)[:20]} (allowed image_size..{MAX_RESIZE})")
    if len(mean) != 3 or not all(math.isfinite(v) and -10 <= v <= 10 for v in mean):
        raise bad("mean (three finite numbers)")
    if len(std) != 3 or not all(math.isfinite(v) and 1e-6 <= v <= 100 for v in std):
        raise bad("std (three positive numbers; 0 would divide by zero)")
    return {"image_size": size, "resize_size": resize, "mean": mean, "std": std}
