"""A classifier's logits and its pooled penultimate features from ONE forward pass, for the feature-space
"none of these" score (ftui/results/oodscore.py).

`with_features(model, head_path)` returns a module whose output is cat([logits, features], dim=1): one
tensor, so batching, test-time augmentation and the CUDA-graph replay treat it like plain logits. It shares
the model's parameters (nothing is copied) and never changes the model: no forward hook, so calls from many
threads at once cannot see each other's features. Only where the head is a Linear layer that is the model's
last operation (every torchvision family but squeezenet; timm models) and the split reproduces the model's
logits; otherwise None and callers fall back to a logits-only score.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class LogitsAndFeatures(nn.Module):
    """forward(x) = cat([head(body(x)), body(x)], 1); `num_classes` columns of logits first."""

    def __init__(self, body: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.body, self.head = body, head
        self.num_classes = head.out_features

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.body(image).flatten(1)
        return torch.cat([self.head(features), features], dim=1)


def _without(module: nn.Module, path: str) -> nn.Module:
    """A shallow copy of `module` whose submodule at `path` is an Identity; the copies of the containers on
    the path are new objects, every other submodule and every parameter is the original."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    name, _, rest = path.partition(".")
    clone._modules[name] = nn.Identity() if not rest else _without(module._modules[name], rest)
    return clone


def with_features(model: nn.Module, head_path: str, image_size: int | None = None) -> LogitsAndFeatures | None:
    """The logits-and-features module of `model`, or None when its head is not a final Linear layer.

    With `image_size`, the split is checked on one image (eval mode): logits must equal the model's."""
    try:
        head = model.get_submodule(head_path)
    except AttributeError:
        return None
    if not isinstance(head, nn.Linear):
        return None
    split = LogitsAndFeatures(_without(model, head_path), head)
    if image_size is not None:
        device = next(model.parameters()).device
        x = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                same = torch.allclose(split(x)[:, :split.num_classes].float(), model(x).float(), atol=1e-4, rtol=1e-4)
        finally:
            model.train(was_training)
        if not same:
            return None
    return split
