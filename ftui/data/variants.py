"""`python -m ftui make-variant SRC OUT [--size 32] [--grayscale] [--rotate DEG]`: a shifted copy of a dataset.

For the recipe suite (bench-recipes): a default must hold on data unlike ImageNet, and shifts can be made
from data we already have without committing images: low resolution (tiny thumbnails, scanned slides),
no colour (medical scans), a fixed rotation (overhead or microscope shots). The folder layout (class
folders, or train/ and val/ of class folders) is kept, so the split stays the source's split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from ftui.data.images import ImageError, has_image_extension, is_ignored, open_rgb
from ftui.errors import FtuiError


class VariantError(FtuiError):
    """The source or the options cannot make a variant."""


def make_variant(src: str | Path, out: str | Path, size: int | None = None, grayscale: bool = False,
                 rotate: float = 0.0) -> int:
    """Write every readable image under `src` to the same relative path under `out` (as PNG), shorter side
    resized to `size`, converted to grayscale, rotated; returns the number written."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise VariantError(f"source folder not found: {src}")
    if size is not None and not 8 <= size <= 4096:
        raise VariantError(f"size must be in [8, 4096], got {size}")
    if out.resolve().is_relative_to(src.resolve()):
        raise VariantError("the output folder must not be inside the source folder")
    written = 0
    for path in sorted(p for p in src.rglob("*") if p.is_file() and has_image_extension(p)):
        if any(is_ignored(part) for part in path.relative_to(src).parts):
            continue
        try:
            image = open_rgb(path)
        except ImageError:  # unreadable files are skipped, as the dataset loader skips them
            continue
        if size is not None:
            scale = size / min(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.BICUBIC)
        if grayscale:
            image = image.convert("L")
        if rotate:
            image = image.rotate(rotate, resample=Image.BILINEAR, expand=True)
        target = (out / path.relative_to(src)).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)
        written += 1
    return written


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="dataset folder to copy")
    parser.add_argument("out", help="where the variant goes (a new folder)")
    parser.add_argument("--size", type=int, default=None, help="shorter side in pixels (e.g. 32: low resolution)")
    parser.add_argument("--grayscale", action="store_true")
    parser.add_argument("--rotate", type=float, default=0.0, help="degrees, counter-clockwise")


def run_cli(args: argparse.Namespace) -> int:
    n = make_variant(args.src, args.out, args.size, args.grayscale, args.rotate)
    print(f"wrote {n} images to {args.out}")
    return 0
