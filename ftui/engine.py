"""The training loop: `fit(config, dataset, model, groups, callbacks, stop_event)` emits events, honours stop.

The loop knows no listener: a live plot, the CSV logger and early stopping are `Callback`s. Phases follow
`config.recipe` ("fine_tune": head first on frozen features, then the chosen groups with discriminative
learning rates; "plain": the chosen groups from the start). When a phase's frozen part is a prefix of the
model, that prefix runs once per image (ftui/featurecache.py) and only the suffix trains.

Speed: images are decoded on demand by background threads in the order the loop will ask for them, so the
first batch trains within moments of Train; on CPU each forward/backward sees at most
`devices.CPU_MAX_MICRO_BATCH` images (gradients accumulate to the user's batch, exact with frozen
BatchNorm); conv nets run channels_last; inference (validation, feature caching) uses bfloat16 autocast on
CPUs with native bf16, training stays float32 there (measured no faster in bf16).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ftui import devices
from ftui.callbacks import Callback, TrainingControl
from ftui.config import TrainConfig
from ftui.featurecache import (
    CachedTrainFeatures,
    CachedValFeatures,
    CacheStopped,
    FeatureStore,
    PrefixRunner,
    fuse_for_inference,
)
from ftui.images import ImageError as ImageFileError
from ftui.runs import RunFolder, save_checkpoint


class EngineError(ValueError):
    """A problem with the data or setup that stops training before or during the loop."""


class _StopRequested(Exception):
    """Internal: the user's stop event fired."""


class _LossNotFinite(Exception):
    """Internal: the loss became NaN or infinite."""


@dataclass
class Phase:
    """A stretch of epochs with one set of trainable groups and their learning-rate scales."""

    name: str
    epochs: int
    trainable: list[str]
    lr_scale: dict[str, float]


@dataclass
class FitResult:
    """How a fit ended."""

    status: str  # done | stopped | failed
    message: str = ""
    best_val_acc: float | None = None
    best_epoch: int | None = None
    epochs_done: int = 0
    seconds: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)


ProgressFn = Callable[[str], None]


# --- planning --------------------------------------------------------------------------------------

def plan_phases(config: TrainConfig, group_names: Sequence[str], trainable: Sequence[str]) -> list[Phase]:
    """Split `config.epochs` into phases; the head-only warm-up of "fine_tune" counts towards the total."""
    trainable = [g for g in group_names if g in set(trainable)]
    only_head = trainable == ["head"]
    if config.recipe == "plain" or only_head:
        name = "head" if only_head else "train"
        return [Phase(name, config.epochs, trainable, {g: 1.0 for g in trainable})]
    # At least one epoch is left for the chosen groups.
    head_epochs = min(config.freeze_epochs, config.epochs - 1)
    phases = []
    if head_epochs > 0:
        phases.append(Phase("head", head_epochs, ["head"], {"head": 1.0}))
    # Once the head is trained, the pretrained body wants gentler steps than a fresh head (LP-FT): Adam-style
    # updates are about lr in size whatever the gradient, so the whole phase runs at a fraction of lr. Measured
    # on hymenoptera (mobilenet_v2, all layers, 5 epochs, AdamW 1e-3): the full rate fell to 0.75 val acc after
    # the first fine-tune epoch; x0.05 peaked at 0.941-0.948; x0.02 at 0.948-0.954; x0.01 held 0.954.
    factor = FINE_TUNE_LR_FACTOR.get(config.optimizer, 1.0) if head_epochs > 0 else 1.0
    scales = {g: s * factor for g, s in discriminative_scales(trainable).items()}
    phases.append(Phase("fine_tune", config.epochs - head_epochs, trainable, scales))
    return phases


# The fine-tune phase's rates as a fraction of lr, per optimizer (SGD's steps scale with the gradient).
FINE_TUNE_LR_FACTOR = {"adam": 0.01, "adamw": 0.01, "sgd": 1.0}

# Earliest trainable group's lr as a fraction of the head's (fastai's fine_tune uses 1/100). 1/10 was
# measured to wreck mobilenet_v2's pretrained features on hymenoptera (val acc 0.54 after one epoch).
EARLIEST_LR_FRACTION = 0.01


def discriminative_scales(trainable: Sequence[str]) -> dict[str, float]:
    """lr/100 for the earliest trainable group rising geometrically to lr for the head (fastai-style)."""
    n = len(trainable)
    if n == 1:
        return {trainable[0]: 1.0}
    low = math.log10(EARLIEST_LR_FRACTION)
    return {g: 10 ** (low * (1 - i / (n - 1))) for i, g in enumerate(trainable)}


def lr_multiplier(config: TrainConfig, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """Per-step lr factor for the scheduler (none/step/cosine/onecycle) with optional linear warm-up."""
    total = max(1, steps_per_epoch * epochs)
    warm = round(config.warmup_epochs * steps_per_epoch)
    kind = config.scheduler

    def factor(step: int) -> float:
        if kind != "onecycle" and warm and step < warm:
            return (step + 1) / warm
        if kind == "none":
            return 1.0
        if kind == "step":
            return config.gamma ** ((step // steps_per_epoch) // config.step_size)
        if kind == "cosine":
            t = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        # onecycle: ramp from lr/25 to lr over the warm-up (default 25% of steps), then cosine to ~0.
        ramp = warm or max(1, int(0.25 * total))
        if step < ramp:
            return 1 / 25 + (1 - 1 / 25) * step / ramp
        t = (step - ramp) / max(1, total - ramp)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return factor


def make_optimizer(config: TrainConfig, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """SGD with momentum, Adam or AdamW over per-group learning rates."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay)


def class_weights(counts: Sequence[int]) -> torch.Tensor:
    """sklearn-style "balanced" weights, total / (classes present * count): rare classes weigh more."""
    counts_t = torch.tensor([float(c) for c in counts])
    present = counts_t > 0
    weights = torch.ones_like(counts_t)
    weights[present] = counts_t[present].sum() / (present.sum() * counts_t[present])
    return weights


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a generator for shuffling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# --- data ------------------------------------------------------------------------------------------

def transform_settings(config: TrainConfig) -> dict[str, Any]:
    """image_size, resize_size, mean, std for this run (the backbone's own unless image_size overrides)."""
    from ftui.backbones import backbone_info

    info = backbone_info(config.backbone)
    size = config.image_size or info.input_size
    resize = info.resize_size if size == info.input_size else round(size * info.resize_size / info.input_size)
    return {"image_size": int(size), "resize_size": int(max(resize, size)),
            "mean": [float(m) for m in info.mean], "std": [float(s) for s in info.std]}


class _Data:
    """Decoded-image cache plus the train/eval datasets built on it."""

    def __init__(self, config: TrainConfig, dataset, settings: dict[str, Any], progress: ProgressFn | None):
        from ftui.augment import eval_transform, train_transform
        from ftui.imagecache import DecodedImageCache, ImageTensorDataset

        self.train_items = list(dataset.split("train"))
        self.val_items = list(dataset.split("val"))
        if not self.train_items:
            raise EngineError("the dataset has no training images: add images or lower val_fraction")
        if not self.val_items:
            raise EngineError("the dataset has no validation images: add images or raise val_fraction")
        size, resize = settings["image_size"], settings["resize_size"]
        mean, std = tuple(settings["mean"]), tuple(settings["std"])
        self.eval_tf = eval_transform(size, resize, mean, std)
        self.train_tf = train_transform(config.aug, size, mean, std, resize_size=resize)
        # Lazy: nothing is decoded before training starts; batches decode (ahead, in threads) what they need.
        self.cache = DecodedImageCache(resize, lazy=True)
        self._make = lambda items, tf: ImageTensorDataset(self.cache, items, tf)

    def train(self, augmented: bool = True):
        return self._make(self.train_items, self.train_tf if augmented else self.eval_tf)

    def val(self):
        return self._make(self.val_items, self.eval_tf)

    def close(self) -> None:
        self.cache.close()


# --- the loop --------------------------------------------------------------------------------------

class _Emitter:
    """Calls one event on every listener, adding the shared control object."""

    def __init__(self, callbacks: Iterable[Callback], control: TrainingControl) -> None:
        self.callbacks = list(callbacks)
        self.control = control

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        payload = {**info, "control": self.control}
        for cb in self.callbacks:
            getattr(cb, event)(payload)


def fit(
    config: TrainConfig,
    dataset,
    model: nn.Module,
    groups: list,
    callbacks: Iterable[Callback] = (),
    stop_event: threading.Event | None = None,
    run_dir: str | Path | None = None,
    control: TrainingControl | None = None,
    progress: ProgressFn | None = None,
) -> FitResult:
    """Train `model` on `dataset` as `config` says; never raises for training failures (see FitResult)."""
    from ftui.freezing import apply_freeze, resolve_train_groups, set_train_mode

    stop_event = stop_event or threading.Event()
    control = control or TrainingControl()
    emit = _Emitter(callbacks, control)
    folder = RunFolder(Path(run_dir)) if run_dir is not None else None
    result = FitResult(status="failed")
    start = time.perf_counter()
    state: dict[str, Any] = {"epoch": 0, "step": 0, "settings": None}

    def note(message: str) -> None:
        if progress is not None:
            progress(message)

    try:
        config.validate()
        seed_everything(config.seed)
        device = devices.pick_device(config.device)
        devices.configure_threads()
        if device.type == "cpu":
            # Denormal floats are 10-100x slower on x86; flushing them to zero changes nothing measurable.
            torch.set_flush_denormal(True)
        # Inference (validation, feature caching) uses autocast wherever it is faster; training on CPU stays
        # float32 (bf16 training measured no faster there, and fine-tuning accuracy is safer in float32).
        infer_amp = devices.amp_enabled(device, config.mixed_precision)
        use_amp = infer_amp and device.type == "cuda"
        channels_last = device.type in ("cpu", "cuda") and devices.use_channels_last(model)
        state["channels_last"] = channels_last
        group_names = [g.name for g in groups]
        chosen = resolve_train_groups(config.train_groups, group_names)
        phases = plan_phases(config, group_names, chosen)
        settings = transform_settings(config)
        state["settings"] = settings
        classes = list(dataset.classes)
        meta_base = {"classes": classes, "backbone": config.backbone, "num_classes": len(classes), **settings}
        state["meta"] = meta_base
        note("loading images")
        data = _Data(config, dataset, settings, progress)
        state["data"] = data
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        speed = _SpeedSettings(device, channels_last, use_amp, infer_amp, config, settings["image_size"])
        result.notes.append(speed.describe(config))
        weight = class_weights(dataset.class_counts("train")).to(device) if config.class_weighted_loss else None
        # Summed, then divided by the whole batch's weight: micro-batches then add up to the batch's mean loss.
        criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing, reduction="sum")
        val_criterion = nn.CrossEntropyLoss(reduction="sum")
        # The first phase's data is ready (feature cache built or declined) before fit_start, so its
        # info says how the run will train.
        apply_freeze(model, groups, set(phases[0].trainable))
        sources = _phase_sources(config, model, groups, phases[0], data, speed, result.notes)
        emit("on_fit_start", {
            "epochs": config.epochs, "device": str(device), "amp": use_amp, "classes": classes,
            "num_train": len(data.train_items), "num_val": len(data.val_items),
            "phases": [{"name": p.name, "epochs": p.epochs, "trainable": p.trainable} for p in phases],
            "config": config.to_dict(), "notes": list(result.notes),
        })
        best = -1.0
        epoch_seconds: list[float] = []
        for index, phase in enumerate(phases):
            trainable = set(phase.trainable)
            if index > 0:
                apply_freeze(model, groups, trainable)
                sources = _phase_sources(config, model, groups, phase, data, speed, result.notes)
            forward, train_source, val_source = sources
            param_groups = _param_groups(groups, phase, config.lr)
            optimizer = make_optimizer(config, param_groups)
            steps_per_epoch = train_source.num_batches(config.batch_size)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lr_multiplier(config, steps_per_epoch, phase.epochs))
            scaler = devices.grad_scaler(device, use_amp)
            for _ in range(phase.epochs):
                state["epoch"] += 1
                epoch = state["epoch"]
                t0 = time.perf_counter()
                set_train_mode(model, groups, trainable, bn_mode=config.bn_mode)
                train_loss, train_acc = _train_epoch(
                    config, forward, train_source, optimizer, scheduler, scaler, criterion, speed,
                    stop_event, control, emit, state, steps_per_epoch, phase, weight)
                val_loss, val_acc = _validate(forward, val_source, val_criterion, device, infer_amp,
                                              channels_last)
                seconds = time.perf_counter() - t0
                epoch_seconds.append(seconds)
                result.epochs_done = epoch
                if folder is not None:
                    meta = {**meta_base, "epoch": epoch, "val_acc": val_acc}
                    if val_acc > best:
                        save_checkpoint(folder.best_path, model, meta)
                    save_checkpoint(folder.last_path, model, meta)
                if val_acc > best:
                    best, result.best_val_acc, result.best_epoch = val_acc, val_acc, epoch
                remaining = config.epochs - epoch
                emit("on_epoch_end", {
                    "epoch": epoch, "epochs": config.epochs, "phase": phase.name,
                    "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
                    "lr": optimizer.param_groups[-1]["lr"], "seconds": seconds,
                    "eta_s": remaining * sum(epoch_seconds[-3:]) / len(epoch_seconds[-3:]),
                    "best_val_acc": result.best_val_acc,
                })
                if control.should_stop:
                    break
            if control.should_stop:
                break
        result.status = "done"
        result.message = control.stop_reason or f"finished {state['epoch']} epochs"
    except (_StopRequested, CacheStopped):
        result.status = "stopped"
        result.message = f"stopped by user at epoch {max(1, state['epoch'])} step {state['step']}"
    except _LossNotFinite as exc:
        result.status = "failed"
        result.message = result.error = str(exc)
        emit("on_error", {"message": result.message, "error_type": "LossNotFinite"})
    except Exception as exc:  # noqa: BLE001 - every failure must become an error event, not a dead thread
        result.status = "failed"
        result.message = result.error = describe_exception(exc, config)
        emit("on_error", {"message": result.message, "error_type": type(exc).__name__})
    finally:
        result.seconds = time.perf_counter() - start
        if "data" in state:
            state["data"].close()
        if state.get("channels_last"):
            # Hand the model back in the default layout (checkpoints and callers expect nothing special).
            model.to(memory_format=torch.contiguous_format)
        # A stopped or failed run keeps last.pt (the weights as they are now).
        if folder is not None and "meta" in state and (result.status != "done" or not folder.last_path.exists()):
            _save_quietly(folder.last_path, model, {**state["meta"], "epoch": state["epoch"],
                                                    "val_acc": result.best_val_acc or 0.0}, result)
    emit("on_fit_end", {
        "status": result.status, "message": result.message, "best_val_acc": result.best_val_acc,
        "best_epoch": result.best_epoch, "epochs_done": result.epochs_done, "seconds": result.seconds,
        "error": result.error,
    })
    return result


def _save_quietly(path: Path, model: nn.Module, meta: dict[str, Any], result: FitResult) -> None:
    """Keep last.pt after a stop or crash; a failure here is noted, never raised over the real error."""
    try:
        save_checkpoint(path, model, meta)
    except Exception as exc:  # noqa: BLE001
        result.notes.append(f"could not save {path.name}: {exc}")


def describe_exception(exc: BaseException, config: TrainConfig) -> str:
    """A message the user can act on (out of memory -> lower the batch size)."""
    if devices.is_out_of_memory(exc):
        device = "cuda" if isinstance(exc, torch.cuda.OutOfMemoryError) else config.device
        return f"out of memory on {device}: lower the batch size (now {config.batch_size}) or the image size"
    if isinstance(exc, ValueError):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f"cannot read {getattr(exc, 'filename', '') or 'a file'}: {exc.strerror or exc}; " \
               "was the dataset moved or changed after it was scanned?"
    return f"{type(exc).__name__}: {exc}"


def _param_groups(groups: list, phase: Phase, lr: float) -> list[dict[str, Any]]:
    """One optimizer param group per trainable layer group, at lr times its scale."""
    out, seen = [], set()
    for group in groups:
        if group.name not in phase.lr_scale:
            continue
        params = []
        for p in group.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        if params:
            out.append({"params": params, "lr": lr * phase.lr_scale[group.name]})
    if not out:
        raise EngineError(f"no trainable parameters in groups {phase.trainable}")
    return out


class _SpeedSettings:
    """The run's device, memory format, precision and micro-batch, decided once per fit."""

    def __init__(self, device: torch.device, channels_last: bool, use_amp: bool, infer_amp: bool,
                 config: TrainConfig, image_size: int) -> None:
        self.device, self.channels_last, self.use_amp, self.infer_amp = device, channels_last, use_amp, infer_amp
        self.image_size = image_size
        self.num_workers = config.num_workers
        micro = devices.micro_batch_size(device, config.batch_size)
        # Splitting a batch changes what BatchNorm sees when it updates statistics: only split when frozen.
        self.micro_batch = micro if config.bn_mode == "frozen" else config.batch_size

    def describe(self, config: TrainConfig) -> str:
        """One note line: what the run does for speed."""
        parts = [f"device {self.device.type}", f"{torch.get_num_threads()} threads"]
        parts.append("channels_last" if self.channels_last else "contiguous memory")
        if self.use_amp:
            parts.append(f"{devices.amp_dtype(self.device)} autocast")
        elif self.infer_amp:
            parts.append(f"{devices.amp_dtype(self.device)} autocast for inference, float32 training")
        if self.micro_batch < config.batch_size:
            parts.append(f"micro-batch {self.micro_batch} x {-(-config.batch_size // self.micro_batch)} "
                         f"accumulated to batch {config.batch_size}")
        return "speed: " + ", ".join(parts)


class _OrderSampler(Sampler):
    """Yields the order set for the next pass (lets a persistent-worker DataLoader follow our shuffles)."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class _ImageBatches:
    """(images, labels) batches of one split in a given order, its files decoded ahead in that order."""

    def __init__(self, data: _Data, split: str, batch_size: int, speed: _SpeedSettings) -> None:
        self.data, self.split, self.batch_size, self.speed = data, split, batch_size, speed
        self.views = {0: data.val() if split == "val" else data.train(augmented=False)}
        if split == "train":
            self.views[1] = data.train(augmented=True)
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
            raise EngineError(f"{exc.path} could not be read after the dataset was scanned ({exc.reason}). "
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


class _ImageSource:
    """Batches of images through the full model (no feature cache): augmented for training."""

    def __init__(self, images: _ImageBatches, batch_size: int, shuffle: bool, generator: torch.Generator | None):
        self.images, self.batch_size, self.shuffle, self.generator = images, batch_size, shuffle, generator

    def num_batches(self, batch_size: int) -> int:
        return (len(self.images) + batch_size - 1) // batch_size

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        return self.images(1 if self.shuffle else 0, order)


def _phase_sources(config, model, groups, phase, data: _Data, speed: _SpeedSettings, notes: list[str]):
    """(module to train, train batches, val batches): the suffix on cached features when possible."""
    generator = torch.Generator().manual_seed(config.seed + len(notes) + 1)
    train_images = _ImageBatches(data, "train", config.batch_size, speed)
    val_images = _ImageBatches(data, "val", config.batch_size, speed)
    full = (model, _ImageSource(train_images, config.batch_size, True, generator),
            _ImageSource(val_images, config.batch_size, False, None))
    if not config.feature_cache:
        return full
    split = _split_frozen_prefix(model, config.backbone, groups, set(phase.trainable))
    if split is None:
        notes.append(f"phase {phase.name}: no frozen prefix to cache, training the full model")
        return full
    prefix, suffix = split
    runner = PrefixRunner(prefix, speed.device, speed.infer_amp, speed.channels_last)
    views = config.feature_cache_views
    n_train, n_val = len(data.train_items), len(data.val_items)
    store = FeatureStore(n_train * views + n_val, runner.output_shape(speed.image_size),
                         config.feature_cache_max_mb * 1024 * 1024)
    if store.over_cap:
        notes.append(f"phase {phase.name}: feature cache would need {store.planned_bytes / 2**20:.0f} MB, over "
                     f"{config.feature_cache_max_mb} MB, training the full model instead")
    else:
        notes.append(f"phase {phase.name}: cached frozen-prefix features "
                     f"({store.nbytes / 1e6:.1f} MB, {views} view(s), filled as training goes)")
    # Over the cap nothing is stored and the prefix runs on every batch: the full model's computation.
    train = CachedTrainFeatures(runner, store, train_images, n_train, views, config.batch_size, generator,
                                speed.device)
    val = CachedValFeatures(runner, store, val_images, n_val, config.batch_size, speed.device,
                            row_offset=n_train * views)
    return suffix, train, val


def _split_frozen_prefix(model, name, groups, trainable: set[str]):
    """(prefix, suffix) where the prefix is the frozen groups before the first trainable one, else None."""
    from ftui.backbones import split_model

    first = next(i for i, g in enumerate(groups) if g.name in trainable)
    if first == 0:
        return None
    return split_model(model, name, groups, first)


def _batch_weight(y: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor | float:
    """What the mean loss divides by: the batch size, or the summed class weights of its labels."""
    return float(y.shape[0]) if weight is None else weight[y].sum()


def _train_epoch(config, forward, source, optimizer, scheduler, scaler, criterion, speed: _SpeedSettings,
                 stop_event, control, emit, state, steps_per_epoch, phase, weight) -> tuple[float, float]:
    """One pass over the training batches; checks the stop flags before every batch."""
    total_loss, correct, seen = 0.0, 0, 0
    t_prev = time.perf_counter()
    for step_in_epoch, (x, y) in enumerate(source.batches(), start=1):
        if stop_event.is_set():
            raise _StopRequested()
        if control.should_stop:
            break
        optimizer.zero_grad(set_to_none=True)
        state["step"] = step_in_epoch
        norm = _batch_weight(y, weight)
        loss_value, batch_correct = 0.0, 0
        # Gradient accumulation over micro-batches: the summed loss / the batch's weight is the batch's mean.
        for xm, ym in zip(x.split(speed.micro_batch), y.split(speed.micro_batch)):
            if speed.channels_last and xm.dim() == 4:
                xm = xm.contiguous(memory_format=torch.channels_last)
            with devices.autocast(speed.device, speed.use_amp):
                logits = forward(xm)
                loss = criterion(logits.float(), ym) / norm
            if not torch.isfinite(loss):
                kind = "NaN" if torch.isnan(loss) else "infinite"
                raise _LossNotFinite(f"loss became {kind} at epoch {state['epoch']} step {step_in_epoch}: "
                                     f"lower the learning rate (now {config.lr:g})")
            scaler.scale(loss).backward()
            loss_value += float(loss.detach())
            batch_correct += int((logits.detach().argmax(1) == ym).sum())
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        n = int(y.shape[0])
        total_loss += loss_value * n
        correct += batch_correct
        seen += n
        now = time.perf_counter()
        images_per_s = n / max(now - t_prev, 1e-9)
        t_prev = now
        state["global_step"] = state.get("global_step", 0) + 1
        emit("on_batch_end", {
            "step": state["global_step"], "epoch": state["epoch"], "epochs": config.epochs,
            "batch": step_in_epoch, "steps_per_epoch": steps_per_epoch, "phase": phase.name,
            "loss": loss_value, "lr": optimizer.param_groups[-1]["lr"], "images_per_s": images_per_s,
        })
    if stop_event.is_set():
        raise _StopRequested()
    return total_loss / max(seen, 1), correct / max(seen, 1)


@torch.inference_mode()
def _validate(forward, source, criterion, device, use_amp, channels_last: bool = False) -> tuple[float, float]:
    """Val loss and accuracy with the module in eval mode."""
    was_training = forward.training
    forward.eval()
    # A BatchNorm-folded copy of the module as it is now: same outputs, faster.
    fast = fuse_for_inference(forward)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    total_loss, correct, seen = 0.0, 0, 0
    try:
        for x, y in source.batches():
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with devices.autocast(device, use_amp):
                logits = fast(x).float()
            total_loss += float(criterion(logits, y))
            correct += int((logits.argmax(1) == y).sum())
            seen += int(y.shape[0])
    finally:
        forward.train(was_training)
    return total_loss / max(seen, 1), correct / max(seen, 1)
