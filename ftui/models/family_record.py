"""The record type of a backbone family (ftui/models/families.py fills it for torchvision, timm_models.py
for timm) and the error for names ftui cannot adapt; below both so neither imports the other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ftui.errors import FtuiError


class BackboneError(FtuiError):
    """An unknown backbone name or a model ftui cannot adapt; the message lists what is possible."""


# Each family's eval-mode forward written as a chain: running the modules in order computes model(x).
# Each entry is (group label, module); label None means "same group as the entry before" (pooling,
# flatten, dropout). Layer groups and the frozen-prefix split both come from this one description.
Chain = list[tuple[str | None, nn.Module]]


@dataclass(frozen=True)
class Family:
    """What ftui needs to know about one family of torchvision classifiers."""

    name: str  # the prefix of its model names
    head_path: str  # dotted path of the final classification layer in the stock model
    chain: Callable[[nn.Module], Chain]  # the eval-mode forward as labelled modules
    # Smallest square input every stage keeps >= 1 pixel for (measured).
    min_input: int = 32
    # True where only the weights' input size works (ViT's position embedding, MaxViT's attention grid).
    fixed_input: bool = False
    # Keyword arguments for torchvision's builder: (model name, pretrained) -> kwargs.
    build_options: Callable[[str, bool], dict] = field(default=lambda name, pretrained: {})
