"""Decoded-image cache: each file is decoded and resized once, then every epoch augments uint8 tensors.

Decoding a JPEG costs far more than augmenting a small tensor, so keeping the decoded, slightly-larger-
than-training-size images in memory keeps the data pipeline ahead of the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset as TorchDataset

from ftui.data.images import ImageError, open_rgb

# The longer side is cropped (centred) to at most this multiple of the shorter side: bounded memory for
# panoramas, no distortion, and the eval center crop never looks that far out anyway.
MAX_ASPECT = 3.0

Progress = Callable[[float, str], None]


def resize_for_cache(image: Image.Image, resize_size: int, max_aspect: float = MAX_ASPECT) -> torch.Tensor:
    """Shorter side to `resize_size` (aspect kept, longer side centre-cropped to max_aspect); uint8 CHW."""
    width, height = image.size
    scale = resize_size / min(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    cap = round(resize_size * max_aspect)
    if new_w > cap or new_h > cap:
        left, top = max(0, (new_w - cap) // 2), max(0, (new_h - cap) // 2)
        image = image.crop((left, top, left + min(new_w, cap), top + min(new_h, cap)))
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def decode_for_cache(path: str | Path, resize_size: int, max_aspect: float = MAX_ASPECT) -> torch.Tensor:
    """Decode one file (JPEGs at a reduced scale still >= resize_size) and resize it for the cache."""
    return resize_for_cache(open_rgb(path, draft_size=resize_size), resize_size, max_aspect)


def path_of(entry: Any) -> str:
    """A path from an Item-like object (has .path), a (path, label) pair or a plain path."""
    if hasattr(entry, "path"):
        return str(entry.path)
    if isinstance(entry, (tuple, list)):
        return str(entry[0])
    return str(entry)


class DecodedImageCache:
    """uint8 CHW tensors of decoded images keyed by path; files that fail to decode are kept in `failed`."""

    def __init__(self, resize_size: int, max_aspect: float = MAX_ASPECT, lazy: bool = False):
        self.resize_size = int(resize_size)
        self.max_aspect = max_aspect
        # lazy: `get` decodes a file on first use (or waits for its `prefetch`), so training can start
        # as soon as its first batch is decoded instead of after the whole dataset.
        self.lazy = lazy
        self._tensors: dict[str, torch.Tensor] = {}
        self._pending: dict[str, Future] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.failed: dict[str, str] = {}

    @classmethod
    def build(cls, items: Iterable[Any], resize_size: int, workers: int | None = None,
              progress: Progress | None = None) -> DecodedImageCache:
        """A cache holding every item (Item, (path, label) or path), decoded in a thread pool."""
        cache = cls(resize_size)
        cache.load(items, workers=workers, progress=progress)
        return cache

    def load(self, items: Iterable[Any], workers: int | None = None, progress: Progress | None = None) -> None:
        """Decode the items not cached yet; `progress(fraction, message)` is called as files finish."""
        paths = list(dict.fromkeys(p for p in map(path_of, items) if p not in self._tensors))
        if not paths:
            if progress:
                progress(1.0, "all images already decoded")
            return
        workers = workers or min(8, 2 * (os.cpu_count() or 1))
        step = max(1, len(paths) // 50)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(decode_for_cache, p, self.resize_size, self.max_aspect): p for p in paths}
            for done, future in enumerate(as_completed(futures), start=1):
                path = futures[future]
                try:
                    self._tensors[path] = future.result()
                except ImageError as exc:
                    # The file changed since it was judged; the dataset built on the cache leaves it out.
                    self.failed[path] = exc.reason
                if progress and (done % step == 0 or done == len(paths)):
                    progress(done / len(paths), f"decoded {done}/{len(paths)} images")

    def prefetch(self, items: Iterable[Any], workers: int | None = None) -> None:
        """Start decoding the items not cached yet in background threads, in the order given."""
        if self._pool is None:
            # Two threads keep ahead of a model on a laptop CPU without taking every core from it.
            self._pool = ThreadPoolExecutor(max_workers=workers or min(2, os.cpu_count() or 1),
                                            thread_name_prefix="ftui-decode")
        for path in map(path_of, items):
            if path not in self._tensors and path not in self._pending and path not in self.failed:
                self._pending[path] = self._pool.submit(decode_for_cache, path, self.resize_size, self.max_aspect)

    def close(self) -> None:
        """Stop background decoding (queued files are dropped, running ones finish)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()

    def get(self, path: str | Path) -> torch.Tensor:
        """The cached uint8 CHW tensor of a file (a lazy cache decodes it now or waits for its prefetch)."""
        key = str(path)
        tensor = self._tensors.get(key)
        if tensor is not None:
            return tensor
        future = self._pending.pop(key, None)
        if future is None and not self.lazy or key in self.failed:
            reason = self.failed.get(key, "not loaded into the cache")
            raise KeyError(f"{path}: {reason}") from None
        try:
            tensor = future.result() if future is not None else decode_for_cache(
                key, self.resize_size, self.max_aspect)
        except ImageError as exc:
            self.failed[key] = exc.reason
            raise
        self._tensors[key] = tensor
        return tensor

    def forget(self, path: str | Path) -> None:
        """Drop a decoded image (its new owner keeps the pixels elsewhere, e.g. on the GPU)."""
        self._tensors.pop(str(path), None)

    def __contains__(self, path: object) -> bool:
        return str(path) in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    @property
    def nbytes(self) -> int:
        """Memory held by the cached pixels."""
        return sum(t.numel() for t in self._tensors.values())


class ImageTensorDataset(TorchDataset):
    """(transform(cached tensor), label) for each item whose image is in the cache."""

    def __init__(self, cache: DecodedImageCache, items: Sequence[Any],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.cache = cache
        self.transform = transform
        pairs = [(path_of(it), int(it.label if hasattr(it, "label") else it[1])) for it in items]
        # A lazy cache has not decoded anything yet: every item stays, a broken file fails when read.
        self.samples = [(p, label) for p, label in pairs if cache.lazy or p in cache]
        self.dropped = [p for p, _ in pairs if not cache.lazy and p not in cache]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = self.cache.get(path)
        return (self.transform(image) if self.transform else image), label

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]
