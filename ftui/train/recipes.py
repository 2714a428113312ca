"""How a run trains: its phases (recipe), learning rates per layer group, schedule and optimizer.

A recipe turns the config and the chosen layer groups into `Phase`s; the `Trainer` (ftui/train/trainer.py) runs
them in order. A new recipe is a function in `RECIPES` (and its name in config.RECIPES).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ftui.config import TrainConfig
from ftui.errors import FtuiError


class RecipeError(FtuiError):
    """The phase has nothing to train."""


@dataclass
class Phase:
    """A stretch of epochs with one set of trainable groups and their learning-rate scales."""

    name: str
    epochs: int
    trainable: list[str]
    lr_scale: dict[str, float]
    # "sgd": the optimizer steps per batch; "lbfgs": the head is fitted to convergence on the phase's
    # features in its first epoch (ftui/train/headfit.py), later epochs of the phase have nothing left to do.
    solver: str = "sgd"


# The fine-tune phase runs the body at lr's discriminative scales unchanged (1e-5 .. 1e-3 one-cycle for
# AdamW at lr 1e-3: fastai's fine_tune). A body at x0.01 (8.5e-6 at the peak) barely moved the weights: on
# shifted domains train accuracy stayed at val accuracy (12-16 points below a hand fine-tune). x1 dips in
# its first epoch (one-cycle's peak) and recovers; the kept best epoch is measured over the whole suite.

# Earliest trainable group's lr as a fraction of the head's (fastai's fine_tune uses 1/100). 1/10 was
# measured to wreck mobilenet_v2's pretrained features on hymenoptera (val acc 0.54 after one epoch).
EARLIEST_LR_FRACTION = 0.01


def _plain(config: TrainConfig, trainable: list[str]) -> list[Phase]:
    """The chosen groups from the first epoch, all at lr."""
    name = "head" if trainable == ["head"] else "train"
    return [Phase(name, config.epochs, trainable, {g: 1.0 for g in trainable})]


def _fine_tune(config: TrainConfig, trainable: list[str]) -> list[Phase]:
    """Head first on frozen features, then the chosen groups with discriminative rates (fastai, LP-FT)."""
    if trainable == ["head"]:
        return _plain(config, trainable)
    # At least one epoch is left for the chosen groups.
    head_epochs = min(config.freeze_epochs, config.epochs - 1)
    converged = config.head_fit == "lbfgs"
    if converged:
        head_epochs = min(head_epochs, 1)  # one pass fits it; more epochs would repeat the same fit
    phases = []
    if head_epochs > 0:
        phases.append(Phase("head", head_epochs, ["head"], {"head": 1.0}, "lbfgs" if converged else "sgd"))
    phases.append(Phase("fine_tune", config.epochs - head_epochs, trainable, discriminative_scales(trainable)))
    return phases


RECIPES: dict[str, Callable[[TrainConfig, list[str]], list[Phase]]] = {"fine_tune": _fine_tune, "plain": _plain}


def plan_for(config: TrainConfig, groups: Sequence) -> list[Phase]:
    """The phases a run of `config` trains over these layer groups (its train_groups resolved against them)."""
    from ftui.models.freezing import resolve_train_groups

    names = [g.name for g in groups]
    return plan_phases(config, names, resolve_train_groups(config.train_groups, names))


def plan_phases(config: TrainConfig, group_names: Sequence[str], trainable: Sequence[str]) -> list[Phase]:
    """Split `config.epochs` into phases; the head-only warm-up of "fine_tune" counts towards the total."""
    chosen = [g for g in group_names if g in set(trainable)]
    return RECIPES[config.recipe](config, chosen)


def discriminative_scales(trainable: Sequence[str]) -> dict[str, float]:
    """lr/100 for the earliest trainable group rising geometrically to lr for the head (fastai-style)."""
    n = len(trainable)
    if n == 1:
        return {trainable[0]: 1.0}
    low = math.log10(EARLIEST_LR_FRACTION)
    return {g: 10 ** (low * (1 - i / (n - 1))) for i, g in enumerate(trainable)}


def lr_multiplier(config: TrainConfig, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """Per-step lr factor for the scheduler (none/step/cosine/onecycle) with optional linear warm-up."""
    total = max(1, steps_per_epoch * epochs)
    warm = round(config.warmup_epochs * steps_per_epoch)
    kind = config.scheduler

    def factor(step: int) -> float:
        if kind != "onecycle" and warm and step < warm:
            return (step + 1) / warm
        if kind == "none":
            return 1.0
        if kind == "step":
            return config.lr_gamma ** ((step // steps_per_epoch) // config.lr_step_size)
        if kind == "cosine":
            t = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        # onecycle: ramp from lr/25 to lr over the warm-up (default 25% of steps), then cosine to ~0.
        ramp = warm or max(1, int(0.25 * total))
        if step < ramp:
            return 1 / 25 + (1 - 1 / 25) * step / ramp
        t = (step - ramp) / max(1, total - ramp)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return factor


def make_optimizer(config: TrainConfig, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """SGD with momentum, Adam or AdamW over per-group learning rates."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay)


def param_groups(groups: list, phase: Phase, lr: float) -> list[dict[str, Any]]:
    """One optimizer param group per trainable layer group, at lr times its scale."""
    out, seen = [], set()
    for group in groups:
        if group.name not in phase.lr_scale:
            continue
        params = []
        for p in group.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        if params:
            out.append({"params": params, "lr": lr * phase.lr_scale[group.name]})
    if not out:
        raise RecipeError(f"no trainable parameters in groups {phase.trainable}")
    return out


def class_weights(counts: Sequence[int]) -> torch.Tensor:
    """sklearn-style "balanced" weights, total / (classes present * count): rare classes weigh more."""
    counts_t = torch.tensor([float(c) for c in counts])
    present = counts_t > 0
    weights = torch.ones_like(counts_t)
    weights[present] = counts_t[present].sum() / (present.sum() * counts_t[present])
    return weights


def make_criteria(config: TrainConfig, class_weight: torch.Tensor | None) -> tuple[nn.Module, nn.Module]:
    """(training loss, validation loss), both summed: the trainer divides by the whole batch's weight, so
    micro-batches add up to the batch's mean loss. Validation is unweighted and unsmoothed (what is reported)."""
    train = nn.CrossEntropyLoss(weight=class_weight, label_smoothing=config.label_smoothing, reduction="sum")
    return train, nn.CrossEntropyLoss(reduction="sum")
