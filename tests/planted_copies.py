"""Planted near-duplicate copies made from real photos: crops, resizes, re-encodes, colour shifts, flips.

Each original goes to train/<class>/, its altered copy to val/<class>/ (a leak the doctor must report)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps


def _crop(im: Image.Image, share: float = 0.05) -> Image.Image:
    """Cut `share` of the width and height off (from the top-left corner: an off-centre crop)."""
    w, h = im.size
    return im.crop((round(w * share), round(h * share), w, h))


def _resize(im: Image.Image, scale: float = 2 / 3) -> Image.Image:
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)


def _jpeg(im: Image.Image, quality: int = 70) -> Image.Image:
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _colour(im: Image.Image) -> Image.Image:
    """A small colour shift: 8% brighter, 10% more saturated."""
    return ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.08)).enhance(1.1)


TRANSFORMS = {
    "crop5": _crop,
    "resize23": _resize,
    "jpeg70": _jpeg,
    "crop_resize_jpeg": lambda im: _jpeg(_resize(_crop(im))),
    "colour": _colour,
    "flip": ImageOps.mirror,
    "flip_jpeg": lambda im: _jpeg(ImageOps.mirror(im)),
}


def plant_copies(sources: list[tuple[Path, str]], root: Path) -> list[tuple[str, str, str]]:
    """Write root/train/<class>/<name>.png originals and root/val/<class>/<name>_<kind>.jpg copies, cycling
    through TRANSFORMS; returns (original path, copy path, transform) for every planted pair."""
    planted = []
    kinds = list(TRANSFORMS)
    for i, (path, label) in enumerate(sources):
        kind = kinds[i % len(kinds)]
        with Image.open(path) as raw:
            image = ImageOps.exif_transpose(raw).convert("RGB")
        original = root / "train" / label / f"{path.stem}.png"
        copy = root / "val" / label / f"{path.stem}_{kind}.jpg"
        original.parent.mkdir(parents=True, exist_ok=True)
        copy.parent.mkdir(parents=True, exist_ok=True)
        image.save(original)
        TRANSFORMS[kind](image).save(copy, quality=92)
        planted.append((str(original), str(copy), kind))
    return planted
