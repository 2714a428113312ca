"""The GPU data path: every file decoded once (threads on all cores), its uint8 pixels kept on the device
when they fit (else in pinned host memory, copied without blocking), batches augmented there in one go
(ftui/data/batchaug.py), the next batch prepared on a side stream while the current one trains.

Works on any device (tests run it on CPU tensors); the engine uses it on CUDA, where per-image CPU
augmentation cannot keep up with the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from ftui import devices
from ftui.data.batchaug import BatchAugment
from ftui.data.imagecache import DecodedImageCache

# At most this share of the device's free memory holds decoded images; the rest is the model's.
DEVICE_SHARE = 0.25
# Decoded images are resize_size on the shorter side; the longer side averages about this multiple.
MEAN_ASPECT = 1.4


def planned_bytes(num_images: int, resize_size: int) -> int:
    """Rough memory of `num_images` decoded uint8 images (3 channels, shorter side resize_size)."""
    return int(num_images * 3 * resize_size * resize_size * MEAN_ASPECT)


def placement(device: torch.device, planned: int, free: int | None) -> str:
    """Where decoded images live: "device" (fits in DEVICE_SHARE of free memory), "pinned" (CUDA, too big) or
    "host" (a CPU run: the pixels are already where the model is)."""
    if device.type != "cuda":
        return "host"
    return "device" if free is not None and planned <= DEVICE_SHARE * free else "pinned"


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (None elsewhere)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


class DeviceImageStore:
    """uint8 CHW images by path, decoded once by `cache` and kept where `where` says (see `placement`)."""

    def __init__(self, cache: DecodedImageCache, device: torch.device, where: str) -> None:
        self.cache, self.device, self.where = cache, device, where
        self._kept: dict[str, torch.Tensor] = {}

    def prefetch(self, paths: Sequence[str]) -> None:
        """Start decoding these files in the background, in this order."""
        self.cache.prefetch([p for p in paths if p not in self._kept], workers=devices.decode_workers())

    def get(self, path: str) -> torch.Tensor:
        """The image on the device (a non-blocking copy from pinned memory when it is kept on the host)."""
        kept = self._kept.get(path)
        if kept is None:
            image = self.cache.get(path)
            if self.where == "device":
                kept = image.to(self.device, non_blocking=True)
            elif self.where == "pinned":
                kept = image.pin_memory()
            else:
                kept = image
            self._kept[path] = kept
            # The cache's own copy is no longer needed: keep the pixels once.
            self.cache.forget(path)
        return kept.to(self.device, non_blocking=True) if self.where == "pinned" else kept

    @property
    def nbytes(self) -> int:
        return sum(t.numel() for t in self._kept.values())

    def close(self) -> None:
        self.cache.close()
        self._kept.clear()


class DeviceBatches:
    """(images, labels) batches of one split, made on the device in a given order.

    `augmented=True` applies the training pipeline with per-sample random parameters drawn from this
    object's generator (seeded: a run is repeatable); otherwise the eval pipeline.
    """

    def __init__(self, store: DeviceImageStore, samples: Sequence[tuple[str, int]], pipeline: BatchAugment,
                 batch_size: int, seed: int = 0) -> None:
        self.store, self.pipeline, self.batch_size = store, pipeline, int(batch_size)
        self.paths = [str(p) for p, _ in samples]
        self.labels = torch.tensor([int(label) for _, label in samples], dtype=torch.long).to(store.device)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def num_batches(self, batch_size: int | None = None) -> int:
        size = batch_size or self.batch_size
        return (len(self) + size - 1) // size

    def _make(self, indices: list[int], augmented: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images = [self.store.get(self.paths[i]) for i in indices]
        x = self.pipeline(images, self.generator) if augmented else self.pipeline.eval_batch(images)
        index = torch.tensor(indices, dtype=torch.long).to(self.store.device, non_blocking=True)
        return x, self.labels[index]

    def __call__(self, order: torch.Tensor, augmented: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = [int(i) for i in order.tolist()]
        self.store.prefetch([self.paths[i] for i in indices])
        chunks = (indices[s:s + self.batch_size] for s in range(0, len(indices), self.batch_size))
        return run_ahead(((lambda c=c: self._make(c, augmented)) for c in chunks), self.store.device)


def run_ahead(makers: Iterator[Callable[[], Any]], device: torch.device | None = None) -> Iterator[Any]:
    """Call each maker one step ahead of the consumer; on CUDA the next batch's kernels (copies,
    augmentation) go to a side stream, so they overlap with the current batch's training."""
    device = device or (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None)
    if device is None or device.type != "cuda":
        for make in makers:
            yield make()
        return
    side, main = torch.cuda.Stream(device), torch.cuda.current_stream(device)

    def produce():
        make = next(makers, None)
        if make is None:
            return None
        side.wait_stream(main)  # inputs written on the main stream (e.g. images just copied) are ready
        with torch.cuda.stream(side):
            return make()

    upcoming = produce()
    while upcoming is not None:
        main.wait_stream(side)
        for t in upcoming if isinstance(upcoming, tuple) else (upcoming,):
            if isinstance(t, torch.Tensor):
                t.record_stream(main)  # the allocator must not hand this memory back to the side stream early
        current, upcoming = upcoming, produce()
        yield current


def make_store(device: torch.device, num_images: int, resize_size: int) -> DeviceImageStore:
    """A store for `num_images` decoded at `resize_size`, placed by `placement` (device, pinned or host)."""
    where = placement(device, planned_bytes(num_images, resize_size), free_device_memory(device))
    return DeviceImageStore(DecodedImageCache(resize_size, lazy=True), device, where)


class GpuImageBatches:
    """The trainer's image-batch interface (`batches(view, order)`, `len`) over the GPU data path: view 0 is
    the eval pipeline, any other view the augmented one (fresh per-sample parameters on every call)."""

    def __init__(self, store: DeviceImageStore, items: Sequence[Any], pipeline: BatchAugment, batch_size: int,
                 seed: int = 0) -> None:
        pairs = [(str(it.path), int(it.label)) for it in items]
        self.source = DeviceBatches(store, pairs, pipeline, batch_size, seed)

    @property
    def batch_size(self) -> int:
        return self.source.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.source.batch_size = int(value)

    def __len__(self) -> int:
        return len(self.source)

    def __call__(self, view: int, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.source(order, augmented=view >= 1)
