"""Grad-CAM: which part of the image made the model pick a class, as a heat map over what the model saw.

A short hook-based implementation (Selvaraju et al. 2017) instead of the `grad-cam` package: that one pulls
opencv, matplotlib, scikit-learn and scipy for the ~40 lines needed here. The layer explained is the last
spatial map in the forward pass that carries gradient for the class: the last stage of a CNN, the
permuted feature map of a Swin, the patch tokens entering a ViT's last block.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ftui.errors import FtuiError

# Simple, colour-blind-safe-ish ramp (dark blue -> cyan -> yellow -> red) for the heat map.
_RAMP = np.array([[0, 0, 130], [0, 160, 255], [255, 230, 0], [230, 20, 0]], dtype=np.float32)
LOW_CONFIDENCE = 0.5
# How many of the last spatial maps to try, newest first (a ViT block has a dozen hooked outputs).
CANDIDATES = 24
HIGH_CONFIDENCE = 0.8


class ExplainError(FtuiError):
    """The model has no spatial feature map to explain."""


@dataclass
class Explanation:
    """A heat map (H x W, 0..1) for one class, the overlay image and the layer it came from."""

    class_index: int
    heatmap: np.ndarray
    overlay: Image.Image
    layer: str


def _spatial(t: torch.Tensor) -> torch.Tensor | None:
    """(N, C, H, W) maps as they are; ViT tokens (N, 1 + s*s, C) as (N, C, s, s) without the class token."""
    if t.dim() == 4 and min(t.shape[-2:]) >= 2:
        return t
    if t.dim() == 3:
        side = math.isqrt(t.shape[1] - 1)
        if side >= 2 and side * side == t.shape[1] - 1:
            return t[:, 1:].transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)
    return None


def grad_cam(model: nn.Module, batch: torch.Tensor, class_index: int | None = None) -> tuple[np.ndarray, int, str]:
    """Grad-CAM of one image (batch of 1): the map at the input's size, the class explained, the layer's name.

    The layer is the last spatial map whose map is not all zero: in a ViT the patch tokens after the last
    attention reach the class only through the class token, so their gradients are zero and the input of
    the last block is used (the usual choice for ViT Grad-CAM).
    """
    names = {module: name for name, module in model.named_modules()}
    seen: list[tuple[str, torch.Tensor]] = []
    # The model is shared (the app's warm Predictor): other threads run forwards through it at the same time
    # (another viewer's Grad-CAM, a prediction). Hooks fire in the thread that runs the forward, so keeping
    # only this thread's activations means a concurrent call can never mix its maps into this one.
    caller = threading.get_ident()

    def keep(module, _inputs, output):
        if threading.get_ident() == caller and isinstance(output, torch.Tensor) and _spatial(output) is not None:
            seen.append((names.get(module, "?"), output))

    hooks = [m.register_forward_hook(keep) for m in model.modules() if m is not model]
    try:
        with torch.enable_grad():
            x = batch[:1].detach().clone().requires_grad_(True)  # gradients flow even with frozen weights
            logits = model(x)
            if not seen:
                raise ExplainError("this backbone has no spatial feature map, so there is no Grad-CAM for it")
            target = int(logits[0].argmax()) if class_index is None else int(class_index)
            last = seen[-CANDIDATES:]
            grads = torch.autograd.grad(logits[0, target], [a for _, a in last], allow_unused=True)
    finally:
        for hook in hooks:
            hook.remove()
    for (layer, activation), grad in zip(reversed(last), reversed(grads)):
        if grad is None:
            continue
        fmap, gmap = _spatial(activation.detach()), _spatial(grad)
        cam = F.relu((gmap.mean(dim=(2, 3), keepdim=True) * fmap).sum(dim=1, keepdim=True))
        if float(cam.max()) > 0:
            cam = F.interpolate(cam, size=tuple(batch.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
            return (cam / cam.max()).numpy(), target, layer
    raise ExplainError("no layer near the output carries a signal for this class, so there is no heat map")


def colourise(heatmap: np.ndarray) -> np.ndarray:
    """H x W in 0..1 -> H x W x 3 uint8 along the ramp."""
    pos = np.clip(heatmap, 0, 1) * (len(_RAMP) - 1)
    low = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def seen_image(batch: torch.Tensor, mean, std) -> Image.Image:
    """The normalised tensor the model saw, back as an RGB image."""
    x = batch[0].detach().float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return Image.fromarray((x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def overlay(image: Image.Image, heatmap: np.ndarray, size: int = 256, alpha: float = 0.45) -> Image.Image:
    """The heat map blended over the image, scaled smoothly to `size` pixels (not a blocky upscale)."""
    base = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    heat = Image.fromarray(colourise(heatmap)).resize((size, size), Image.Resampling.BILINEAR)
    return Image.blend(base, heat, alpha)


def explain(predictor, image, class_index: int | None = None, size: int = 256) -> Explanation:
    """Grad-CAM for one image (path or PIL) with a `ftui.results.predict.Predictor`; the predicted class by default."""
    batch = predictor.tensors([image]).to(predictor.device)
    heatmap, target, layer = grad_cam(predictor.model, batch, class_index)
    t = predictor.run.transform
    return Explanation(class_index=target, heatmap=heatmap,
                       overlay=overlay(seen_image(batch, t["mean"], t["std"]), heatmap, size), layer=layer)


def confidence_words(top: list[tuple[str, float]]) -> str:
    """A sentence a user can read: low confidence said as such, with the runner-up when it is close."""
    label, p = top[0]
    if p >= HIGH_CONFIDENCE:
        return f"**{label}** ({p:.0%}): confident."
    runner = f"; next is {top[1][0]} ({top[1][1]:.0%})" if len(top) > 1 else ""
    if p >= LOW_CONFIDENCE:
        return f"**{label}** ({p:.0%}): fairly confident{runner}."
    return f"**Low confidence:** the best guess is {label} at only {p:.0%}{runner}. Treat it as unsure."
