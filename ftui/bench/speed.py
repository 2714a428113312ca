"""`python -m ftui bench DATA --backbone NAME --weights W [--json] [--epochs N]`: the engine against the
tutorial's recipe and against the compute limit, in one process on the same data and weights.

Every figure is measured here, now, on this machine: compare ratios, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftui.config import TrainConfig
from ftui.errors import FtuiError
from ftui.train.callbacks import Callback

TARGETS = (0.90, 0.95)


class BenchError(FtuiError):
    """The benchmark cannot run on this input."""


class _Timeline(Callback):
    """Wall-clock times of every batch and epoch event, measured from `start`."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.excluded = 0.0
        self.first_batch: float | None = None
        self.epochs: list[dict[str, Any]] = []
        self.last_batch: dict[int, float] = {}

    def on_batch_end(self, info: dict[str, Any]) -> None:
        now = time.perf_counter() - self.start
        if self.first_batch is None:
            self.first_batch = now
        self.last_batch[info["epoch"]] = now

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        self.epochs.append({"epoch": info["epoch"], "phase": info["phase"], "val_acc": info["val_acc"],
                            "seconds": info["seconds"], "at": time.perf_counter() - self.start})

    def exclude(self, seconds: float) -> None:
        """Stop this clock for `seconds` (what a probe between two epochs took): later readings leave it out."""
        self.start += seconds
        self.excluded += seconds

    def seconds_to(self, target: float) -> float | None:
        return next((e["at"] for e in self.epochs if e["val_acc"] >= target), None)

    def epochs_to(self, target: float) -> int | None:
        return next((e["epoch"] for e in self.epochs if e["val_acc"] >= target), None)

    @property
    def best(self) -> float | None:
        return max((e["val_acc"] for e in self.epochs), default=None)

    def mean_epoch_seconds(self, phase: str | None = None) -> float | None:
        values = [e["seconds"] for e in self.epochs if phase is None or e["phase"] == phase]
        return statistics.fmean(values) if values else None

    def train_val_seconds(self, phase: str, skip: int = 0) -> tuple[float, float]:
        """(training, validation) seconds summed over the epochs of `phase` (from the batch timestamps),
        leaving out its first `skip` epochs."""
        train = val = 0.0
        seen = 0
        for prev, e in zip([None, *self.epochs], self.epochs):
            if e["phase"] != phase or e["epoch"] not in self.last_batch:
                continue
            seen += 1
            if seen <= skip:
                continue
            begin = prev["at"] if prev else 0.0
            train += self.last_batch[e["epoch"]] - begin
            val += e["at"] - self.last_batch[e["epoch"]]
        return train, val


class _LimitProbe(Callback):
    """The compute limit's training steps (ftui/bench/reference.py, unchanged) sampled after every epoch of the
    phases that train every layer, on a separate copy of the model, with the timeline's clock stopped meanwhile.

    On a shared machine the load moves within a minute; one limit reading taken after the engine's run
    compared the engine with another machine state (0.59x to 3.2x for the same code, README). Sampling between
    the engine's epochs puts both under the same load; the limit is all probes' images over their seconds.
    """

    def __init__(self, model: torch.nn.Module, phases: tuple[str, ...], timeline: _Timeline,
                 settings: dict[str, Any], steps: int = 3) -> None:
        self.model, self.phases, self.timeline, self.settings, self.steps = model, phases, timeline, settings, steps
        self.images, self.seconds = 0, 0.0
        self.samples: list[float] = []
        # Inference is probed on a BatchNorm-folded copy, as the engine validates.
        from ftui.models.fusing import fuse_for_inference

        self.fused = fuse_for_inference(copy.deepcopy(model).eval())
        self.infer_images, self.infer_seconds = 0, 0.0
        self.infer_samples: list[float] = []

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        if info["phase"] not in self.phases:
            return
        self.run()

    def run(self) -> None:
        begin = time.perf_counter()
        # The probe's random tensors must not move the engine's random stream (its shuffles and augmentations).
        with torch.random.fork_rng(devices=[]):
            self._measure()
        self.timeline.exclude(time.perf_counter() - begin)

    def _measure(self) -> None:
        from ftui.bench.reference import compute_limit

        s = self.settings
        rate = compute_limit(self.model, s["micro"], s["size"], steps=self.steps, channels_last=s["channels_last"],
                             autocast_dtype=s["train_dtype"], infer=False)["train_images_per_s"]
        self.samples.append(rate)
        self.images += self.steps * s["micro"]
        self.seconds += self.steps * s["micro"] / rate
        rate = compute_limit(self.fused, s["batch"], s["size"], steps=self.steps, channels_last=s["channels_last"],
                             autocast_dtype=s["infer_dtype"], train_params=[])["infer_images_per_s"]
        self.infer_samples.append(rate)
        self.infer_images += self.steps * s["batch"]
        self.infer_seconds += self.steps * s["batch"] / rate

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds else None

    @property
    def infer_images_per_s(self) -> float | None:
        return self.infer_images / self.infer_seconds if self.infer_seconds else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def inference_pass_seconds(model: torch.nn.Module, items: list, settings: dict[str, Any], batch_size: int,
                           device: torch.device) -> float:
    """Wall time to predict every item from its file: decode, eval transform, forward (engine settings)."""
    from ftui import devices
    from ftui.data.augment import eval_transform
    from ftui.data.imagecache import DecodedImageCache
    from ftui.models.fusing import fuse_for_inference

    start = time.perf_counter()
    cache = DecodedImageCache(settings["resize_size"], lazy=True)
    cache.prefetch(items)
    tf = eval_transform(settings["image_size"], settings["resize_size"], settings["mean"], settings["std"])
    channels_last = devices.use_channels_last(model, device)
    fast = fuse_for_inference(model.to(device))
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    amp = devices.amp_enabled(device, True)
    try:
        with torch.inference_mode(), devices.autocast(device, amp):
            for i in range(0, len(items), batch_size):
                x = torch.stack([tf(cache.get(it.path)) for it in items[i:i + batch_size]]).to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                fast(x)
    finally:
        cache.close()
    return time.perf_counter() - start


def predict_latency_ms(run_dir: Path, image: str, repeats: int = 10, device: str | torch.device = "cpu") -> float:
    """Median milliseconds for one image through `Predictor`, warm (model loaded, a few calls done)."""
    from ftui.results.predict import Predictor

    predictor = Predictor(run_dir, device=device)
    for _ in range(3):
        predictor.predict([image])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict([image])
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


@dataclass
class BenchOptions:
    """What to bench: the data, the backbone and its weights, and the training settings every run shares."""

    data: str
    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    epochs: int = 5
    batch_size: int = 16
    image_size: int | None = None
    device: str = "auto"
    tutorial_workers: int = 2
    # False: the tutorial's rows are left out (its all-layers loop is most of the bench's time on a busy CPU).
    tutorial: bool = True


# Random weights train as the app's from-scratch preset does: every layer from the first epoch, BatchNorm
# learning its statistics. The pretrained recipe (head first, frozen statistics) kept a random init's
# statistics: resnet50 from scratch predicted one class on an H200 (val 0.542 = the larger class, every mode).
SCRATCH_SETTINGS = {"recipe": "plain", "bn_mode": "train"}


def bench_config(o: BenchOptions) -> TrainConfig:
    """The training settings every engine run of the bench starts from (validated)."""
    scratch = SCRATCH_SETTINGS if o.weights == "none" else {}
    # Every epoch runs (no early stopping, which fit() takes from the config): the bench times epochs and
    # counts epochs to a target, as it always has.
    config = TrainConfig(data=str(o.data), backbone=o.backbone, weights=o.weights, epochs=o.epochs,
                         batch_size=o.batch_size, image_size=o.image_size, device=o.device,
                         early_stopping_patience=0, **scratch)
    config.validate()
    return config


def run_bench(options: BenchOptions, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every bench figure as a flat dict (see README for the keys); `log` gets a line per step."""
    load_before = list(os.getloadavg())
    bench = _Bench(options, log)
    bench.head_only()
    bench.inference_and_pipeline()
    bench.all_layers()
    bench.compute_limit()
    o = bench.out
    log(f"training {_fmt(o['engine_vs_compute_limit'])}x the compute limit ({_fmt(o['engine_train_images_per_s'])} "
        f"vs {_fmt(o['compute_limit_train_images_per_s'])} img/s), inference {_fmt(o['engine_infer_vs_compute_limit'])}x")
    bench.partial_freeze()
    if options.tutorial:
        bench.tutorial()
    else:
        bench.out["notes"].append("tutorial rows skipped: --skip-tutorial")
        bench.out["tutorial_epoch_seconds"] = None
    out = bench.out
    out["engine_vs_tutorial_epoch"] = _ratio(out["engine_epoch_seconds"], out["tutorial_epoch_seconds"])
    out["peak_rss_mb"] = _peak_rss_mb()
    # Other work on the machine: 1, 5 and 15-minute load averages around the whole bench.
    out["load_average_before"], out["load_average_after"] = load_before, list(os.getloadavg())
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


class _Bench:
    """The runs of one bench, sharing one dataset scan and one set of pristine weights; figures go to `out`."""

    def __init__(self, options: BenchOptions, log: Callable[[str], None]) -> None:
        from ftui import devices
        from ftui.data.datasets import load_dataset
        from ftui.models.backbones import build
        from ftui.train.batches import transform_settings
        from ftui.train.trainer import seed_everything

        o = options
        self.options, self.log = o, log
        self.base = bench_config(o)
        self.out: dict[str, Any] = {"backbone": o.backbone, "epochs": o.epochs, "batch_size": o.batch_size}
        # 1. Train clicked: dataset scan, weights from disk, head-only fit up to its first reported metric.
        self.start = time.perf_counter()
        self.dataset = load_dataset(self.base.data, val_fraction=self.base.val_fraction, seed=self.base.seed)
        seed_everything(self.base.seed)
        self.model0 = build(o.backbone, len(self.dataset.classes), weights=o.weights)
        self.pristine = copy.deepcopy(self.model0.state_dict())
        self.out["setup_seconds"] = time.perf_counter() - self.start
        self.dev = devices.pick_device(o.device)
        self.out.update(device=self.dev.type, device_name=devices.device_name(self.dev),
                        cpu_model=devices.cpu_model())
        devices.configure_threads()
        self.out["threads"] = torch.get_num_threads()
        self.settings = transform_settings(self.base)

    def fresh(self) -> torch.nn.Module:
        """The pristine weights again, every parameter trainable (the tutorial's head-only run freezes them)."""
        self.model0.load_state_dict(self.pristine)
        for p in self.model0.parameters():
            p.requires_grad_(True)
        return self.model0.train()

    def engine_run(self, config: TrainConfig, t0: float | None = None, run_dir: Path | None = None,
                   probe_phases: tuple[str, ...] = ()) -> _Timeline:
        """One engine fit from the pristine weights; with `probe_phases`, compute-limit probes after each of
        those phases' epochs (self.probe), left out of every time the timeline reports."""
        from ftui.models.backbones import layer_groups
        from ftui.train.trainer import fit

        probe_model = copy.deepcopy(self.fresh()) if probe_phases else None
        model = self.fresh()
        timeline = _Timeline(t0 if t0 is not None else time.perf_counter())
        callbacks: list[Callback] = [timeline]
        if probe_model is not None:
            self.probe = _LimitProbe(probe_model.to(self.dev), probe_phases, timeline, self.limit_settings())
            callbacks.append(self.probe)
        fit_start = time.perf_counter()
        result = fit(config, self.dataset, model, layer_groups(model, self.options.backbone), callbacks,
                     threading.Event(), run_dir=run_dir)
        if result.status != "done":
            raise BenchError(f"engine run ({config.train_groups}) {result.status}: {result.message}")
        timeline.wall = time.perf_counter() - fit_start - timeline.excluded  # type: ignore[attr-defined]
        timeline.notes = result.notes  # type: ignore[attr-defined]
        timeline.result = result  # type: ignore[attr-defined]
        return timeline

    def limit_settings(self) -> dict[str, Any]:
        """The compute limit's settings: the engine's micro-batch, image size, memory format and precision."""
        from ftui import devices

        dev = self.dev
        infer_dtype = devices.amp_dtype(dev) if devices.amp_enabled(dev, self.base.mixed_precision) else None
        return {"micro": devices.micro_batch_size(dev, self.options.batch_size), "batch": self.options.batch_size,
                "size": self.settings["image_size"],
                "channels_last": devices.use_channels_last(self.model0, dev), "infer_dtype": infer_dtype,
                "train_dtype": infer_dtype if dev.type == "cuda" else None}

    def head_only(self) -> None:
        from ftui.runs import RunStore

        tmp = Path(tempfile.mkdtemp(prefix="ftui-bench-"))
        self.log("engine: head only")
        head_config = self.base.replace(train_groups="head")
        self.folder = RunStore(tmp).create(head_config, tmp / "head")
        self.folder.write_classes(self.dataset.classes)
        head = self.engine_run(head_config, t0=self.start, run_dir=self.folder.path)
        self.out["first_metric_seconds"] = head.first_batch
        head_fit = self.engine_run(head_config)
        self.out.update({
            "head_only_seconds_to_090": head_fit.seconds_to(0.90),
            "head_only_seconds_to_095": head_fit.seconds_to(0.95),
            "head_only_best_acc": head_fit.best, "head_only_wall_seconds": head_fit.wall,  # type: ignore[attr-defined]
        })
        self.out["notes"] = list(head_fit.notes)  # type: ignore[attr-defined]
        if self.options.weights == "none":
            self.out["notes"].append("weights none: every run trains as from scratch (recipe plain, BatchNorm "
                                     "statistics learned)")

    def inference_and_pipeline(self) -> None:
        from ftui.bench.pipeline import measure_pipeline

        out, ds, batch_size = self.out, self.dataset, self.options.batch_size
        items = ds.split("train") + ds.split("val")
        self.log("one inference pass over train+val")
        out["one_inference_pass_seconds"] = inference_pass_seconds(self.fresh(), items, self.settings, batch_size,
                                                                   self.dev)
        out["head_only_095_vs_inference_pass"] = _ratio(out["head_only_seconds_to_095"],
                                                        out["one_inference_pass_seconds"])
        self.log("prediction latency")
        out["predict_ms"] = predict_latency_ms(self.folder.path, ds.split("val")[0].path, device=self.dev)
        self.log("data pipeline alone")
        speed = measure_pipeline(ds.split("train"), self.base.aug, self.settings["image_size"],
                                 self.settings["resize_size"], batch_size=batch_size, epochs=1)
        out["pipeline_decode_images_per_s"] = speed.decode_images_per_s
        out["pipeline_train_images_per_s"] = speed.train_images_per_s

    def all_layers(self) -> None:
        self.log("engine: all layers")
        full = self.engine_run(self.base.replace(train_groups="all"), probe_phases=("fine_tune", "train"))
        # The epochs that train every layer: the fine-tune phase, or the whole run from scratch (recipe plain).
        phase = "fine_tune" if any(e["phase"] == "fine_tune" for e in full.epochs) else "train"
        train_s, val_s = full.train_val_seconds(phase)
        n_ft = sum(1 for e in full.epochs if e["phase"] == phase)
        n_train, n_val = len(self.dataset.split("train")), len(self.dataset.split("val"))
        self.out.update({
            "all_layers_seconds_to_090": full.seconds_to(0.90), "all_layers_seconds_to_095": full.seconds_to(0.95),
            "all_layers_epochs_to_095": full.epochs_to(0.95), "all_layers_best_acc": full.best,
            "all_layers_wall_seconds": full.wall,  # type: ignore[attr-defined]
            # What the run keeps as best.pt: an all-layer epoch, or the head trained alone when it scored higher.
            "all_layers_kept_acc": full.result.best_val_acc,  # type: ignore[attr-defined]
            "all_layers_kept_epoch": full.result.best_epoch,  # type: ignore[attr-defined]
            "engine_epoch_seconds": full.mean_epoch_seconds(phase),
            "engine_train_images_per_s": n_train * n_ft / train_s if train_s else None,
            "engine_infer_images_per_s": n_val * n_ft / val_s if val_s else None,
        })
        # The same without the phase's first epoch: on a GPU that epoch pays one-time costs (cuDNN builds its
        # plans at every new batch shape, docs/gpu.md) that a short run's figure above is made of.
        warm_s, _ = full.train_val_seconds(phase, skip=1)
        self.out["engine_warm_train_images_per_s"] = n_train * (n_ft - 1) / warm_s if n_ft > 1 and warm_s else None

    def compute_limit(self) -> None:
        """The limits the engine is compared with: the probes taken between its all-layer epochs, and (for the
        record, and when no probe ran) one reading after the run, as the bench measured it before."""
        from ftui.bench.reference import compute_limit
        from ftui.models.fusing import fuse_for_inference

        self.log("compute limit (synthetic tensors)")
        out, s = self.out, self.limit_settings()
        model = self.fresh().to(self.dev)
        # A GPU step takes milliseconds: more steps for a steady reading.
        steps = 20 if self.dev.type == "cuda" else 6
        after_train = compute_limit(model, s["micro"], s["size"], steps=steps, channels_last=s["channels_last"],
                                    autocast_dtype=s["train_dtype"], infer=False)["train_images_per_s"]
        after_infer = compute_limit(fuse_for_inference(model), self.options.batch_size, s["size"], steps=steps,
                                    channels_last=s["channels_last"], autocast_dtype=s["infer_dtype"],
                                    train_params=[])["infer_images_per_s"]
        model.to(memory_format=torch.contiguous_format)
        probe = getattr(self, "probe", None)
        train = (probe and probe.images_per_s) or after_train
        infer = (probe and probe.infer_images_per_s) or after_infer
        out.update({
            "compute_limit_train_images_per_s": train, "compute_limit_infer_images_per_s": infer,
            "compute_limit_train_samples": list(probe.samples) if probe else [],
            "compute_limit_infer_samples": list(probe.infer_samples) if probe else [],
            "compute_limit_train_images_per_s_after": after_train,
            "compute_limit_infer_images_per_s_after": after_infer,
            "compute_limit_interleaved": bool(probe and probe.samples),
            "compute_limit_batch": s["micro"], "channels_last": s["channels_last"],
            "train_precision": str(s["train_dtype"] or "float32"),
            "infer_precision": str(s["infer_dtype"] or "float32"),
        })
        out["engine_vs_compute_limit"] = _ratio(out["engine_train_images_per_s"], train)
        out["engine_warm_vs_compute_limit"] = _ratio(out.get("engine_warm_train_images_per_s"), train)
        out["engine_infer_vs_compute_limit"] = _ratio(out["engine_infer_images_per_s"], infer)

    def partial_freeze(self) -> None:
        from ftui.models.backbones import layer_groups

        groups = [g.name for g in layer_groups(self.fresh(), self.options.backbone)]
        self.out["partial_freeze_groups"] = ",".join(groups[-2:])
        self.log(f"engine: partial freeze ({self.out['partial_freeze_groups']}) with and without the prefix cache")
        partial = self.base.replace(train_groups="last:2", recipe="plain")
        cached = self.engine_run(partial)
        uncached = self.engine_run(partial.replace(feature_cache=False))
        self.out.update({
            "partial_freeze_epoch_seconds_cached": cached.mean_epoch_seconds(),
            "partial_freeze_epoch_seconds_uncached": uncached.mean_epoch_seconds(),
            "partial_freeze_best_acc_cached": cached.best, "partial_freeze_best_acc_uncached": uncached.best,
        })
        self.out["partial_freeze_epoch_ratio"] = _ratio(cached.mean_epoch_seconds(), uncached.mean_epoch_seconds())

    def tutorial(self) -> None:
        from ftui.bench.reference import run_tutorial
        from ftui.models.backbones import classifier_head

        root, out = Path(self.options.data), self.out
        if not ((root / "train").is_dir() and (root / "val").is_dir()):
            out["notes"].append("tutorial rows skipped: DATA has no train/ and val/ folders (the tutorial's layout)")
            out["tutorial_epoch_seconds"] = None
            return
        for mode, head_only in (("head_only", True), ("all_layers", False)):
            self.log(f"tutorial recipe: {mode.replace('_', ' ')}")
            model = self.fresh()
            ref = run_tutorial(model, classifier_head(model, self.options.backbone), root, self.options.epochs,
                               head_only=head_only, num_workers=self.options.tutorial_workers, device=self.dev)
            out.update({
                f"tutorial_{mode}_seconds_to_090": ref.seconds_to(0.90),
                f"tutorial_{mode}_seconds_to_095": ref.seconds_to(0.95),
                f"tutorial_{mode}_epochs_to_095": ref.epochs_to(0.95),
                f"tutorial_{mode}_best_acc": ref.best_val_acc,
                f"tutorial_{mode}_wall_seconds": ref.epoch_end_seconds[-1],
                f"tutorial_{mode}_epoch_seconds": statistics.fmean(ref.epoch_seconds),
            })
        out["tutorial_epoch_seconds"] = out["tutorial_all_layers_epoch_seconds"]


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "not reached" if unit == "s?" else "-"
    if isinstance(value, float):
        text = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    else:
        text = str(value)
    return text + ("" if unit in ("", "s?") else f" {unit}") if unit != "s?" else text + " s"


def table_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, ours, reference, ratio) rows of the printed table."""
    g = r.get
    rows = [
        ("training img/s vs compute limit", _fmt(g("engine_train_images_per_s")),
         _fmt(g("compute_limit_train_images_per_s")), _fmt(g("engine_vs_compute_limit"))),
        ("training img/s vs compute limit, warm epochs", _fmt(g("engine_warm_train_images_per_s")),
         _fmt(g("compute_limit_train_images_per_s")), _fmt(g("engine_warm_vs_compute_limit"))),
        ("inference img/s vs compute limit", _fmt(g("engine_infer_images_per_s")),
         _fmt(g("compute_limit_infer_images_per_s")), _fmt(g("engine_infer_vs_compute_limit"))),
        ("head only: s to 0.95 vs one inference pass", _fmt(g("head_only_seconds_to_095"), "s?"),
         _fmt(g("one_inference_pass_seconds"), "s?"), _fmt(g("head_only_095_vs_inference_pass"))),
    ]
    for mode, label in (("head_only", "head only"), ("all_layers", "all layers")):
        for key, what, unit in (("seconds_to_090", "s to 0.90", "s?"), ("seconds_to_095", "s to 0.95", "s?"),
                                ("best_acc", "best val acc", ""), ("wall_seconds", "wall time", "s?")):
            ours, ref = g(f"{mode}_{key}"), g(f"tutorial_{mode}_{key}")
            rows.append((f"{label} vs tutorial: {what}", _fmt(ours, unit), _fmt(ref, unit), _fmt(_ratio(ours, ref))))
    rows += [
        ("all layers vs tutorial: epochs to 0.95", _fmt(g("all_layers_epochs_to_095")),
         _fmt(g("tutorial_all_layers_epochs_to_095")), ""),
        ("all layers: kept model (best.pt) val acc, its epoch", _fmt(g("all_layers_kept_acc")),
         _fmt(g("all_layers_kept_epoch")), ""),
        ("all layers vs tutorial: s per epoch", _fmt(g("engine_epoch_seconds"), "s?"),
         _fmt(g("tutorial_epoch_seconds"), "s?"), _fmt(g("engine_vs_tutorial_epoch"))),
        (f"partial freeze ({g('partial_freeze_groups')}): s per epoch, cache vs none",
         _fmt(g("partial_freeze_epoch_seconds_cached"), "s?"), _fmt(g("partial_freeze_epoch_seconds_uncached"), "s?"),
         _fmt(g("partial_freeze_epoch_ratio"))),
        ("partial freeze: best val acc, cache vs none", _fmt(g("partial_freeze_best_acc_cached")),
         _fmt(g("partial_freeze_best_acc_uncached")), ""),
        ("data pipeline alone: train img/s vs engine", _fmt(g("pipeline_train_images_per_s")),
         _fmt(g("engine_train_images_per_s")), _fmt(_ratio(g("pipeline_train_images_per_s"),
                                                            g("engine_train_images_per_s")))),
        ("first metric after Train", _fmt(g("first_metric_seconds"), "s?"), "", ""),
        ("predict one image, warm", _fmt(g("predict_ms"), "ms"), "", ""),
        ("peak RSS", _fmt(g("peak_rss_mb"), "MB"), "", ""),
    ]
    return rows


def _loads(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def format_table(r: dict[str, Any]) -> str:
    """The printed table: measure | ours | reference | ratio."""
    header = ("measure", "ours", "reference", "ratio")
    rows = [header, *table_rows(r)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    title = (f"ftui bench: {r['backbone']} on {r['device']} ({r.get('device_name', '?')}; CPU "
             f"{r.get('cpu_model', '?')}, {r['threads']} threads), {r['epochs']} epochs, batch "
             f"{r['batch_size']}; training {r['train_precision']}, inference {r['infer_precision']}, "
             f"channels_last {r['channels_last']}, compute-limit batch {r['compute_limit_batch']}"
             + (f", compute limit sampled between the engine's epochs ({len(r['compute_limit_train_samples'])} "
                "probes)" if r.get("compute_limit_interleaved") else ""))
    load = r.get("load_average_before"), r.get("load_average_after")
    if all(load):
        title += f"\nload average (1/5/15 min) before {_loads(load[0])}, after {_loads(load[1])}"
    return "\n".join([title, *lines, *(f"note: {n}" for n in r.get("notes", []))])


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench` subcommand's flags."""
    parser.add_argument("data", help="dataset folder (train/ and val/ folders for the tutorial rows)")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", default="imagenet", help="imagenet | none | path to a weights file")
    parser.add_argument("--epochs", type=int, default=5, help="epochs for every run (engine and tutorial)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    parser.add_argument("--image-size", dest="image_size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tutorial-workers", dest="tutorial_workers", type=int, default=2,
                        help="DataLoader workers of the tutorial's loop (it publishes 4; 2 fits 2 cores)")
    parser.add_argument("--skip-tutorial", dest="skip_tutorial", action="store_true",
                        help="leave out the tutorial loop's rows (the slowest part on a busy machine)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run_cli(args: argparse.Namespace) -> int:
    """Run the bench, progress on stderr, the table (or JSON) on stdout."""
    if not Path(args.data).exists():
        raise BenchError(f"dataset not found: {args.data}")
    options = BenchOptions(args.data, args.backbone, args.weights, args.epochs, args.batch_size, args.image_size,
                           args.device, args.tutorial_workers, not args.skip_tutorial)
    results = run_bench(options, log=lambda line: print(f"bench: {line}", file=sys.stderr, flush=True))
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0
