"""Run a frozen prefix of the model once per image and keep its outputs, so training touches only the suffix.

Head-only training on a frozen backbone then costs one inference pass over train+val plus milliseconds.
View 0 of each training image uses the eval transform; further views are augmented copies.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

# Above this many float32 bytes the cache is stored as float16 (half the memory, ample precision for features).
FLOAT16_ABOVE_BYTES = 256 * 1024 * 1024


class CacheStopped(Exception):
    """The stop event fired while features were being computed."""


@dataclass
class FeatureSet:
    """Cached prefix outputs: `views[v, i]` is view v of item i; `labels[i]` its label."""

    views: torch.Tensor
    labels: torch.Tensor

    @property
    def num_items(self) -> int:
        return int(self.labels.shape[0])

    @property
    def nbytes(self) -> int:
        return self.views.numel() * self.views.element_size()

    def batches(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None,
        shuffle: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(features, labels) batches on `device`; a random view per item when shuffling with several views."""
        n = self.num_items
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        num_views = self.views.shape[0]
        if shuffle and num_views > 1:
            view_idx = torch.randint(0, num_views, (n,), generator=generator)
        else:
            view_idx = torch.zeros(n, dtype=torch.long)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = self.views[view_idx[idx], idx].to(device=device, dtype=torch.float32)
            yield x, self.labels[idx].to(device)

    def num_batches(self, batch_size: int) -> int:
        return (self.num_items + batch_size - 1) // batch_size


ProgressFn = Callable[[int, int], None]


@torch.inference_mode()
def compute_features(
    prefix: nn.Module,
    datasets: list[Dataset],
    batch_size: int,
    device: torch.device,
    max_bytes: int,
    stop_event: threading.Event | None = None,
    progress: ProgressFn | None = None,
) -> FeatureSet | None:
    """Prefix outputs for each dataset (one per view, same items in the same order) or None over `max_bytes`.

    Every dataset yields (image tensor, label). The prefix runs in eval mode without gradients.
    """
    was_training = prefix.training
    prefix.eval()
    try:
        n = len(datasets[0])
        total = n * len(datasets)
        store: torch.Tensor | None = None
        labels = torch.empty(n, dtype=torch.long)
        done = 0
        for v, ds in enumerate(datasets):
            loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
            offset = 0
            for x, y in loader:
                if stop_event is not None and stop_event.is_set():
                    raise CacheStopped()
                out = prefix(x.to(device)).float().cpu()
                if store is None:
                    per_item = out[0].numel() * 4
                    if per_item * total > max_bytes:
                        return None
                    dtype = torch.float16 if per_item * total > FLOAT16_ABOVE_BYTES else torch.float32
                    store = torch.empty((len(datasets), n, *out.shape[1:]), dtype=dtype)
                store[v, offset:offset + len(out)] = out.to(store.dtype)
                if v == 0:
                    labels[offset:offset + len(out)] = y
                offset += len(out)
                done += len(out)
                if progress is not None:
                    progress(done, total)
        if store is None:
            return None
        return FeatureSet(views=store, labels=labels)
    finally:
        prefix.train(was_training)
