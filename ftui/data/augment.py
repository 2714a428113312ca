"""Train and eval pipelines (torchvision.transforms.v2) built from an AugConfig, and the preview grid.

Both pipelines take a uint8 CHW tensor (from the decoded-image cache) or a PIL image and return a
normalized float32 CHW tensor. Geometry runs first, on uint8, so the later steps touch fewer pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from ftui.config import AugConfig
from ftui.data.imagecache import resize_for_cache
from ftui.data.images import open_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_resize_size(size: int) -> int:
    """The resize before a center crop of `size`, in torchvision's usual 256/224 ratio."""
    return round(size * 256 / 224)


def train_transform(
    aug: AugConfig,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resize_size: int | None = None,
) -> v2.Compose:
    """The training pipeline: the switched-on augmentations, then float conversion and normalisation."""
    aug.validate()
    steps: list[v2.Transform] = [v2.ToImage()]
    if aug.random_resized_crop:
        steps.append(v2.RandomResizedCrop(size, scale=(aug.crop_scale_min, aug.crop_scale_max), antialias=True))
    else:
        steps += [v2.Resize(resize_size or default_resize_size(size), antialias=True), v2.CenterCrop(size)]
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.vflip:
        steps.append(v2.RandomVerticalFlip())
    if aug.rotation:
        steps.append(v2.RandomRotation(aug.rotation_degrees))
    if aug.color_jitter:
        steps.append(v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation))
        if aug.hue > 0:
            steps.append(RandomHue(aug.hue))
    if aug.grayscale:
        steps.append(v2.RandomGrayscale(aug.grayscale_p))
    if aug.blur:
        steps.append(v2.GaussianBlur(_blur_kernel(aug.blur_sigma_max, size), sigma=(0.1, aug.blur_sigma_max)))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if aug.random_erasing:
        # Last, on the normalised tensor: erased patches become zeros, i.e. the dataset's mean colour.
        steps.append(v2.RandomErasing(p=aug.erasing_p))
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


def eval_transform(
    size: int,
    resize_size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Resize the shorter side to `resize_size`, center crop `size`, normalise: the backbone's eval recipe."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize_size or default_resize_size(size), antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
        v2.ToPureTensor(),
    ])


def preview(
    image: Image.Image | torch.Tensor | str | Path,
    aug: AugConfig,
    n: int,
    seed: int,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resize_size: int | None = None,
) -> list[Image.Image]:
    """n augmented versions of one image exactly as training sees them, de-normalised; same seed, same images.

    A PIL image or file goes through the same decode-and-resize as the training cache first. The global
    torch RNG is left as it was.
    """
    resize_size = resize_size or default_resize_size(size)
    if isinstance(image, (str, Path)):
        image = open_rgb(image, draft_size=resize_size)
    tensor = image if isinstance(image, torch.Tensor) else resize_for_cache(image.convert("RGB"), resize_size)
    pipeline = train_transform(aug, size, mean, std, resize_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        outputs = [pipeline(tensor) for _ in range(max(0, int(n)))]
    return [to_pil(out, mean, std) for out in outputs]


def to_pil(tensor: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
           std: Sequence[float] = IMAGENET_STD) -> Image.Image:
    """Undo Normalize on a float CHW tensor and return a viewable RGB image (values clamped)."""
    mean_t = torch.tensor(mean, dtype=tensor.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=tensor.dtype).view(-1, 1, 1)
    pixels = (tensor.detach().cpu() * std_t + mean_t).clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())


class RandomHue(v2.Transform):
    """Shift hue by a random fraction of a full turn in [-hue, hue] (ColorJitter's hue, ~20x faster).

    torchvision's hue jitter goes through HSV and costs about 4 ms per 224 px image on one CPU core,
    more than the rest of the pipeline together; rotating colours about the grey axis is one 3x3 matrix
    per image (as CSS `hue-rotate` does), keeps greys grey and matches HSV closely for small shifts.
    """

    def __init__(self, hue: float):
        super().__init__()
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.hue = hue

    def make_params(self, flat_inputs: list) -> dict[str, float]:
        return {"factor": float(torch.empty(1).uniform_(-self.hue, self.hue))}

    def transform(self, inpt, params: dict[str, float]):
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        return tv_tensors.wrap(rotate_hue(inpt.as_subclass(torch.Tensor), params["factor"]), like=inpt)


def rotate_hue(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Rotate the colours of an RGB CHW tensor (uint8 or float in [0, 1]) by `factor` turns about grey."""
    angle = 2 * math.pi * factor
    cos, sin = math.cos(angle), math.sin(angle)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
    # Rodrigues' rotation about the unit axis (1, 1, 1) / sqrt(3).
    matrix = cos * torch.eye(3) + (1 - cos) / 3 * torch.ones(3, 3) + sin / math.sqrt(3) * cross
    pixels = image.reshape(3, -1).to(torch.float32)
    rotated = (matrix @ pixels).reshape(image.shape)
    if image.dtype == torch.uint8:
        return rotated.clamp_(0, 255).round_().to(torch.uint8)
    return rotated.clamp_(0, 1).to(image.dtype)


def _blur_kernel(sigma_max: float, size: int) -> int:
    """An odd kernel wide enough for sigma_max (about 3 sigma each side) but smaller than the image."""
    kernel = 2 * math.ceil(3 * sigma_max) + 1
    largest = size if size % 2 else size - 1
    return max(3, min(kernel, largest))
