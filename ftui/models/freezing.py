"""Which layer groups train: presets, requires_grad, and BatchNorm that stays put in frozen groups."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from torch import nn

from ftui.config import ConfigError
from ftui.models.backbones import LayerGroup

_BN_MODES = ("frozen", "train")


def resolve_train_groups(spec: str, group_names: list[str]) -> list[str]:
    """Group names to train for "head" | "all" | "last:N" | "a,b,c", in model order."""
    text = spec.strip()
    if text == "head":
        return [group_names[-1]]
    if text == "all":
        return list(group_names)
    if text.startswith("last:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"train_groups {spec!r}: N in 'last:N' must be an integer") from None
        if not 1 <= n <= len(group_names):
            raise ConfigError(f"train_groups {spec!r}: N must be between 1 and {len(group_names)} "
                              f"(this model has {len(group_names)} groups)")
        return list(group_names[-n:])
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [w for w in wanted if w not in group_names]
    if unknown or not wanted:
        raise ConfigError(
            f"unknown layer group(s) {', '.join(unknown) or repr(spec)}; this model's groups are: "
            f"{', '.join(group_names)} (or use 'head', 'all', 'last:N')"
        )
    return [g for g in group_names if g in wanted]


def apply_freeze(model: nn.Module, groups: list[LayerGroup], trainable: Iterable[str]) -> None:
    """requires_grad on for the parameters of trainable groups, off for everything else in the model."""
    keep = set(trainable)
    for p in model.parameters():
        p.requires_grad_(False)
    for group in groups:
        if group.name in keep:
            for p in group.parameters():
                p.requires_grad_(True)


def set_train_mode(model: nn.Module, groups: list[LayerGroup], trainable: Iterable[str],
                   bn_mode: str = "frozen") -> None:
    """`model.train()`, then BatchNorm back to eval in frozen groups (all of them with bn_mode="frozen").

    In eval mode BatchNorm normalises with its stored statistics and never updates them, so a frozen
    group computes exactly what it computed when pretrained.
    """
    if bn_mode not in _BN_MODES:
        raise ConfigError(f"bn_mode must be one of {_BN_MODES}, got {bn_mode!r}")
    keep = set(trainable)
    model.train()
    frozen = [model] if bn_mode == "frozen" else [m for g in groups if g.name not in keep for m in g.modules]
    for module in frozen:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def groups_table(groups: list[LayerGroup], trainable: Iterable[str]) -> pd.DataFrame:
    """One row per group: name, parameter count, whether it trains."""
    keep = set(trainable)
    return pd.DataFrame(
        [{"group": g.name, "params": g.num_params, "trainable": g.name in keep} for g in groups],
        columns=["group", "params", "trainable"],
    )
