"""Run a frozen prefix of the model once per image and keep its outputs, so training touches only the suffix.

The cache fills lazily, so the first batch trains as soon as its own images are ready: epoch 1 runs the
prefix over the shuffled training images (view 0 = eval transform), stores each output and trains the
suffix on it at once; validation is stored at the first validation. Each later epoch adds one augmented
view until `num_views` are stored, then epochs only read the cache (a random stored view per item).
The memory cap is checked before the first batch; over it, the prefix simply runs on every batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from ftui import devices
from ftui.models.fusing import fuse_for_inference
from ftui.train.distributed import IGNORE, Dist

# Above this many float32 bytes the cache is stored as float16 (half the memory, ample precision for features).
FLOAT16_ABOVE_BYTES = 256 * 1024 * 1024

# (view, order) -> (images, labels) batches following `order` in chunks of the batch size; view 0 is the
# eval transform, views >= 1 are augmented.
ImageBatches = Callable[[int, torch.Tensor], Iterator[tuple[torch.Tensor, torch.Tensor]]]


class CacheStopped(Exception):
    """The stop event fired while features were being computed."""


class PrefixRunner:
    """The frozen prefix in eval mode without gradients (BatchNorm folded), with the run's memory format and
    autocast. The prefix must stay frozen while the runner is in use: it runs a fused copy."""

    def __init__(self, prefix: nn.Module, device: torch.device, amp: bool = False, channels_last: bool = False):
        self.prefix, self.device, self.amp, self.channels_last = prefix, device, amp, channels_last
        self.fast = fuse_for_inference(prefix)
        if channels_last:
            self.fast = self.fast.to(memory_format=torch.channels_last)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.fast.training
        self.fast.eval()
        try:
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            # no_grad, not inference_mode: the outputs feed a suffix that is trained with autograd.
            with torch.no_grad(), devices.autocast(self.device, self.amp):
                return self.fast(x).float()
        finally:
            self.fast.train(was_training)

    def output_shape(self, image_size: int) -> tuple[int, ...]:
        """Shape of one item's output, from a single blank image (decides the cap before any batch)."""
        x = torch.zeros(1, 3, image_size, image_size, device=self.device)
        return tuple(self(x).shape[1:])


# On CUDA the store lives on the GPU when it takes at most this share of the free memory there.
GPU_STORE_SHARE = 0.25


class FeatureStore:
    """`rows` slots of prefix outputs, allocated up front if they fit in `max_bytes`: on the GPU when `device`
    is CUDA and they fit in a share of its free memory (no copies per batch), else on the CPU."""

    def __init__(self, rows: int, item_shape: tuple[int, ...], max_bytes: int, device: torch.device | None = None):
        per_item = 4
        for d in item_shape:
            per_item *= int(d)
        self.planned_bytes = per_item * rows
        self.over_cap = self.planned_bytes > max_bytes
        self.data: torch.Tensor | None = None
        if not self.over_cap:
            dtype = torch.float16 if self.planned_bytes > FLOAT16_ABOVE_BYTES else torch.float32
            where = torch.device("cpu")
            if device is not None and device.type == "cuda":
                free = torch.cuda.mem_get_info(device)[0]
                if self.planned_bytes * torch.finfo(dtype).bits // 32 <= GPU_STORE_SHARE * free:
                    where = device
            self.data = torch.empty((rows, *item_shape), dtype=dtype, device=where)

    @property
    def device(self) -> torch.device | None:
        return None if self.data is None else self.data.device

    @property
    def nbytes(self) -> int:
        return 0 if self.data is None else self.data.numel() * self.data.element_size()

    def put(self, rows: torch.Tensor, out: torch.Tensor) -> None:
        if self.data is not None:
            self.data[rows.to(self.data.device)] = out.detach().to(self.data.device, self.data.dtype)

    def get(self, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
        assert self.data is not None
        return self.data[rows.to(self.data.device)].to(device=device, dtype=torch.float32, non_blocking=True)


class CachedTrainFeatures:
    """Training batches of prefix outputs; each epoch computes (and stores) one more view until all are in.

    With `dist` (several processes) every global batch is split over the ranks: a rank computes its share's
    outputs, all ranks store everyone's (all-gather), and a rank trains on its share, padding labelled IGNORE.
    """

    def __init__(self, runner: PrefixRunner, store: FeatureStore, images: ImageBatches, num_items: int,
                 num_views: int, batch_size: int, generator: torch.Generator | None, dist: Dist | None = None):
        self.runner, self.store, self.images = runner, store, images
        self.num_items, self.num_views, self.batch_size = num_items, num_views, batch_size
        self.generator, self.device = generator, runner.device
        self.dist = dist or Dist.single()
        self.labels = torch.zeros(num_items, dtype=torch.long)
        self.views_stored = 0

    def num_batches(self, batch_size: int) -> int:
        return (self.num_items + batch_size - 1) // batch_size

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(self.num_items, generator=self.generator)
        if self.store.over_cap:
            # Nothing is kept: the prefix runs on augmented images each epoch, like the full model would.
            for x, y, _ in _computed(self, 1, order):
                yield x, y
            return
        if self.views_stored < self.num_views:
            view = self.views_stored
            for out, y, (idx, all_out, all_y) in _computed(self, view, order, gather=True):
                self.store.put(view * self.num_items + idx, all_out)
                if view == 0:
                    self.labels[idx] = all_y.cpu()
                yield out, y
            self.views_stored += 1
            return
        if self.num_views > 1:
            views = torch.randint(0, self.num_views, (self.num_items,), generator=self.generator)
        else:
            views = torch.zeros(self.num_items, dtype=torch.long)
        for idx, pad in self.dist.shard_order(order, self.batch_size):
            rows = views[idx] * self.num_items + idx
            y = self.labels[idx].masked_fill(pad, IGNORE)
            yield self.store.get(rows, self.device), y.to(self.device, non_blocking=True)


class CachedValFeatures:
    """Validation batches of prefix outputs: computed and stored at the first validation, then read."""

    def __init__(self, runner: PrefixRunner, store: FeatureStore, images: ImageBatches, num_items: int,
                 batch_size: int, row_offset: int, dist: Dist | None = None):
        self.runner, self.store, self.images = runner, store, images
        self.num_items, self.batch_size, self.device, self.row_offset = num_items, batch_size, runner.device, row_offset
        self.dist = dist or Dist.single()
        self.labels = torch.zeros(num_items, dtype=torch.long)
        self.stored = False

    def num_batches(self, batch_size: int) -> int:
        return (self.num_items + batch_size - 1) // batch_size

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.arange(self.num_items)
        if self.stored:
            for idx, pad in self.dist.shard_order(order, self.batch_size):
                y = self.labels[idx].masked_fill(pad, IGNORE)
                yield self.store.get(idx + self.row_offset, self.device), y.to(self.device)
            return
        for out, y, (idx, all_out, all_y) in _computed(self, 0, order, gather=True):
            self.store.put(idx + self.row_offset, all_out)
            self.labels[idx] = all_y.cpu()
            yield out, y
        self.stored = not self.store.over_cap


def _computed(source, view: int, order: torch.Tensor, gather: bool = False):
    """(prefix outputs, labels with padding as IGNORE, everyone's (indices, outputs, labels)) for this
    rank's share of each global batch of `order`; the last item is None unless `gather`."""
    parts = list(source.dist.shard_order(order, source.batch_size))
    local = torch.cat([idx for idx, _ in parts]) if parts else order
    for (x, y), (idx, pad) in zip(source.images(view, local), parts):
        out = source.runner(x)
        everyone = None
        if gather:
            everyone = (source.dist.gather(idx), source.dist.gather(out), source.dist.gather(y))
        yield out, y.masked_fill(pad.to(y.device), IGNORE), everyone
