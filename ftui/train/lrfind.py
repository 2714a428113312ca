"""Learning-rate finder (fastai's `lr_find`): one short run with an exponentially rising rate.

It is a callback (`LRFinder`) on the training loop itself, so the sweep trains exactly as `fit` would
(feature cache, micro-batches, channels_last, the same loss).

The rate sweeps ~1e-7 -> 10 over at most 100 optimizer steps on the run's own data (on cached features
when the first phase trains only the head), the loss is smoothed, the sweep stops when it explodes, and
the model is put back exactly as it was. The suggestion is fastai's "valley": a point well inside the
longest stretch where the loss keeps falling.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from torch import nn

from ftui.config import TrainConfig
from ftui.errors import FtuiError
from ftui.train.batches import ImageData
from ftui.train.callbacks import Callback, CancelFit, CancelValidate
from ftui.train.recipes import plan_for
from ftui.train.trainer import Trainer, seed_everything

Progress = Callable[[float, str], None]


class LrFindError(FtuiError):
    """The sweep could not run (no batches, the loss was never finite)."""


@dataclass
class LrFindResult:
    """table: DataFrame(lr, loss, raw_loss), one row per step; suggestion: the rate to train with."""

    table: pd.DataFrame
    suggestion: float
    steepest: float


class LRFinder(Callback):
    """Sets the rate before each batch (exponentially rising), records the smoothed loss after it, ends the
    fit when the loss explodes or after `num_steps`; skips validation. `lr_sweep` puts the model back."""

    def __init__(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100,
                 progress: Progress | None = None) -> None:
        self.start_lr, self.num_steps, self.progress = start_lr, num_steps, progress
        self.gamma = (end_lr / start_lr) ** (1 / max(1, num_steps - 1))
        self.rows: list[dict[str, float]] = []
        self.failure: str | None = None

    def on_fit_start(self, info: dict[str, Any]) -> None:
        trainer = info["trainer"]
        # Each optimizer param group keeps its ratio to the first group's lr (discriminative rates stay).
        base = [g["lr"] for g in trainer.optimizer.param_groups]
        self.ratios = [lr / base[0] for lr in base]
        self.avg, self.best = 0.0, math.inf

    def on_batch_start(self, info: dict[str, Any]) -> None:
        step = len(self.rows)
        if step >= self.num_steps:
            raise CancelFit("lr sweep done")
        self.lr = self.start_lr * self.gamma**step
        for group, ratio in zip(info["trainer"].optimizer.param_groups, self.ratios):
            group["lr"] = self.lr * ratio

    def on_batch_end(self, info: dict[str, Any]) -> None:
        raw, step = float(info["loss"]), len(self.rows)
        # fastai's debiased exponential moving average.
        beta = 0.98
        self.avg = beta * self.avg + (1 - beta) * raw
        smooth = self.avg / (1 - beta ** (step + 1))
        self.rows.append({"lr": self.lr, "loss": smooth, "raw_loss": raw})
        self.best = min(self.best, smooth)
        if self.progress is not None:
            self.progress((step + 1) / self.num_steps, f"lr finder step {step + 1}/{self.num_steps}")
        if step > 10 and smooth > 4 * self.best:
            raise CancelFit("the loss exploded")

    def on_validate_start(self, info: dict[str, Any]) -> None:
        raise CancelValidate()

    def on_error(self, info: dict[str, Any]) -> None:
        # A non-finite loss ends the sweep like an explosion; anything else is a real failure.
        if info["error_type"] != "LossNotFinite":
            self.failure = info["message"]



def lr_sweep(trainer: Trainer, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100,
             progress: Progress | None = None) -> pd.DataFrame:
    """Run `trainer`'s first phase with lr rising from start_lr to end_lr; DataFrame(lr, loss, raw_loss).

    The model comes back as it was (weights, BatchNorm statistics, requires_grad).
    """
    trainer.phases = trainer.phases or plan_for(trainer.config, trainer.groups)
    first = trainer.phases[0]
    # Every epoch has at least one batch, so num_steps epochs are always enough; CancelFit ends it sooner.
    # SGD steps even where the recipe fits the head by L-BFGS: the sweep is about the optimizer's lr.
    trainer.phases = [dataclasses.replace(first, epochs=num_steps, solver="sgd")]
    trainer.config = trainer.config.replace(epochs=num_steps, scheduler="none", warmup_epochs=0.0)
    finder = LRFinder(start_lr, end_lr, num_steps, progress)
    trainer.callbacks.append(finder)
    model = trainer.model
    saved = copy.deepcopy(model.state_dict())
    saved_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        result = trainer.fit()
    finally:
        model.load_state_dict(saved)
        for name, p in model.named_parameters():
            p.requires_grad_(saved_grad[name])
    if finder.failure is not None:
        raise LrFindError(f"the lr finder failed: {finder.failure}")
    if result.status == "stopped" and len(finder.rows) < 3:
        raise LrFindError("stopped before the sweep had enough steps")
    if not finder.rows and result.status == "done":
        raise LrFindError("the training set gave no batches")
    if len(finder.rows) < 3:
        raise LrFindError("the loss was not finite for the first steps: check the data and the model")
    return pd.DataFrame(finder.rows, columns=["lr", "loss", "raw_loss"])


def suggest(table: pd.DataFrame) -> tuple[float, float]:
    """(valley, steepest): fastai's valley (inside the longest falling stretch) and the steepest descent."""
    lrs, losses = list(table["lr"]), list(table["loss"])
    n = len(losses)
    # Longest decreasing subsequence ending at each point; the valley sits 1/2 of the way into it.
    lds, max_start, max_end = [1] * n, 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end, max_start = i, i - lds[i]
    sections = (max_end - max_start) / 3
    valley = lrs[min(n - 1, max_start + int(sections) + int(sections / 2))]
    logs = [math.log10(lr) for lr in lrs]
    slopes = [(losses[i + 1] - losses[i]) / (logs[i + 1] - logs[i]) for i in range(n - 1)]
    steepest = lrs[min(range(len(slopes)), key=slopes.__getitem__)] if slopes else valley
    return float(valley), float(steepest)


def find_lr(
    config: TrainConfig,
    dataset=None,
    progress: Progress | None = None,
    model: nn.Module | None = None,
    groups: list | None = None,
    num_steps: int = 100,
    stop_event: threading.Event | None = None,
) -> LrFindResult:
    """Sweep the learning rate for `config`'s first phase on its data; the model (if given) is left as it was."""
    from ftui.data.datasets import load_dataset
    from ftui.models.backbones import build, layer_groups

    config.validate()
    say = progress or (lambda fraction, message: None)
    if dataset is None:
        say(0.0, "loading dataset")
        dataset = load_dataset(config.data, val_fraction=config.val_fraction, seed=config.data_seed,
                               task=config.task)
    seed_everything(config.seed)
    if model is None:
        say(0.0, "building model")
        model = build(config.backbone, len(dataset.classes), weights=config.weights)
    if groups is None:
        groups = layer_groups(model, config.backbone)
    trainer = Trainer(config, model, groups, ImageData(dataset), stop_event=stop_event)
    try:
        table = lr_sweep(trainer, num_steps=num_steps, progress=say)
    finally:
        model.eval()
    valley, steepest = suggest(table)
    say(1.0, f"suggested learning rate {valley:.2g}")
    return LrFindResult(table=table, suggestion=valley, steepest=steepest)
