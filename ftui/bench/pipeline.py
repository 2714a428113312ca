"""The data pipeline's speed alone (no model): decoding once into the cache, then augmenting every epoch.

Used by `python -m ftui bench` to show whether the model or the data pipeline limits training.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from ftui.config import AugConfig
from ftui.data.augment import default_resize_size, eval_transform, train_transform
from ftui.data.imagecache import DecodedImageCache, ImageTensorDataset, path_of


@dataclass
class PipelineSpeed:
    """Throughput of the data pipeline alone (no model): decoding once, then augmenting every epoch."""

    images: int
    decode_seconds: float
    train_epochs: int
    train_seconds: float
    eval_seconds: float
    cache_mb: float

    @property
    def decode_images_per_s(self) -> float:
        return self.images / self.decode_seconds if self.decode_seconds else float("inf")

    @property
    def train_images_per_s(self) -> float:
        return self.images * self.train_epochs / self.train_seconds if self.train_seconds else float("inf")

    @property
    def eval_images_per_s(self) -> float:
        return self.images / self.eval_seconds if self.eval_seconds else float("inf")

    def as_row(self) -> dict[str, float]:
        """One row for a bench table."""
        return {"images": self.images, "decode img/s": round(self.decode_images_per_s, 1),
                "train aug img/s": round(self.train_images_per_s, 1),
                "eval img/s": round(self.eval_images_per_s, 1), "cache MB": round(self.cache_mb, 1)}


def measure_pipeline(
    items: Sequence[Any],
    aug: Any = None,
    size: int = 224,
    resize_size: int | None = None,
    batch_size: int = 32,
    epochs: int = 2,
    workers: int | None = None,
    num_workers: int = 0,
) -> PipelineSpeed:
    """Time the data pipeline alone: build the cache once, then `epochs` augmented passes and one eval pass."""
    aug = aug if aug is not None else AugConfig()
    resize_size = resize_size or default_resize_size(size)
    start = time.perf_counter()
    cache = DecodedImageCache.build(items, resize_size, workers=workers)
    decode_seconds = time.perf_counter() - start
    pairs = [(p, 0) if isinstance(it, (str, Path)) else it for it in items for p in [path_of(it)]]

    def timed_pass(transform, shuffle: bool) -> float:
        loader = DataLoader(ImageTensorDataset(cache, pairs, transform), batch_size=batch_size,
                            shuffle=shuffle, num_workers=num_workers)
        begin = time.perf_counter()
        for _batch in loader:
            pass
        return time.perf_counter() - begin

    train_tf = train_transform(aug, size, resize_size=resize_size)
    train_seconds = sum(timed_pass(train_tf, True) for _ in range(epochs))
    eval_seconds = timed_pass(eval_transform(size, resize_size), False)
    return PipelineSpeed(images=len(cache), decode_seconds=decode_seconds, train_epochs=epochs,
                         train_seconds=train_seconds, eval_seconds=eval_seconds, cache_mb=cache.nbytes / 2**20)
