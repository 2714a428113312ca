"""Learning-rate finder (fastai's `lr_find`): one short run with an exponentially rising rate.

The rate sweeps ~1e-7 -> 10 over at most 100 optimizer steps on the run's own data (on cached features
when the first phase trains only the head), the loss is smoothed, the sweep stops when it explodes, and
the model is put back exactly as it was. The suggestion is fastai's "valley": a point well inside the
longest stretch where the loss keeps falling.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from ftui.config import TrainConfig

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
Progress = Callable[[float, str], None]


class LrFindError(ValueError):
    """The sweep could not run (no batches, the loss was never finite)."""


@dataclass
class LrFindResult:
    """table: DataFrame(lr, loss, raw_loss), one row per step; suggestion: the rate to train with."""

    table: pd.DataFrame
    suggestion: float
    steepest: float


def _cycle(batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches forever, starting a new pass (a new shuffle) whenever one ends."""
    while True:
        empty = True
        for batch in batches():
            empty = False
            yield batch
        if empty:
            raise LrFindError("the training set gave no batches")


def lr_sweep(
    forward: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    stop_event: threading.Event | None = None,
    progress: Progress | None = None,
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> pd.DataFrame:
    """Train with lr rising from start_lr to end_lr; DataFrame(lr, loss, raw_loss). Restores `forward`.

    Each optimizer param group keeps its ratio to the first group's lr (discriminative rates stay).
    """
    saved = copy.deepcopy(forward.state_dict())
    was_training = forward.training
    base = [g["lr"] for g in optimizer.param_groups]
    ratios = [lr / base[0] for lr in base]
    gamma = (end_lr / start_lr) ** (1 / max(1, num_steps - 1))
    rows, avg, best, beta = [], 0.0, math.inf, 0.98
    try:
        for step, (x, y) in enumerate(_cycle(batches)):
            if step >= num_steps or (stop_event is not None and stop_event.is_set()):
                break
            lr = start_lr * gamma**step
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(forward(prepare(x)).float(), y)
            raw = float(loss.detach())
            if not math.isfinite(raw):
                break
            loss.backward()
            optimizer.step()
            # fastai's debiased exponential moving average.
            avg = beta * avg + (1 - beta) * raw
            smooth = avg / (1 - beta ** (step + 1))
            rows.append({"lr": lr, "loss": smooth, "raw_loss": raw})
            best = min(best, smooth)
            if progress is not None:
                progress((step + 1) / num_steps, f"lr finder step {step + 1}/{num_steps}")
            if step > 10 and smooth > 4 * best:
                break
    finally:
        forward.load_state_dict(saved)
        forward.train(was_training)
        optimizer.zero_grad(set_to_none=True)
    if len(rows) < 3:
        raise LrFindError("the loss was not finite for the first steps: check the data and the model")
    return pd.DataFrame(rows, columns=["lr", "loss", "raw_loss"])


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
    from ftui import devices
    from ftui.backbones import build, layer_groups
    from ftui.data import load_dataset
    from ftui.engine import (
        _Data,
        _param_groups,
        _phase_sources,
        _SpeedSettings,
        make_optimizer,
        plan_phases,
        seed_everything,
        transform_settings,
    )
    from ftui.freezing import apply_freeze, resolve_train_groups, set_train_mode

    config.validate()
    say = progress or (lambda fraction, message: None)
    if dataset is None:
        say(0.0, "loading dataset")
        dataset = load_dataset(config.data, val_fraction=config.val_fraction, seed=config.seed)
    seed_everything(config.seed)
    if model is None:
        say(0.0, "building model")
        model = build(config.backbone, len(dataset.classes), weights=config.weights)
        groups = layer_groups(model, config.backbone)
    elif groups is None:
        groups = layer_groups(model, config.backbone)
    saved_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    names = [g.name for g in groups]
    phase = plan_phases(config, names, resolve_train_groups(config.train_groups, names))[0]
    device = devices.pick_device(config.device)
    devices.configure_threads()
    amp = devices.amp_enabled(device, config.mixed_precision)
    channels_last = device.type in ("cpu", "cuda") and devices.use_channels_last(model, device)
    settings = transform_settings(config)
    data = _Data(config, dataset, settings, None)
    speed = _SpeedSettings(device, channels_last, amp and device.type == "cuda", amp, config, settings["image_size"])
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        apply_freeze(model, groups, set(phase.trainable))
        forward, train_source, _val = _phase_sources(config, model, groups, phase, data, speed, [])
        set_train_mode(model, groups, set(phase.trainable), bn_mode=config.bn_mode)
        optimizer = make_optimizer(config, _param_groups(groups, phase, 1.0))
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        def prepare(x: torch.Tensor) -> torch.Tensor:
            return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x

        table = lr_sweep(forward, optimizer, train_source.batches, criterion, num_steps=num_steps,
                         stop_event=stop_event, progress=say, prepare=prepare)
    finally:
        data.close()
        for name, p in model.named_parameters():
            p.requires_grad_(saved_grad[name])
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.eval()
    valley, steepest = suggest(table)
    say(1.0, f"suggested learning rate {valley:.2g}")
    return LrFindResult(table=table, suggestion=valley, steepest=steepest)
