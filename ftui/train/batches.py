"""Where the trainer's batches come from: `ImageData` (a scanned Dataset) or `TensorData` (tensors in memory).

Both answer `prepare(trainer)` (heavy setup, inside the trainer's error handling), `sources(trainer, phase)`
-> (module to train, train batches, val batches), `meta` (what a checkpoint records), `num_train`,
`num_val`, `train_class_counts()` and `close()`. A source has `batches()` and `num_batches(batch_size)`.

ImageData decodes images on demand by background threads in the order the loop will ask for them (the
first batch trains within moments), and when a phase's frozen part is a prefix of the model it runs that
prefix once per image (ftui/train/featurecache.py) so only the suffix trains.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ftui import devices
from ftui.config import TrainConfig
from ftui.data.images import ImageError as ImageFileError
from ftui.errors import FtuiError
from ftui.train.distributed import IGNORE
from ftui.train.featurecache import CachedTrainFeatures, CachedValFeatures, FeatureStore, PrefixRunner

__all__ = ["IGNORE"]  # re-exported: the engine and tests name the padding label through this module


class DataError(FtuiError):
    """The data cannot train: an empty split, or a file that went away after the scan."""


def transform_settings(config: TrainConfig) -> dict[str, Any]:
    """image_size, resize_size, mean, std for this run (the backbone's own unless image_size overrides)."""
    from ftui.models.backbones import backbone_info

    info = backbone_info(config.backbone)
    size = config.image_size or info.input_size
    resize = info.resize_size if size == info.input_size else round(size * info.resize_size / info.input_size)
    return {"image_size": int(size), "resize_size": int(max(resize, size)),
            "mean": [float(m) for m in info.mean], "std": [float(s) for s in info.std]}


class SpeedSettings:
    """The run's device, memory format, precision and micro-batch, decided once per fit."""

    def __init__(self, device: torch.device, model: nn.Module, config: TrainConfig) -> None:
        self.device = device
        # Inference (validation, feature caching) uses autocast wherever it is faster; training on CPU stays
        # float32 (bf16 training measured no faster there, and fine-tuning accuracy is safer in float32).
        self.infer_amp = devices.amp_enabled(device, config.mixed_precision)
        self.use_amp = self.infer_amp and device.type == "cuda"
        # Validation (and the cached val features it reads) runs at the precision `evaluate` and Predict use
        # for the kept model: autocast on CUDA, float32 on CPU. Validating in bf16 on CPU while evaluating in
        # float32 gave one model two accuracies (0.7038 reported, 0.707 evaluated, clothing_small head-only).
        self.val_amp = self.use_amp
        self.channels_last = device.type in ("cpu", "cuda") and devices.use_channels_last(model, device)
        # A config written on a bigger machine still runs here: never more loader processes than cores.
        cores = os.cpu_count() or 1
        self.num_workers = min(config.num_workers, cores)
        self.clamped_workers = config.num_workers if config.num_workers > cores else None
        self.batch_size = config.batch_size
        # CUDA: decoded images kept on the GPU and whole batches augmented there (ftui/data/gpudata.py).
        self.gpu_data = device.type == "cuda"
        self.compile = config.compile
        self.world_size = 1
        micro = devices.micro_batch_size(device, config.batch_size)
        # Splitting a batch changes what BatchNorm sees when it updates statistics: only split when frozen.
        self.micro_batch = micro if config.bn_mode == "frozen" else config.batch_size

    def describe(self) -> str:
        """One note line: what the run does for speed."""
        parts = [f"device {self.device.type}", f"{torch.get_num_threads()} threads"]
        parts.append("channels_last" if self.channels_last else "contiguous memory")
        if self.use_amp:
            parts.append(f"{devices.amp_dtype(self.device)} autocast")
        elif self.infer_amp:
            parts.append(f"{devices.amp_dtype(self.device)} autocast for inference, float32 training")
        if self.micro_batch < self.batch_size:
            parts.append(f"micro-batch {self.micro_batch} x {-(-self.batch_size // self.micro_batch)} "
                         f"accumulated to batch {self.batch_size}")
        if self.gpu_data:
            parts.append("images decoded once and augmented on the GPU")
        if self.compile:
            parts.append("torch.compile")
        if self.world_size > 1:
            parts.append(f"DistributedDataParallel over {self.world_size} processes")
        if self.clamped_workers is not None:
            parts.append(f"{self.num_workers} loader processes (the config asks {self.clamped_workers}; "
                         f"this machine has {self.num_workers} cores)")
        return "speed: " + ", ".join(parts)


# --- images ----------------------------------------------------------------------------------------

class ImageData:
    """A scanned Dataset: decoded-image cache, train/eval transforms, and per-phase batch sources."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.cache = None
        self.meta: dict[str, Any] | None = None

    def prepare(self, trainer) -> None:
        from ftui.data.augment import eval_transform, train_transform
        from ftui.data.imagecache import DecodedImageCache

        config = trainer.config
        settings = transform_settings(config)
        classes = list(self.dataset.classes)
        self.meta = {"classes": classes, "backbone": config.backbone, "num_classes": len(classes), **settings}
        self.image_size = settings["image_size"]
        self.train_items = list(self.dataset.split("train"))
        self.val_items = list(self.dataset.split("val"))
        if not self.train_items:
            raise DataError("the dataset has no training images: add images or lower val_fraction")
        if not self.val_items:
            raise DataError("the dataset has no validation images: add images or raise val_fraction")
        self.targets = self._target_rows()
        size, resize = settings["image_size"], settings["resize_size"]
        mean, std = tuple(settings["mean"]), tuple(settings["std"])
        self.eval_tf = eval_transform(size, resize, mean, std)
        self.train_tf = train_transform(config.aug, size, mean, std, resize_size=resize)
        # Lazy: nothing is decoded before training starts; batches decode (ahead, in threads) what they need.
        self.cache = DecodedImageCache(resize, lazy=True)
        self.store = self.gpu_pipeline = None
        if trainer.speed.gpu_data:
            from ftui.data import gpudata
            from ftui.data.batchaug import BatchAugment

            self.store = gpudata.make_store(trainer.speed.device, self.num_train + self.num_val, resize)
            self.gpu_pipeline = BatchAugment(config.aug, size, mean, std, resize)

    def _target_rows(self) -> torch.Tensor | None:
        """Multilabel / regression: every train then val item's target as a table row, and each item's label
        replaced by its row (batches then carry row indices: ftui/train/tasks.py). None for classification."""
        from dataclasses import replace

        from ftui.train.tasks import target_meta

        kind = getattr(self.dataset, "task", "classification")
        if kind == "classification":
            return None
        rows = self.train_items + self.val_items
        table = torch.tensor([item.target for item in rows], dtype=torch.float32)
        self.train_items = [replace(item, label=i) for i, item in enumerate(self.train_items)]
        n = len(self.train_items)
        self.val_items = [replace(item, label=n + i) for i, item in enumerate(self.val_items)]
        self.meta.update(target_meta(kind, table[:n]), num_train=n)
        return table

    @property
    def num_train(self) -> int:
        return len(self.train_items)

    @property
    def num_val(self) -> int:
        return len(self.val_items)

    def train_class_counts(self) -> list[int]:
        return list(self.dataset.class_counts("train"))

    def view(self, items, augmented: bool):
        from ftui.data.imagecache import ImageTensorDataset

        return ImageTensorDataset(self.cache, items, self.train_tf if augmented else self.eval_tf)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        if getattr(self, "store", None) is not None:
            self.store.close()

    def images(self, split: str, speed: SpeedSettings, seed: int):
        """A split's image batches: through the GPU data path on CUDA, the CPU pipeline elsewhere."""
        if self.store is None:
            return ImageBatches(self, split, speed)
        from ftui.data.gpudata import GpuImageBatches

        items = self.val_items if split == "val" else self.train_items
        return _ReadErrors(GpuImageBatches(self.store, items, self.gpu_pipeline, speed.batch_size, seed))

    def sources(self, trainer, phase):
        """(module to train, train batches, val batches): the suffix on cached features when possible."""
        config, speed, notes = trainer.config, trainer.speed, trainer.notes
        # The trainer reseeds the shuffle generator every epoch from (seed, phase, epoch): nothing replays.
        generator = torch.Generator().manual_seed(config.seed)
        train_images = self.images("train", speed, config.seed + trainer.phase_index + 1)
        val_images = self.images("val", speed, config.seed)
        dist = trainer.dist if trainer.dist.enabled else None
        full = (trainer.model, ImageSource(train_images, config.batch_size, generator, dist, fill_last=speed.gpu_data),
                ImageSource(val_images, config.batch_size, None, dist))
        if not config.feature_cache:
            return full
        split = _split_frozen_prefix(trainer.model, config.backbone, trainer.groups, set(phase.trainable))
        if split is None:
            notes.append(f"phase {phase.name}: no frozen prefix to cache, training the full model")
            return full
        prefix, suffix = split
        runner = PrefixRunner(prefix, speed.device, speed.infer_amp, speed.channels_last)
        views, n_train, n_val = config.feature_cache_views, self.num_train, self.num_val
        # On CUDA the store lives on the GPU when it fits there (no copies per batch).
        store = FeatureStore(n_train * views + n_val, runner.output_shape(self.image_size),
                             config.feature_cache_max_mb * 1024 * 1024, speed.device)
        if store.over_cap:
            notes.append(f"phase {phase.name}: feature cache would need {store.planned_bytes / 2**20:.0f} MB, "
                         f"over {config.feature_cache_max_mb} MB, training the full model instead")
        else:
            seen = ("the unaugmented images: augmentation does not reach this phase (feature_cache_views > 1 "
                    "adds augmented views)") if views == 1 else f"the unaugmented image and {views - 1} augmented views"
            notes.append(f"phase {phase.name}: cached frozen-prefix features ({store.nbytes / 1e6:.1f} MB, filled "
                         f"as training goes) of {seen}")
        # Over the cap nothing is stored and the prefix runs on every batch: the full model's computation.
        # With several processes each rank computes its share of a batch's features and all ranks store all
        # of them, so later epochs can hand any rank any item.
        train = CachedTrainFeatures(runner, store, train_images, n_train, views, config.batch_size, generator, dist)
        val_runner = runner if speed.val_amp == speed.infer_amp else PrefixRunner(
            prefix, speed.device, speed.val_amp, speed.channels_last)
        val = CachedValFeatures(val_runner, store, val_images, n_val, config.batch_size, row_offset=n_train * views,
                                dist=dist)
        return suffix, train, val


def _split_frozen_prefix(model, name, groups, trainable: set[str]):
    """(prefix, suffix) where the prefix is the frozen groups before the first trainable one, else None."""
    from ftui.models.backbones import split_model

    first = next(i for i, g in enumerate(groups) if g.name in trainable)
    if first == 0:
        return None
    return split_model(model, name, groups, first)


class _OrderSampler(Sampler):
    """Yields the order set for the next pass (lets a persistent-worker DataLoader follow our shuffles)."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class ImageBatches:
    """(images, labels) batches of one split in a given order, its files decoded ahead in that order."""

    def __init__(self, data: ImageData, split: str, speed: SpeedSettings) -> None:
        self.data, self.split, self.batch_size, self.speed = data, split, speed.batch_size, speed
        items = data.val_items if split == "val" else data.train_items
        self.views = {0: data.view(items, augmented=False)}
        if split == "train":
            self.views[1] = data.view(items, augmented=True)
        self._loaders: dict[int, tuple[DataLoader, _OrderSampler]] = {}

    def __len__(self) -> int:
        return len(self.views[0])

    def __call__(self, view: int, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = self.views[min(view, max(self.views))]
        device = self.speed.device
        try:
            if self.speed.num_workers > 0:
                yield from self._from_workers(view, ds, order)
                return
            indices = order.tolist()
            self.data.cache.prefetch(ds.samples[i][0] for i in indices)
            if self.split == "train":
                # Validation right after: its files decode while the first epoch trains.
                self.data.cache.prefetch(self.data.val_items)
            for start in range(0, len(indices), self.batch_size):
                pairs = [ds[i] for i in indices[start:start + self.batch_size]]
                x = torch.stack([p[0] for p in pairs])
                y = torch.tensor([p[1] for p in pairs], dtype=torch.long)
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        except ImageFileError as exc:
            raise DataError(f"{exc.path} could not be read after the dataset was scanned ({exc.reason}). "
                            "Reload the dataset and start again.") from None

    def _from_workers(self, view: int, ds, order: torch.Tensor):
        """Worker processes (CUDA machines): pinned memory, persistent workers, non-blocking copies."""
        if view not in self._loaders:
            sampler = _OrderSampler()
            loader = DataLoader(ds, batch_size=self.batch_size, sampler=sampler,
                                **devices.loader_options(self.speed.device, self.speed.num_workers))
            self._loaders[view] = (loader, sampler)
        loader, sampler = self._loaders[view]
        sampler.order = order.tolist()
        for x, y in loader:
            yield x.to(self.speed.device, non_blocking=True), y.to(self.speed.device, non_blocking=True)


class ImageSource:
    """Batches of images through the full model (no feature cache): augmented and shuffled for training.

    With `dist` (several processes) each global batch of `batch_size` is split over the ranks: this rank
    yields its equal share, short shares padded with label IGNORE (no loss, no gradient, not counted).
    """

    def __init__(self, images: ImageBatches, batch_size: int, generator: torch.Generator | None, dist=None,
                 fill_last: bool = False):
        # A generator means training: shuffled, augmented view.
        self.images, self.batch_size, self.generator, self.dist = images, batch_size, generator, dist
        # Training on CUDA: the last batch is filled up to batch_size (see fill_last_batch).
        self.fill_last = fill_last
        if dist is not None:
            # The images are fetched per rank: this rank's share of each global batch at a time.
            self.images.batch_size = -(-batch_size // dist.world_size)

    def num_batches(self, batch_size: int) -> int:
        return (len(self.images) + batch_size - 1) // batch_size

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        shuffle = self.generator is not None
        order = torch.randperm(n, generator=self.generator) if shuffle else torch.arange(n)
        if self.dist is None:
            if shuffle and self.fill_last:
                order = fill_last_batch(order, self.batch_size, self.generator)
            return self.images(1 if shuffle else 0, order)
        return self._shard(1 if shuffle else 0, order)

    def _shard(self, view: int, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        parts = list(self.dist.shard_order(order, self.batch_size))
        local = torch.cat([part for part, _ in parts])
        for (x, y), (_, pad) in zip(self.images(view, local), parts):
            yield x, y.masked_fill(pad.to(y.device), IGNORE)


def fill_last_batch(order: torch.Tensor, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
    """`order` with distinct items of this pass appended (drawn at random) so that every batch is full.

    Why: on CUDA the first step at each new batch shape is slow (cuDNN 9.19 on an H200 built its plans for
    mobilenet_v2 in 12.2 s, docs/gpu.md); a ragged last batch is a second shape every run. A few images
    then train twice in the epoch (under one batch), as DistributedSampler pads. A pass shorter than one
    batch has a single shape already and is left as it is."""
    short = -len(order) % batch_size
    if short == 0 or len(order) < batch_size:
        return order
    extra = torch.randperm(len(order), generator=generator)[:short]
    return torch.cat([order, order[extra]])


class _ReadErrors:
    """The GPU image batches with a file that went away reported like the CPU path does."""

    def __init__(self, images) -> None:
        self.inner = images

    @property
    def batch_size(self) -> int:
        return self.inner.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.inner.batch_size = value

    def __len__(self) -> int:
        return len(self.inner)

    def __call__(self, view: int, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        try:
            yield from self.inner(view, order)
        except ImageFileError as exc:
            raise DataError(f"{exc.path} could not be read after the dataset was scanned ({exc.reason}). "
                            "Reload the dataset and start again.") from None


# --- tensors ---------------------------------------------------------------------------------------

class TensorSource:
    """(x, y) batches from tensors in memory, shuffled when given a generator."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None,
                 device: torch.device) -> None:
        self.x, self.y, self.batch_size, self.generator, self.device = x, y, batch_size, generator, device

    def num_batches(self, batch_size: int) -> int:
        return (len(self.y) + batch_size - 1) // batch_size

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = torch.randperm(n, generator=self.generator) if self.generator is not None else torch.arange(n)
        for idx in order.split(self.batch_size):
            yield self.x[idx].to(self.device), self.y[idx].to(self.device)


class TensorData:
    """Tensors in memory for any module: a synthetic model trains in milliseconds (event tests, checks)."""

    def __init__(self, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 classes: list[str], task: str = "classification") -> None:
        """Classification: y holds class indices. Multilabel / regression: y holds the targets (rows of 0/1
        or values), turned into row indices of the task's target table as ImageData does."""
        self.train, self.val, self.classes, self.task = train, val, list(classes), task
        self.meta: dict[str, Any] | None = None
        self.targets = None

    def prepare(self, trainer) -> None:
        from ftui.train.tasks import target_meta

        if not len(self.train[1]) or not len(self.val[1]):
            raise DataError("TensorData needs training and validation rows")
        self.meta = {"classes": self.classes, "backbone": trainer.config.backbone, "num_classes": len(self.classes)}
        if self.task != "classification":
            n, m = len(self.train[1]), len(self.val[1])
            self.targets = torch.cat([self.train[1], self.val[1]]).float().reshape(n + m, -1)
            self.meta.update(target_meta(self.task, self.targets[:n]), num_train=n)
            self.train = (self.train[0], torch.arange(n))
            self.val = (self.val[0], torch.arange(n, n + m))

    @property
    def num_train(self) -> int:
        return len(self.train[1])

    @property
    def num_val(self) -> int:
        return len(self.val[1])

    def train_class_counts(self) -> list[int]:
        if self.targets is not None:
            return self.targets[: len(self.train[1])].sum(0).long().tolist()
        return torch.bincount(self.train[1], minlength=len(self.classes)).tolist()

    def sources(self, trainer, phase):
        generator = torch.Generator().manual_seed(trainer.config.seed)  # reseeded per epoch by the trainer
        bs, device = trainer.config.batch_size, trainer.speed.device
        return (trainer.model, TensorSource(*self.train, bs, generator, device),
                TensorSource(*self.val, bs, None, device))

    def close(self) -> None:
        pass
