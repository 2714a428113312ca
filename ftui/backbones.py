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


class BackboneError(ValueError):
    """An unknown backbone name or a model ftui cannot adapt; the message lists what is possible."""


# Small to large: what the UI offers first. Every other torchvision classifier stays reachable by name.
SHORTLIST: list[str] = [
    "mobilenet_v3_small",
    "mobilenet_v2",
    "resnet18",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "regnet_y_800mf",
    "convnext_tiny",
    "resnet50",
    "efficientnet_v2_s",
    "swin_t",
    "vit_b_16",
]

# Order matters: longer prefixes that contain shorter ones come first (maxvit before vit, ...).
FAMILIES: list[str] = [
    "resnext", "wide_resnet", "resnet", "mobilenet_v2", "mobilenet_v3", "efficientnet_v2", "efficientnet",
    "convnext", "regnet", "densenet", "vgg", "alexnet", "squeezenet", "shufflenet", "mnasnet", "googlenet",
    "inception", "maxvit", "vit", "swin",
]

# Where the final classification layer lives in the stock model (a dotted module path).
_HEAD_PATH = {
    "resnet": "fc", "resnext": "fc", "wide_resnet": "fc", "regnet": "fc", "shufflenet": "fc",
    "googlenet": "fc", "inception": "fc", "densenet": "classifier", "swin": "head", "vit": "heads.head",
    "mobilenet_v2": "classifier.1", "efficientnet": "classifier.1", "efficientnet_v2": "classifier.1",
    "mnasnet": "classifier.1", "squeezenet": "classifier.1", "mobilenet_v3": "classifier.3",
    "convnext": "classifier.2", "vgg": "classifier.6", "alexnet": "classifier.6", "maxvit": "classifier.5",
}

# Smallest square input each family runs on (measured: every stage keeps >= 1 pixel). ViT and MaxViT
# are built for one fixed size, their weights' input size.
_MIN_INPUT = {
    "alexnet": 63, "inception": 75, "vit": 224, "maxvit": 224,
}
_DEFAULT_MIN_INPUT = 32
_FIXED_INPUT = {"vit", "maxvit"}


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


def list_backbones(all: bool = False) -> list[str]:
    """The curated shortlist, or every torchvision classification model with `all=True`."""
    if not all:
        return list(SHORTLIST)
    return sorted(tvm.list_models(module=torchvision.models))


def family_of(name: str) -> str:
    """The family a torchvision model name belongs to (e.g. "resnet" for resnet50)."""
    for fam in FAMILIES:
        if name.startswith(fam):
            return fam
    raise BackboneError(f"unknown backbone family for {name!r}")


def _check_name(name: str) -> None:
    known = tvm.list_models(module=torchvision.models)
    if name not in known:
        raise BackboneError(
            f"unknown backbone {name!r}. Choose one of: {', '.join(sorted(known))}"
        )


def default_weights(name: str) -> tvm.WeightsEnum:
    """torchvision's recommended ImageNet weights for `name`."""
    _check_name(name)
    return tvm.get_model_weights(name).DEFAULT


def weights_path(name: str) -> Path:
    """Where torchvision's published weights for `name` live in the torch hub cache."""
    filename = os.path.basename(urlparse(default_weights(name).url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def backbone_info(name: str) -> BackboneInfo:
    """Facts about one backbone, cheaply: no model is built and nothing is downloaded."""
    weights = default_weights(name)
    family = family_of(name)
    preset = weights.transforms()
    acc = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    path = weights_path(name)
    input_size = int(preset.crop_size[0])
    min_input = input_size if family in _FIXED_INPUT else _MIN_INPUT.get(family, _DEFAULT_MIN_INPUT)
    return BackboneInfo(
        name=name,
        family=family,
        num_params=int(weights.meta["num_params"]),
        input_size=input_size,
        resize_size=int(preset.resize_size[0]),
        mean=tuple(float(v) for v in preset.mean),
        std=tuple(float(v) for v in preset.std),
        imagenet_acc1=float(acc) if acc is not None else None,
        weights_cached=path.is_file(),
        weights_file=path.name,
        min_input_size=min_input,
        fixed_input_size=family in _FIXED_INPUT,
    )


def backbones_table(all: bool = False) -> pd.DataFrame:
    """One row per backbone: parameters (millions), input size, ImageNet top-1, weights cached."""
    rows = []
    for name in list_backbones(all=all):
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
    """torchvision's 1000-class model with random weights, shaped so published weights load strictly."""
    _check_name(name)
    family = family_of(name)
    kwargs: dict = {}
    if family in ("googlenet", "inception"):
        # As torchvision does for its pretrained builders: those weights expect transform_input and carry
        # aux heads, which ftui drops after loading (one output keeps the training loop simple).
        kwargs = {"aux_logits": True, "init_weights": not pretrained, "transform_input": pretrained}
    elif family == "vit":
        # The position embedding's size is fixed at build time: use the published weights' input size.
        kwargs = {"image_size": int(default_weights(name).meta["min_size"][0])}
    return tvm.get_model(name, weights=None, **kwargs)


def head_path(name: str) -> str:
    """Dotted path of the final classification layer, e.g. "fc" or "classifier.1"."""
    return _HEAD_PATH[family_of(name)]


def classifier_head(model: nn.Module, name: str | None = None) -> nn.Module:
    """The model's final classification layer."""
    if name is None:
        name = getattr(model, "ftui_backbone", None)
        if name is None:
            raise BackboneError("classifier_head needs the backbone name for a model ftui did not build")
    return model.get_submodule(head_path(name))


def replace_head(model: nn.Module, name: str, num_classes: int) -> nn.Module:
    """Swap the final layer for a fresh one with `num_classes` outputs; drop auxiliary heads."""
    if num_classes < 1:
        raise BackboneError(f"num_classes must be >= 1, got {num_classes}")
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
    from ftui.weights import load_head_if_fits, load_weights  # weights imports this module

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
    model.ftui_backbone = name
    return model, report


def build(name: str, num_classes: int, weights: str = "imagenet",
          progress: Callable[[float, str], None] | None = None) -> nn.Module:
    """The stock torchvision model with `weights` ("imagenet", "none" or a file) and a `num_classes` head."""
    return build_with_report(name, num_classes, weights, progress)[0]


# --- layer groups -------------------------------------------------------------------------------------
# Each family's eval-mode forward written as a chain: running the modules in order computes model(x).
# Each entry is (group label, module); label None means "same group as the entry before" (pooling,
# flatten, dropout). Layer groups and the frozen-prefix split both come from this one description.

Chain = list[tuple[str | None, nn.Module]]


class _MeanHW(nn.Module):
    """x.mean([2, 3]), as shufflenet and mnasnet pool in their forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean([2, 3])


class _VitEmbed(nn.Module):
    """ViT's input side as one module: patchify, prepend the class token, add position embeddings.

    Holds the model's own conv and parameters (shared, not copied), so freezing it freezes them.
    """

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class _ClassToken(nn.Module):
    """x[:, 0]: ViT classifies from the class token."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class _TransformInput(nn.Module):
    """GoogLeNet / Inception's own input re-normalisation (a no-op unless the model enables it)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.fn = model._transform_input  # a bound method: the model is not registered as a child

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _has_stride(module: nn.Module) -> bool:
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and max(m.stride) > 1:
            return True
    return False


def _is_pool(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in module.modules())


def _by_resolution(modules: list[nn.Module], stem_alone: bool, first: str, prefix: str) -> Chain:
    """Group a flat feature stack into stages: a strided block opens a stage, a pooling block closes one.

    Groups are named `first`, then `prefix` + 1, 2, ... (stem, stage1, ... or block1, block2, ...).
    """
    groups: list[list[nn.Module]] = [[]]
    close = False
    for i, m in enumerate(modules):
        opens = close or (i > 0 and _has_stride(m)) or (stem_alone and i == 1)
        if opens and any(True for g in groups[-1] for _ in g.parameters()):
            groups.append([])
        groups[-1].append(m)
        close = _is_pool(m)
    offset = 1 if first == f"{prefix}1" else 0
    chain: Chain = []
    for gi, group in enumerate(groups):
        label = first if gi == 0 else f"{prefix}{gi + offset}"
        chain += [(label, m) for m in group]
    return chain


def _classifier_chain(classifier: nn.Sequential, head_index: int) -> Chain:
    """Layers before the head with parameters form "fc"; the head is "head"; others follow along."""
    chain: Chain = []
    for i, m in enumerate(classifier):
        if i == head_index % len(classifier):
            chain.append(("head", m))
        elif any(True for _ in m.parameters()):
            chain.append(("fc", m))
        else:
            chain.append((None, m))
    return chain


def _chain(model: nn.Module, family: str) -> Chain | None:
    """The forward pass as a labelled module list, or None where forward is not a plain chain."""
    m = model
    flat = nn.Flatten(1)
    if family in ("resnet", "resnext", "wide_resnet"):
        return ([("stem", m.conv1), (None, m.bn1), (None, m.relu), (None, m.maxpool)]
                + [(f"layer{i}", getattr(m, f"layer{i}")) for i in range(1, 5)]
                + [(None, m.avgpool), (None, flat), ("head", m.fc)])
    if family == "regnet":
        return ([("stem", m.stem)] + [(n, b) for n, b in m.trunk_output.named_children()]
                + [(None, m.avgpool), (None, flat), ("head", m.fc)])
    if family == "shufflenet":
        return [("stem", m.conv1), (None, m.maxpool), ("stage2", m.stage2), ("stage3", m.stage3),
                ("stage4", m.stage4), ("conv5", m.conv5), (None, _MeanHW()), ("head", m.fc)]
    if family == "mobilenet_v2":
        return (_by_resolution(list(m.features), True, "stem", "stage")
                + [(None, nn.AdaptiveAvgPool2d(1)), (None, flat)] + _classifier_chain(m.classifier, -1))
    if family in ("mobilenet_v3", "efficientnet", "efficientnet_v2"):
        return (_by_resolution(list(m.features), True, "stem", "stage")
                + [(None, m.avgpool), (None, flat)] + _classifier_chain(m.classifier, -1))
    if family == "convnext":
        # classifier = LayerNorm2d, Flatten, Linear: the norm stays with the features.
        return (_by_resolution(list(m.features), True, "stem", "stage") + [(None, m.avgpool)]
                + [(None, m.classifier[0]), (None, m.classifier[1]), ("head", m.classifier[2])])
    if family == "mnasnet":
        return (_by_resolution(list(m.layers), False, "stem", "stage") + [(None, _MeanHW())]
                + _classifier_chain(m.classifier, -1))
    if family in ("vgg", "alexnet"):
        return (_by_resolution(list(m.features), False, "block1", "block") + [(None, m.avgpool), (None, flat)]
                + _classifier_chain(m.classifier, -1))
    if family == "densenet":
        return (_by_resolution(list(m.features), False, "stem", "stage")
                + [(None, nn.ReLU()), (None, nn.AdaptiveAvgPool2d(1)), (None, flat), ("head", m.classifier)])
    if family == "squeezenet":
        return (_by_resolution(list(m.features), False, "stem", "stage")
                + [(None, m.classifier[0]), ("head", m.classifier[1]), (None, m.classifier[2]),
                   (None, m.classifier[3]), (None, flat)])
    if family == "swin":
        f = m.features
        chain: Chain = [("patch_embed", f[0]), ("stage1", f[1])]
        for i in range(2, len(f), 2):
            chain += [(f"stage{i // 2 + 1}", f[i]), (None, f[i + 1])]
        return chain + [(None, m.norm), (None, m.permute), (None, m.avgpool), (None, m.flatten),
                        ("head", m.head)]
    if family == "maxvit":
        return ([("stem", m.stem)] + [(f"block{i + 1}", b) for i, b in enumerate(m.blocks)]
                + _classifier_chain(m.classifier, -1))
    if family == "vit":
        layers = list(m.encoder.layers)
        size = -(-len(layers) // 4)  # four groups of encoder blocks
        chain = [("patch_embed", _VitEmbed(m))]
        for i, layer in enumerate(layers):
            start = i - i % size
            chain.append((f"blocks{start + 1}-{min(start + size, len(layers))}", layer))
        return chain + [(None, m.encoder.ln), (None, _ClassToken()), ("head", m.heads)]
    if family == "inception":
        # Aux heads only run in train mode and ftui drops them, so eval forward is this chain.
        return ([(None, _TransformInput(m))]
                + [("stem", getattr(m, n)) for n in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3",
                                                     "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2")]
                + [("mixed5", getattr(m, f"Mixed_5{c}")) for c in "bcd"]
                + [("mixed6", getattr(m, f"Mixed_6{c}")) for c in "abcde"]
                + [("mixed7", getattr(m, f"Mixed_7{c}")) for c in "abc"]
                + [(None, m.avgpool), (None, m.dropout), (None, flat), ("head", m.fc)])
    if family == "googlenet":
        return ([(None, _TransformInput(m))]
                + [("stem", getattr(m, n)) for n in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2")]
                + [("inception3", getattr(m, n)) for n in ("inception3a", "inception3b", "maxpool3")]
                + [("inception4", getattr(m, f"inception4{c}")) for c in "abcde"] + [(None, m.maxpool4)]
                + [("inception5", getattr(m, f"inception5{c}")) for c in "ab"]
                + [(None, m.avgpool), (None, flat), (None, m.dropout), ("head", m.fc)])
    return None


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


def _named_groups(model: nn.Module, family: str) -> list[tuple[str, list[nn.Module]]]:
    chain = _chain(model, family)
    if chain is None:
        raise BackboneError(f"no layer groups defined for family {family!r}")
    return _groups_from_chain(chain)


def layer_groups(model: nn.Module, name: str) -> list[LayerGroup]:
    """Ordered input -> output groups for freezing, the last one named "head"."""
    groups = []
    for gname, modules in _named_groups(model, family_of(name)):
        params = _unique_params(modules)
        groups.append(LayerGroup(gname, modules, sum(p.numel() for p in params)))
    return groups


def split_model(model: nn.Module, name: str, groups: list[LayerGroup],
                first_trainable: int) -> tuple[nn.Module, nn.Module] | None:
    """(frozen prefix, trainable suffix) with suffix(prefix(x)) == model(x) in eval mode, or None.

    The prefix runs groups[:first_trainable]; the suffix runs the rest including pooling and the head.
    Both share the model's parameters. Every torchvision family is covered today (GoogLeNet / Inception
    without their aux heads, as `build` makes them); None is kept for a family without a chain.
    """
    chain = _chain(model, family_of(name))
    if chain is None:
        return None
    if not 0 <= first_trainable < len(groups):
        raise BackboneError(f"first_trainable must be in [0, {len(groups) - 1}], got {first_trainable}")
    labels = _label(chain)
    start = labels.index(groups[first_trainable].name)
    return nn.Sequential(*[m for _, m in chain[:start]]), nn.Sequential(*[m for _, m in chain[start:]])
