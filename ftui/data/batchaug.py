"""The training and eval pipelines of ftui/data/augment.py applied to a whole batch at once, on the batch's device.

On a GPU, per-image torchvision transforms cost a Python call and a handful of tiny kernels per image and
augmentation: far slower than the model. Here every random parameter is drawn per sample (on the CPU,
from a seeded generator, like the per-image pipeline draws them) and each step is one batched tensor op,
so the data path keeps up with the accelerator. Steps, order and ranges follow `augment.train_transform`:
crop/resize, flips, rotation, colour jitter (brightness/contrast/saturation in a random order per sample),
hue, grayscale, blur, normalisation, random erasing. Pixels are floats in [0, 1] between steps (the
per-image pipeline rounds to uint8 between its colour steps: results agree to within that rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ftui.config import AugConfig
from ftui.data.augment import IMAGENET_MEAN, IMAGENET_STD, _blur_kernel, default_resize_size

# torchvision's RandomResizedCrop aspect range and RandomErasing's area and aspect ranges.
CROP_RATIO = (3 / 4, 4 / 3)
ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)
TRIES = 10
GRAY = (0.2989, 0.587, 0.114)


def _uniform(shape, low: float, high: float, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float64) * (high - low) + low


def crop_boxes(sizes: Sequence[tuple[int, int]], scale: tuple[float, float], gen: torch.Generator | None,
               ratio: tuple[float, float] = CROP_RATIO) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) per image: RandomResizedCrop.get_params, all samples at once."""
    n = len(sizes)
    hw = torch.tensor(sizes, dtype=torch.float64).view(n, 1, 2)
    area = hw[..., 0] * hw[..., 1]
    target = area * _uniform((n, TRIES), *scale, gen)
    aspect = torch.exp(_uniform((n, TRIES), math.log(ratio[0]), math.log(ratio[1]), gen))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (h > 0) & (w <= hw[..., 1]) & (h <= hw[..., 0])
    u_top, u_left = torch.rand((n, TRIES), generator=gen), torch.rand((n, TRIES), generator=gen)
    boxes = []
    for k, (height, width) in enumerate(sizes):
        hits = ok[k].nonzero()
        if len(hits):
            t = int(hits[0])
            bh, bw = int(h[k, t]), int(w[k, t])
            top = int(u_top[k, t] * (height - bh + 1))
            left = int(u_left[k, t] * (width - bw + 1))
            boxes.append((top, left, bh, bw))
            continue
        # torchvision's fallback: the whole image, cut to the nearest allowed aspect, centred.
        in_ratio = width / height
        bw, bh = width, height
        if in_ratio < ratio[0]:
            bh = round(width / ratio[0])
        elif in_ratio > ratio[1]:
            bw = round(height * ratio[1])
        boxes.append(((height - bh) // 2, (width - bw) // 2, bh, bw))
    return boxes


def center_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """CenterCrop's (top, left, size, size), rounding as torchvision does."""
    return round((height - size) / 2.0), round((width - size) / 2.0), size, size


def _resize_shorter(image: torch.Tensor, target: int) -> torch.Tensor:
    """Shorter side to `target`, aspect kept (v2.Resize with an int), float CHW."""
    height, width = image.shape[-2:]
    if min(height, width) == target:
        return image
    if height <= width:
        new = (target, int(target * width / height))
    else:
        new = (int(target * height / width), target)
    return F.interpolate(image[None], size=new, mode="bilinear", antialias=True, align_corners=False)[0]


def crop_resize(images: Sequence[torch.Tensor], boxes: Sequence[tuple[int, int, int, int]],
                size: int) -> torch.Tensor:
    """Each uint8 image's box resized to size x size (bilinear, antialiased): a float batch in [0, 255]."""
    out = []
    for image, (top, left, h, w) in zip(images, boxes):
        crop = image[:, top:top + h, left:left + w].float()[None]
        if (h, w) != (size, size):
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(crop)
    return torch.cat(out)


def flip(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Flip the samples where mask is True along `dim` (-1 horizontal, -2 vertical)."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(dim), x)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each sample counter-clockwise by its angle about the centre (nearest, zeros outside): v2.rotate."""
    rad = degrees.to(x.device, torch.float32) * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    # Output -> input sampling coordinates (x right, y down in normalised units).
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma per sample, (B, 1, H, W)."""
    w = torch.tensor(GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation (factors (B, 3)) in each sample's own order (order (B, 3))."""
    factors, order = factors.to(x.device, x.dtype), order.to(x.device)
    for slot in range(3):
        op = order[:, slot].view(-1, 1, 1, 1)
        bright = _blend(x, torch.zeros_like(x[:, :1]), factors[:, 0])
        gray = grayscale(x)
        contrast = _blend(x, gray.mean(dim=(-3, -2, -1), keepdim=True), factors[:, 1])
        saturation = _blend(x, gray, factors[:, 2])
        x = torch.where(op == 0, bright, torch.where(op == 1, contrast, saturation))
    return x


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """augment.rotate_hue per sample: colours rotated about the grey axis by each sample's fraction of a turn."""
    angle = 2 * math.pi * turns.to(x.device, torch.float32)
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=x.device)
    eye, ones = torch.eye(3, device=x.device), torch.ones(3, 3, device=x.device)
    matrix = cos * eye + (1 - cos) / 3 * ones + sin / math.sqrt(3) * cross
    return torch.einsum("bij,bjhw->bihw", matrix.to(x.dtype), x).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor, kernel: int) -> torch.Tensor:
    """v2.GaussianBlur per sample (its own sigma, same in x and y, reflect padding): one grouped conv."""
    b, c, h, w = x.shape
    half = (kernel - 1) * 0.5
    pos = torch.linspace(-half, half, kernel, device=x.device, dtype=x.dtype)
    pdf = torch.exp(-0.5 * (pos[None] / sigmas.to(x.device, x.dtype)[:, None]) ** 2)
    k1 = (pdf / pdf.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, kernel)
    pad = kernel // 2
    flat = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    flat = F.conv2d(flat, k1.view(b * c, 1, 1, kernel), groups=b * c)
    flat = F.conv2d(flat, k1.view(b * c, 1, kernel, 1), groups=b * c)
    return flat.view(b, c, h, w)


def erase_boxes(n: int, size: int, gen: torch.Generator | None) -> torch.Tensor:
    """(top, left, height, width) per sample for RandomErasing's area/aspect ranges; height 0 = no box found."""
    area = float(size * size)
    target = area * _uniform((n, TRIES), *ERASE_SCALE, gen)
    aspect = torch.exp(_uniform((n, TRIES), math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), gen))
    h = torch.round(torch.sqrt(target * aspect)).long()
    w = torch.round(torch.sqrt(target / aspect)).long()
    ok = (h < size) & (w < size)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    u_top, u_left = torch.rand((n, TRIES), generator=gen), torch.rand((n, TRIES), generator=gen)
    rows = torch.arange(n)
    t = first.clamp(min=0)
    bh, bw = h[rows, t] * (first >= 0), w[rows, t] * (first >= 0)
    top = (u_top[rows, t] * (size - bh + 1)).long()
    left = (u_left[rows, t] * (size - bw + 1)).long()
    return torch.stack([top, left, bh, bw], 1)


def erase(x: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero each masked sample's box (the normalised mean colour, as v2.RandomErasing(value=0))."""
    boxes, mask = boxes.to(x.device), mask.to(x.device)
    ys = torch.arange(x.shape[-2], device=x.device).view(1, -1, 1)
    xs = torch.arange(x.shape[-1], device=x.device).view(1, 1, -1)
    top, left, h, w = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (ys >= top) & (ys < top + h) & (xs >= left) & (xs < left + w) & mask.view(-1, 1, 1)
    return x.masked_fill(inside[:, None], 0.0)


class BatchAugment:
    """`augment.train_transform` / `eval_transform` for a list of uint8 CHW images, as one float batch."""

    def __init__(self, aug: AugConfig, size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, resize_size: int | None = None) -> None:
        aug.validate()
        self.aug, self.size = aug, int(size)
        self.resize_size = int(resize_size or default_resize_size(size))
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def _centered(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Resize (shorter side) then center crop: float batch in [0, 255]."""
        out = []
        for image in images:
            resized = _resize_shorter(image.float(), self.resize_size)
            out.append(crop_resize([resized], [center_box(*resized.shape[-2:], self.size)], self.size))
        return torch.cat(out)

    def eval_batch(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """The eval pipeline for every image: resize, center crop, normalise."""
        return self._normalize(self._centered(images) / 255)

    def __call__(self, images: Sequence[torch.Tensor], gen: torch.Generator | None = None) -> torch.Tensor:
        """The training pipeline with its own random parameters for every image."""
        a, n = self.aug, len(images)
        if a.random_resized_crop:
            boxes = crop_boxes([tuple(im.shape[-2:]) for im in images], (a.crop_scale_min, a.crop_scale_max), gen)
            x = crop_resize(images, boxes, self.size)
        else:
            x = self._centered(images)
        x = x / 255
        if a.hflip:
            x = flip(x, (torch.rand(n, generator=gen) < 0.5).to(x.device), -1)
        if a.vflip:
            x = flip(x, (torch.rand(n, generator=gen) < 0.5).to(x.device), -2)
        if a.rotation:
            x = rotate(x, _uniform(n, -a.rotation_degrees, a.rotation_degrees, gen))
        if a.color_jitter:
            bounds = [(max(0.0, 1 - s), 1 + s) for s in (a.brightness, a.contrast, a.saturation)]
            factors = torch.stack([_uniform(n, lo, hi, gen) for lo, hi in bounds], 1)
            order = torch.argsort(torch.rand((n, 3), generator=gen), dim=1)
            x = color_jitter(x, factors, order)
            if a.hue > 0:
                x = rotate_hue(x, _uniform(n, -a.hue, a.hue, gen))
        if a.grayscale:
            mask = (torch.rand(n, generator=gen) < a.grayscale_p).to(x.device)
            x = torch.where(mask.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
        if a.blur:
            x = gaussian_blur(x, _uniform(n, 0.1, a.blur_sigma_max, gen), _blur_kernel(a.blur_sigma_max, self.size))
        x = self._normalize(x)
        if a.random_erasing:
            x = erase(x, erase_boxes(n, self.size, gen), torch.rand(n, generator=gen) < a.erasing_p)
        return x
