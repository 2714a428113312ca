"""Registry of torchvision classifiers: what each one is, building it with a new head, and its layer groups.

torchvision is the source of truth: names come from `list_models`, sizes, normalisation and accuracy from
each model's published weights. Nothing here downloads anything except `build(..., weights="imagenet")`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import torch
import torchvision
from torch import nn
from torchvision import models as tvm

from ftui.models import timm_models
from ftui.models.families import (  # noqa: F401 - BackboneError, FAMILIES, family_of, default_weights: public here too
    FAMILIES,
    BackboneError,
    Chain,
    check_name,
    default_weights,
    family,
    family_of,
    head_path,
)
from ftui.models.weights import load_head_if_fits, load_weights

# Small to large: what the UI offers first. Every other torchvision classifier stays reachable by name.
SHORTLIST: list[str] = [
    "mobilenet_v3_small",
    "mobilenet_v2",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "regnet_y_800mf",
    "resnet18",
    "efficientnet_v2_s",
    "resnet50",
    "swin_t",
    "convnext_tiny",
    "vit_b_16",
]

@dataclass
class BackboneInfo:
    """What the UI and CLI show about one backbone, read from torchvision's weight metadata."""

    name: str
    family: str
    num_params: int
    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    imagenet_acc1: float | None
    weights_cached: bool
    weights_file: str | None
    min_input_size: int
    # True where the model only accepts input_size (ViT's position embedding, MaxViT's attention grid).
    fixed_input_size: bool = False


@dataclass
class LayerGroup:
    """A named, ordered slice of a model that is frozen or trained as one unit."""

    name: str
    modules: list[nn.Module]
    num_params: int

    def parameters(self) -> list[nn.Parameter]:
        """Every parameter of the group, each once."""
        return _unique_params(self.modules)


def _unique_params(modules: list[nn.Module]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for p in (p for m in modules for p in m.parameters()):
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


# --- registry ---------------------------------------------------------------------------------------


def list_backbones(all: bool = False, timm: bool = False) -> list[str]:
    """The curated shortlist, or every torchvision classifier with all=True, followed by every timm one
    (`timm:<name>`) with timm=True as well (the app's "all models" list)."""
    if not all:
        return list(SHORTLIST)
    names = sorted(tvm.list_models(module=torchvision.models))
    return names + timm_models.list_timm() if timm else names


def weights_path(name: str) -> Path:
    """Where torchvision's published weights for `name` live in the torch hub cache."""
    filename = os.path.basename(urlparse(default_weights(name).url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def backbone_info(name: str) -> BackboneInfo:
    """Facts about one backbone, cheaply: no model is built and nothing is downloaded."""
    if timm_models.is_timm(name):
        return _timm_info(name)
    weights = default_weights(name)
    fam = family(name)
    preset = weights.transforms()
    acc = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    path = weights_path(name)
    input_size = int(preset.crop_size[0])
    return BackboneInfo(
        name=name,
        family=fam.name,
        num_params=int(weights.meta["num_params"]),
        input_size=input_size,
        resize_size=int(preset.resize_size[0]),
        mean=tuple(float(v) for v in preset.mean),
        std=tuple(float(v) for v in preset.std),
        imagenet_acc1=float(acc) if acc is not None else None,
        weights_cached=path.is_file(),
        weights_file=path.name,
        min_input_size=input_size if fam.fixed_input else fam.min_input,
        fixed_input_size=fam.fixed_input,
    )


def _timm_info(name: str) -> BackboneInfo:
    """A timm model's facts from its pretrained config; its weights are never in a cache ftui fills."""
    pre = timm_models.preprocessing(name)
    return BackboneInfo(
        name=name, family=family(name).name, num_params=timm_models.num_params(name),
        input_size=pre["input_size"], resize_size=pre["resize_size"], mean=pre["mean"], std=pre["std"],
        imagenet_acc1=None, weights_cached=False, weights_file=None,
        min_input_size=family(name).min_input, fixed_input_size=pre["fixed_input_size"],
    )


def backbones_table(all: bool = False, timm_pattern: str = "") -> pd.DataFrame:
    """One row per backbone: parameters (millions), input size, ImageNet top-1, weights cached.

    The shortlist, or every torchvision model (all=True), or the timm models matching `timm_pattern`."""
    rows = []
    names = timm_models.list_timm(timm_pattern) if timm_pattern else list_backbones(all=all)
    for name in names:
        info = backbone_info(name)
        rows.append({
            "backbone": name,
            "family": info.family,
            "params_m": round(info.num_params / 1e6, 1),
            "input_size": info.input_size,
            "imagenet_acc1": info.imagenet_acc1,
            "weights_cached": info.weights_cached,
        })
    return pd.DataFrame(rows, columns=["backbone", "family", "params_m", "input_size", "imagenet_acc1",
                                       "weights_cached"])


# --- building -----------------------------------------------------------------------------------------


def stock_model(name: str, pretrained: bool) -> nn.Module:
    """torchvision's (or timm's) 1000-class model with random weights, shaped so published weights load
    strictly."""
    if timm_models.is_timm(name):
        return timm_models.stock_model(name)
    check_name(name)
    return tvm.get_model(name, weights=None, **family(name).build_options(name, pretrained))


def classifier_head(model: nn.Module, name: str) -> nn.Module:
    """The final classification layer of `model`, a `name` backbone."""
    return model.get_submodule(head_path(name))


def replace_head(model: nn.Module, name: str, num_classes: int) -> nn.Module:
    """Swap the final layer for a fresh one with `num_classes` outputs; drop auxiliary heads."""
    if num_classes < 1:
        raise BackboneError(f"num_classes must be >= 1, got {num_classes}")
    if timm_models.is_timm(name):
        timm_models.replace_head(model, name, num_classes)
        return model
    path = head_path(name)
    old = model.get_submodule(path)
    if isinstance(old, nn.Conv2d):  # squeezenet classifies with a 1x1 convolution
        new: nn.Module = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
        nn.init.normal_(new.weight, mean=0.0, std=0.01)
        nn.init.zeros_(new.bias)
    elif isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        raise BackboneError(f"{name}: unexpected head type {type(old).__name__} at {path}")
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)
    _drop_aux_heads(model)
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes
    return model


def _drop_aux_heads(model: nn.Module) -> None:
    # GoogLeNet / Inception return a tuple with aux logits in train mode; ftui trains the main head only.
    if hasattr(model, "aux_logits"):
        model.aux_logits = False
        for attr in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, attr):
                setattr(model, attr, None)


def build_with_report(name: str, num_classes: int, weights: str = "imagenet",
                      progress: Callable[[float, str], None] | None = None):
    """Like `build`, also returning the `WeightsReport` that says what was loaded."""
    model = stock_model(name, pretrained=weights != "none")
    report = load_weights(model, name, weights, progress=progress)
    if weights == "none":
        # torchvision builds MobileNetV3 / EfficientNet BatchNorm with momentum 0.01, tuned for long ImageNet
        # runs; after the few hundred steps of a short from-scratch run the running statistics are still near
        # their init and eval-mode outputs are garbage (val stays at chance). 0.1 tracks them in time.
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.1
    replace_head(model, name, num_classes)
    load_head_if_fits(model, name, report)
    return model, report


def build(name: str, num_classes: int, weights: str = "imagenet",
          progress: Callable[[float, str], None] | None = None) -> nn.Module:
    """The stock torchvision model with `weights` ("imagenet", "none" or a file) and a `num_classes` head."""
    return build_with_report(name, num_classes, weights, progress)[0]


# --- layer groups: from each family's chain (ftui/models/families.py) ---------------------------------------


def _label(chain: Chain) -> list[str]:
    # Unlabelled entries join the group before them; leading ones join the first labelled group.
    labels: list[str] = []
    previous = next(label for label, _ in chain if label is not None)
    for label, _ in chain:
        previous = label if label is not None else previous
        labels.append(previous)
    return labels


def _groups_from_chain(chain: Chain) -> list[tuple[str, list[nn.Module]]]:
    out: list[tuple[str, list[nn.Module]]] = []
    for label, (_, module) in zip(_label(chain), chain):
        if out and out[-1][0] == label:
            out[-1][1].append(module)
        else:
            out.append((label, [module]))
    return out


def layer_groups(model: nn.Module, name: str) -> list[LayerGroup]:
    """Ordered input -> output groups for freezing, the last one named "head"."""
    groups = []
    for gname, modules in _groups_from_chain(family(name).chain(model)):
        params = _unique_params(modules)
        groups.append(LayerGroup(gname, modules, sum(p.numel() for p in params)))
    return groups


def split_model(model: nn.Module, name: str, groups: list[LayerGroup],
                first_trainable: int) -> tuple[nn.Module, nn.Module]:
    """(frozen prefix, trainable suffix) with suffix(prefix(x)) == model(x) in eval mode.

    The prefix runs groups[:first_trainable]; the suffix runs the rest including pooling and the head.
    Both share the model's parameters (GoogLeNet / Inception without their aux heads, as `build` makes them).
    """
    chain = family(name).chain(model)
    if not 0 <= first_trainable < len(groups):
        raise BackboneError(f"first_trainable must be in [0, {len(groups) - 1}], got {first_trainable}")
    labels = _label(chain)
    start = labels.index(groups[first_trainable].name)
    return nn.Sequential(*[m for _, m in chain[:start]]), nn.Sequential(*[m for _, m in chain[start:]])
