"""timm classifiers as ftui backbones: `timm:<name>` (e.g. `timm:resnet18`, `timm:convnext_atto`).

What torchvision's weight metadata gives for its own models comes here from timm's pretrained config, read
without building anything: input size, crop, mean/std and the classifier's path. Models are always created
with `pretrained=False` (timm's own loader would download from the Hugging Face hub): weights come from a
local file (`.safetensors` or `.pth`, a timm or Hugging Face `timm/...` checkpoint) or stay random.

Layer groups (what can be frozen and what the feature cache can run once):
- ResNet family (resnet*, resnext*, wide_resnet*, ...): stem, layer1..layer4, head
- EfficientNet / MobileNetV3 families (efficientnet*, tf_efficientnet*, mobilenetv3*, mnasnet*, ...): stem,
  stage1..stageN (timm's `blocks`), head
- ConvNeXt: stem, stage1..stage4, head
- every other timm classifier (ViT, DeiT, Swin, RegNet, ...): body, head
Each chain runs the model's own `forward_features` / `forward_head` code, so prefix + suffix == model(x).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from ftui.models.family_record import BackboneError, Chain, Family

PREFIX = "timm:"
# Smallest square input for the convolutional families (a 32 px image keeps >= 1 pixel at stride 32).
_MIN_INPUT = 32


def is_timm(name: str) -> bool:
    """True for a `timm:<model>` backbone name."""
    return name.startswith(PREFIX)


def _timm():
    try:
        import timm
    except ImportError:
        raise BackboneError("timm backbones need the timm package: pip install timm") from None
    return timm


def architecture(name: str) -> str:
    """The timm model name of `timm:<name>`, checked against timm's registry."""
    arch = name[len(PREFIX):]
    if arch not in _known():
        raise BackboneError(f"unknown timm model {arch!r}: `python -m ftui backbones --timm PATTERN` lists them "
                            f"(e.g. --timm 'resnet*')")
    return arch


@functools.cache
def _known() -> frozenset[str]:
    return frozenset(_timm().list_models())


def list_timm(pattern: str = "") -> list[str]:
    """`timm:<name>` for every timm classifier with one classification layer, optionally matching a pattern."""
    from timm.models import get_pretrained_cfg

    names = _timm().list_models(pattern or "")
    out = []
    for arch in names:
        cfg = get_pretrained_cfg(arch)
        if cfg is not None and isinstance(cfg.classifier, str):
            out.append(PREFIX + arch)
    return out


@functools.cache
def pretrained_config(name: str) -> dict[str, Any]:
    """timm's default pretrained config for the model (no model built, nothing downloaded)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(architecture(name))
    if cfg is None:
        raise BackboneError(f"{name}: timm has no pretrained config for it (input size, mean/std unknown)")
    cfg = cfg.to_dict()
    if not isinstance(cfg.get("classifier"), str):
        raise BackboneError(f"{name} has several classifier heads ({cfg.get('classifier')}): ftui supports "
                            f"models with one")
    return cfg


@functools.cache
def num_params(name: str) -> int:
    """Parameter count of the 1000-class model, built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = _timm().create_model(architecture(name), pretrained=False)
    return sum(p.numel() for p in model.parameters())


def preprocessing(name: str) -> dict[str, Any]:
    """input_size, resize_size (timm's eval resize: input / crop_pct), mean, std, fixed_input_size."""
    cfg = pretrained_config(name)
    size = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    return {"input_size": size, "resize_size": max(size, int(size / crop_pct)),
            "mean": tuple(float(v) for v in cfg["mean"]), "std": tuple(float(v) for v in cfg["std"]),
            "fixed_input_size": bool(cfg.get("fixed_input_size")), "hf_hub_id": cfg.get("hf_hub_id") or ""}


def stock_model(name: str) -> nn.Module:
    """timm's 1000-class model, random init: published timm checkpoints load into it strictly."""
    return _timm().create_model(architecture(name), pretrained=False)


def replace_head(model: nn.Module, name: str, num_classes: int) -> None:
    """timm's own `reset_classifier` (keeps the pooling); the new head must be one Linear layer."""
    model.reset_classifier(num_classes)
    head = model.get_submodule(pretrained_config(name)["classifier"])
    if not isinstance(head, nn.Linear):
        raise BackboneError(f"{name}: its classifier is a {type(head).__name__}, ftui needs a Linear layer")


def missing_weights_message(name: str) -> str:
    """What to do instead of 'imagenet' for a timm model (ftui never downloads timm weights)."""
    hub = preprocessing(name)["hf_hub_id"]
    where = f"the Hugging Face repository {hub} (its model.safetensors)" if hub else "timm's release page"
    return (f"ftui does not download timm weights: get {name}'s checkpoint from {where} on a machine with "
            f"network, then pass it as a weights file (--weights FILE.safetensors or .pth); or use weights "
            f"'none' (random init)")


# --- layer groups ------------------------------------------------------------------------------------------


class _Part(nn.Module):
    """One step of a timm model's forward (a bound method of the model, not registered here) that owns the
    modules and loose parameters it runs, so freezing the part freezes them."""

    def __init__(self, fn, modules: list[nn.Module], params: list[nn.Parameter]) -> None:
        super().__init__()
        self.fn = fn
        self.parts = nn.ModuleList(modules)
        for i, p in enumerate(params):
            self.register_parameter(f"loose{i}", p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _owners(model: nn.Module, skip: set[int]) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """Modules whose own parameters are not in `skip` (leaf owners), plus parameters held directly by a
    module that also has children (ViT's cls_token, pos_embed): everything a part must own."""
    modules, loose = [], []
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in skip]
        if not own:
            continue
        if any(True for _ in module.children()):
            loose += own
        else:
            modules.append(module)
            skip.update(id(p) for p in module.parameters())
    return modules, loose


def _ids(modules: list[nn.Module]) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


def _pre_logits(model: nn.Module, chain_so_far: Chain, head: nn.Module) -> _Part:
    """forward_head up to the classifier; owns whatever parameters the chain and the head do not."""
    modules, loose = _owners(model, _ids([m for _, m in chain_so_far] + [head]))
    return _Part(functools.partial(model.forward_head, pre_logits=True), modules, loose)


def _generic(model: nn.Module, head: nn.Module) -> Chain:
    body_modules, loose = _owners(model, _ids([head]))
    body = _Part(model.forward_features, body_modules, loose)
    return [("body", body), (None, _Part(functools.partial(model.forward_head, pre_logits=True), [], [])),
            ("head", head)]


def _resnet(model: nn.Module) -> Chain:
    return ([("stem", model.conv1), (None, model.bn1), (None, model.act1), (None, model.maxpool)]
            + [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)])


def _efficientnet(model: nn.Module) -> Chain:
    chain: Chain = [("stem", model.conv_stem), (None, model.bn1)]
    chain += [(f"stage{i + 1}", stage) for i, stage in enumerate(model.blocks)]
    # EfficientNet's forward_features ends with conv_head + bn2 (MobileNetV3 runs them in forward_head).
    if type(model).__name__ == "EfficientNet":
        chain += [(None, model.conv_head), (None, model.bn2)]
    return chain


def _convnext(model: nn.Module) -> Chain:
    return ([("stem", model.stem)] + [(f"stage{i + 1}", s) for i, s in enumerate(model.stages)]
            + [(None, model.norm_pre)])


# timm model class -> the explicit part of its forward_features; anything else is "body" + "head".
_FEATURE_CHAINS = {"ResNet": _resnet, "EfficientNet": _efficientnet, "MobileNetV3": _efficientnet,
                   "ConvNeXt": _convnext}


def _chain(model: nn.Module, name: str) -> Chain:
    head = model.get_submodule(pretrained_config(name)["classifier"])
    features = _FEATURE_CHAINS.get(type(model).__name__)
    if features is None:
        return _generic(model, head)
    chain = features(model)
    return chain + [(None, _pre_logits(model, chain, head)), ("head", head)]


def grouped_families() -> list[str]:
    """The timm model classes with finer layer groups than body + head."""
    return sorted(_FEATURE_CHAINS)


def timm_family(name: str) -> Family:
    """The `Family` record of a timm model: head path, chain, input limits (from its pretrained config)."""
    pre = preprocessing(name)
    return Family(name="timm", head_path=pretrained_config(name)["classifier"],
                  chain=lambda model: _chain(model, name),
                  min_input=pre["input_size"] if pre["fixed_input_size"] else _MIN_INPUT,
                  fixed_input=pre["fixed_input_size"])
