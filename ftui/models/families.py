"""One record per torchvision backbone family: what ftui needs to adapt any of its models.

In the spirit of timm's pretrained configs and fastai's `model_meta`: a `Family` says where the
classification head lives, the smallest (or the only) input size, how the eval-mode forward splits into
layer groups (the "chain"), and the options torchvision's builder needs. Adding a family is adding one
record to `FAMILIES`; nothing else in ftui lists families.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision import models as tvm

from ftui.models.family_record import BackboneError, Chain, Family

# --- modules the chains need -----------------------------------------------------------------------


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
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


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


def _classifier_chain(classifier: nn.Sequential, head_index: int = -1) -> Chain:
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


# --- one chain per family --------------------------------------------------------------------------


def _resnet(m: nn.Module) -> Chain:
    return ([("stem", m.conv1), (None, m.bn1), (None, m.relu), (None, m.maxpool)]
            + [(f"layer{i}", getattr(m, f"layer{i}")) for i in range(1, 5)]
            + [(None, m.avgpool), (None, nn.Flatten(1)), ("head", m.fc)])


def _regnet(m: nn.Module) -> Chain:
    return ([("stem", m.stem)] + list(m.trunk_output.named_children())
            + [(None, m.avgpool), (None, nn.Flatten(1)), ("head", m.fc)])


def _shufflenet(m: nn.Module) -> Chain:
    return [("stem", m.conv1), (None, m.maxpool), ("stage2", m.stage2), ("stage3", m.stage3),
            ("stage4", m.stage4), ("conv5", m.conv5), (None, _MeanHW()), ("head", m.fc)]


def _mobilenet_v2(m: nn.Module) -> Chain:
    return (_by_resolution(list(m.features), True, "stem", "stage")
            + [(None, nn.AdaptiveAvgPool2d(1)), (None, nn.Flatten(1))] + _classifier_chain(m.classifier))


def _features_avgpool(m: nn.Module) -> Chain:
    """mobilenet_v3, efficientnet(_v2): features, avgpool, flatten, classifier."""
    return (_by_resolution(list(m.features), True, "stem", "stage")
            + [(None, m.avgpool), (None, nn.Flatten(1))] + _classifier_chain(m.classifier))


def _convnext(m: nn.Module) -> Chain:
    # classifier = LayerNorm2d, Flatten, Linear: the norm stays with the features.
    return (_by_resolution(list(m.features), True, "stem", "stage") + [(None, m.avgpool)]
            + [(None, m.classifier[0]), (None, m.classifier[1]), ("head", m.classifier[2])])


def _mnasnet(m: nn.Module) -> Chain:
    return (_by_resolution(list(m.layers), False, "stem", "stage") + [(None, _MeanHW())]
            + _classifier_chain(m.classifier))


def _vgg(m: nn.Module) -> Chain:
    """vgg and alexnet."""
    return (_by_resolution(list(m.features), False, "block1", "block") + [(None, m.avgpool), (None, nn.Flatten(1))]
            + _classifier_chain(m.classifier))


def _densenet(m: nn.Module) -> Chain:
    return (_by_resolution(list(m.features), False, "stem", "stage")
            + [(None, nn.ReLU()), (None, nn.AdaptiveAvgPool2d(1)), (None, nn.Flatten(1)), ("head", m.classifier)])


def _squeezenet(m: nn.Module) -> Chain:
    return (_by_resolution(list(m.features), False, "stem", "stage")
            + [(None, m.classifier[0]), ("head", m.classifier[1]), (None, m.classifier[2]),
               (None, m.classifier[3]), (None, nn.Flatten(1))])


def _swin(m: nn.Module) -> Chain:
    f = m.features
    chain: Chain = [("patch_embed", f[0]), ("stage1", f[1])]
    for i in range(2, len(f), 2):
        chain += [(f"stage{i // 2 + 1}", f[i]), (None, f[i + 1])]
    return chain + [(None, m.norm), (None, m.permute), (None, m.avgpool), (None, m.flatten), ("head", m.head)]


def _maxvit(m: nn.Module) -> Chain:
    return ([("stem", m.stem)] + [(f"block{i + 1}", b) for i, b in enumerate(m.blocks)]
            + _classifier_chain(m.classifier))


def _vit(m: nn.Module) -> Chain:
    layers = list(m.encoder.layers)
    size = -(-len(layers) // 4)  # four groups of encoder blocks
    chain: Chain = [("patch_embed", _VitEmbed(m))]
    for i, layer in enumerate(layers):
        start = i - i % size
        chain.append((f"blocks{start + 1}-{min(start + size, len(layers))}", layer))
    return chain + [(None, m.encoder.ln), (None, _ClassToken()), ("head", m.heads)]


def _inception(m: nn.Module) -> Chain:
    # Aux heads only run in train mode and ftui drops them, so eval forward is this chain.
    return ([(None, _TransformInput(m))]
            + [("stem", getattr(m, n)) for n in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3",
                                                 "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2")]
            + [("mixed5", getattr(m, f"Mixed_5{c}")) for c in "bcd"]
            + [("mixed6", getattr(m, f"Mixed_6{c}")) for c in "abcde"]
            + [("mixed7", getattr(m, f"Mixed_7{c}")) for c in "abc"]
            + [(None, m.avgpool), (None, m.dropout), (None, nn.Flatten(1)), ("head", m.fc)])


def _googlenet(m: nn.Module) -> Chain:
    return ([(None, _TransformInput(m))]
            + [("stem", getattr(m, n)) for n in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2")]
            + [("inception3", getattr(m, n)) for n in ("inception3a", "inception3b", "maxpool3")]
            + [("inception4", getattr(m, f"inception4{c}")) for c in "abcde"] + [(None, m.maxpool4)]
            + [("inception5", getattr(m, f"inception5{c}")) for c in "ab"]
            + [(None, m.avgpool), (None, nn.Flatten(1)), (None, m.dropout), ("head", m.fc)])


# --- build options ---------------------------------------------------------------------------------


def _inception_options(name: str, pretrained: bool) -> dict:
    # As torchvision does for its pretrained builders: those weights expect transform_input and carry aux
    # heads, which ftui drops after loading (one output keeps the training loop simple).
    return {"aux_logits": True, "init_weights": not pretrained, "transform_input": pretrained}


def _vit_options(name: str, pretrained: bool) -> dict:
    # The position embedding's size is fixed at build time: use the published weights' input size.
    return {"image_size": int(default_weights(name).meta["min_size"][0])}


# Order matters: longer prefixes that contain shorter ones come first (maxvit before vit, ...).
FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("resnext", "fc", _resnet),
    Family("wide_resnet", "fc", _resnet),
    Family("resnet", "fc", _resnet),
    Family("mobilenet_v2", "classifier.1", _mobilenet_v2),
    Family("mobilenet_v3", "classifier.3", _features_avgpool),
    Family("efficientnet_v2", "classifier.1", _features_avgpool),
    Family("efficientnet", "classifier.1", _features_avgpool),
    Family("convnext", "classifier.2", _convnext),
    Family("regnet", "fc", _regnet),
    Family("densenet", "classifier", _densenet),
    Family("vgg", "classifier.6", _vgg),
    Family("alexnet", "classifier.6", _vgg, min_input=63),
    Family("squeezenet", "classifier.1", _squeezenet),
    Family("shufflenet", "fc", _shufflenet),
    Family("mnasnet", "classifier.1", _mnasnet),
    Family("googlenet", "fc", _googlenet, build_options=_inception_options),
    Family("inception", "fc", _inception, min_input=75, build_options=_inception_options),
    Family("maxvit", "classifier.5", _maxvit, min_input=224, fixed_input=True),
    Family("vit", "heads.head", _vit, min_input=224, fixed_input=True, build_options=_vit_options),
    Family("swin", "head", _swin),
]}


def family_of(name: str) -> str:
    """The family a torchvision model name belongs to (e.g. "resnet" for resnet50)."""
    for fam in FAMILIES:
        if name.startswith(fam):
            return fam
    raise BackboneError(f"unknown backbone family for {name!r}")


def family(name: str) -> Family:
    """The record for the family of model `name` (a `timm:<model>` name gets its own, from timm's config)."""
    if name.startswith("timm:"):
        from ftui.models.timm_models import timm_family

        return timm_family(name)
    return FAMILIES[family_of(name)]


def head_path(name: str) -> str:
    """Dotted path of the final classification layer, e.g. "fc" or "classifier.1"."""
    return family(name).head_path


def check_name(name: str) -> None:
    if name.startswith("timm:"):
        from ftui.models.timm_models import architecture

        architecture(name)
        return
    known = tvm.list_models(module=torchvision.models)
    if name not in known:
        raise BackboneError(f"unknown backbone {name!r}. Choose one of: {', '.join(sorted(known))}")


def default_weights(name: str) -> tvm.WeightsEnum:
    """torchvision's recommended ImageNet weights for `name`."""
    if name.startswith("timm:"):
        from ftui.models.timm_models import missing_weights_message

        raise BackboneError(missing_weights_message(name))
    check_name(name)
    return tvm.get_model_weights(name).DEFAULT
