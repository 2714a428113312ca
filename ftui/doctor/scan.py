"""Decode every image once (thread pool) and keep only what the checks need: properties, hashes, a view."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import imagehash
import numpy as np
from PIL import Image, ImageOps

from ftui.data.images import ImageError, open_rgb

# Side of the square centre crop handed to a feature function that does not say its `input_size`
# (the usual ImageNet input size).
VIEW_SIZE = 224
# Side the image is shrunk to once for hashing and brightness statistics (fast and plenty for both).
SMALL_SIZE = 128
# Side of the squashed RGB square the near-duplicate pixel check aligns and compares (low resolution
# forgives re-encoding and resizing; squashing keeps a slightly cropped copy lined up axis by axis).
PIXEL_SIZE = 64
EXIF_ORIENTATION = 0x0112

FeatureFn = Callable[[list[Image.Image]], np.ndarray]
Progress = Callable[[float, str], None]


@dataclass
class ImageRecord:
    """What one file looked like on disk and after decoding."""

    path: str
    label: int
    split: str
    reason: str | None = None  # why the file is unusable, None when it decoded fine
    format: str = ""
    mode: str = ""
    width: int = 0
    height: int = 0
    orientation: int = 1
    has_alpha: bool = False
    pixel_hash: str = ""
    phash: int = 0
    dhash: int = 0
    luma_mean: float = 0.0
    luma_std: float = 0.0
    dominant_fraction: float = 0.0  # share of pixels in the most common brightness bin
    colourless: bool = False  # stored as colour but every pixel is grey
    # Flip-aware hashes and small pixel views for the near-duplicate check (None when unreadable).
    phash_flip: int = 0
    pixels: np.ndarray | None = field(default=None, repr=False)  # PIXEL_SIZE^2 x 3 uint8, squashed

    @property
    def ok(self) -> bool:
        return self.reason is None


def _header(path: str) -> tuple[str, str, int, bool]:
    """Format, mode, EXIF orientation and alpha as stored in the file (header only, no pixel decode)."""
    with Image.open(path) as raw:
        orientation = int(raw.getexif().get(EXIF_ORIENTATION, 1) or 1)
        has_alpha = raw.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            raw.mode == "P" and "transparency" in raw.info
        )
        return raw.format or "", raw.mode, orientation, has_alpha


def _hash_int(h: imagehash.ImageHash) -> int:
    """The 64 hash bits as one unsigned integer (fits a numpy uint64)."""
    return int("".join("1" if bit else "0" for bit in h.hash.flatten()), 2)


def _inspect(path: str, label: int, split: str, view_size: int) -> tuple[ImageRecord, Image.Image | None]:
    """Decode one file once and measure everything; never raises for a bad file."""
    record = ImageRecord(path=path, label=label, split=split)
    try:
        image = open_rgb(path)
    except ImageError as exc:
        record.reason = exc.reason
        return record, None
    try:
        record.format, record.mode, record.orientation, record.has_alpha = _header(path)
    except (OSError, ValueError, SyntaxError):
        # The pixels decoded, so only the metadata is damaged: keep the image, note nothing about its mode.
        pass
    record.width, record.height = image.size
    # Same decoded pixels -> same hash, whatever the file encoding or metadata.
    record.pixel_hash = hashlib.blake2b(
        f"{image.size}".encode() + image.tobytes(), digest_size=16
    ).hexdigest()
    small = image.copy()
    small.thumbnail((SMALL_SIZE, SMALL_SIZE), Image.Resampling.BILINEAR)
    record.phash = _hash_int(imagehash.phash(small))
    record.dhash = _hash_int(imagehash.dhash(small))
    # A mirrored copy has a different pHash; hashing the mirror too lets candidates match either way round.
    record.phash_flip = _hash_int(imagehash.phash(ImageOps.mirror(small)))
    record.pixels = np.asarray(small.resize((PIXEL_SIZE, PIXEL_SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)
    rgb = np.asarray(small, dtype=np.int16)
    luma = np.asarray(small.convert("L"), dtype=np.float32)
    record.luma_mean = float(luma.mean())
    record.luma_std = float(luma.std())
    record.dominant_fraction = float(np.bincount((luma // 16).astype(np.int64).ravel(), minlength=16).max()
                                     / luma.size)
    spread = np.abs(rgb[..., 0] - rgb[..., 1]).max() + np.abs(rgb[..., 1] - rgb[..., 2]).max()
    record.colourless = bool(spread <= 4)
    view = None
    if view_size:
        view = ImageOps.fit(image, (view_size, view_size), Image.Resampling.BILINEAR)
    return record, view


def scan(
    entries: Iterable[tuple[str, int, str]],
    feature_fn: FeatureFn | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    chunk: int = 64,
    view_size: int | None = None,
) -> tuple[list[ImageRecord], np.ndarray | None]:
    """Inspect (path, label, split) entries; with `feature_fn`, also features of readable images (rows
    in record order, NaN rows for unreadable files) from `view_size` square centre crops (default: the
    function's `input_size`, else VIEW_SIZE). Views are fed in chunks so memory stays bounded."""
    entries = list(entries)
    view_size = view_size or getattr(feature_fn, "input_size", VIEW_SIZE)
    workers = workers or min(8, os.cpu_count() or 1)
    records: list[ImageRecord] = []
    feature_rows: list[np.ndarray] = []
    feature_dim = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(entries), chunk):
            part = entries[start:start + chunk]
            results = list(pool.map(lambda e: _inspect(*e, view_size=view_size if feature_fn else 0), part))
            records.extend(r for r, _ in results)
            if feature_fn is not None:
                views = [v for _, v in results if v is not None]
                feats = np.asarray(feature_fn(views), dtype=np.float32) if views else np.zeros((0, 0))
                feature_dim = feature_dim or (feats.shape[1] if feats.size else 0)
                it = iter(feats)
                for _, view in results:
                    feature_rows.append(next(it) if view is not None else None)
            if progress is not None:
                done = min(start + chunk, len(entries))
                progress(done / max(len(entries), 1), f"read {done}/{len(entries)} images")
    if feature_fn is None:
        return records, None
    features = np.full((len(records), max(feature_dim, 1)), np.nan, dtype=np.float32)
    for i, row in enumerate(feature_rows):
        if row is not None:
            features[i] = row
    return records, features
