"""`python -m ftui bench-recipes DATA... [--backbone] [--weights] [--epochs 5] [--json]`: is the default good?

On each dataset, with the same split, weights, image size and epoch budget, three recipes:
  default    ftui's TrainConfig defaults through the engine (what a user gets without tuning);
  probe      a tuned linear probe on frozen features (weight decay chosen on a fold of train, not on val);
  reference  a hand fine-tune in fastai's `fine_tune` style (ftui/bench/reference.py);
  head_only  the default before this recipe (`--train-groups head`, cosine, no early stopping): the head alone
             on cached features, for accuracy and per-epoch cost side by side in one run.
Each row reports val accuracy with its 95% Wilson interval, wall time and seconds per epoch. A default is
only good when it is good on all of the suite (README), never on one set.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
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

from ftui.bench.speed import BenchError
from ftui.config import AugConfig, TrainConfig
from ftui.stats import wilson_interval

METHODS = ("default", "probe", "reference", "head_only")
# The old default, as TrainConfig overrides of today's defaults.
HEAD_ONLY = {"train_groups": "head", "scheduler": "cosine", "early_stopping_patience": 0}


class _Batches:
    """Re-iterable (images, labels) batches of `items`: shuffled with a seeded generator when `shuffle`."""

    def __init__(self, cache, items: list, transform, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        from ftui.data.imagecache import ImageTensorDataset

        self.dataset = ImageTensorDataset(cache, items, transform)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.dataset) + self.batch_size - 1) // self.batch_size

    def __call__(self):
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator).tolist() if self.shuffle else list(range(n))
        for start in range(0, n, self.batch_size):
            pairs = [self.dataset[i] for i in order[start:start + self.batch_size]]
            yield torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def _engine_default(config: TrainConfig, dataset, model, backbone: str) -> dict[str, Any]:
    """The default recipe through the engine; the accuracy is that of the weights the run keeps (best.pt)."""
    from ftui.bench.speed import _Timeline
    from ftui.models.backbones import layer_groups
    from ftui.train.trainer import fit

    start = time.perf_counter()
    timeline = _Timeline(start)
    # Early stopping, the head alone and the rest come from the config (default_callbacks): what a user gets.
    result = fit(config, dataset, model, layer_groups(model, backbone), [timeline], threading.Event())
    if result.status != "done":
        raise BenchError(f"default recipe {result.status}: {result.message}")
    last_phase = timeline.epochs[-1]["phase"]
    return {"val_acc": result.best_val_acc, "best_epoch": result.best_epoch, "seconds": time.perf_counter() - start,
            "epoch_seconds": timeline.mean_epoch_seconds(last_phase), "phase": last_phase,
            "epochs": [round(e["val_acc"], 4) for e in timeline.epochs],
            "epoch_times": [round(e["seconds"], 2) for e in timeline.epochs], "notes": result.notes}


def demo_from_scratch(data: str, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """The app's offline demo recipe (ftui/data/demo.py DEMO_RECIPE, random init) through a real run: val accuracy,
    wall and CPU seconds, and how many of the bundled example images it labels right."""
    from ftui.data.demo import demo_config, example_images
    from ftui.jobs import run_training
    from ftui.results.predict import Predictor
    from ftui.runs import RunStore

    log("demo textures: the demo recipe from scratch")
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="ftui-demo-bench-") as tmp:
        result, folder = run_training(demo_config(data), RunStore(tmp), threading.Event())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if result.status != "done" or folder is None:
            raise BenchError(f"demo recipe {result.status}: {result.message}")
        evaluation = json.loads(folder.evaluation_path.read_text())
        table = Predictor(folder.path).predictions_table(example_images(), top_k=1)
    right = sum(Path(p).stem == f"example_{label}" for p, label in zip(table["path"], table["label"]))
    return {"val_acc": evaluation["accuracy"], "correct": evaluation["correct"],
            "ci95": evaluation["accuracy_ci95"], "seconds": wall, "cpu_seconds": cpu,
            "examples_right": right, "examples": len(table), "epochs": result.epochs_done}


def _probe(model, backbone: str, train: _Batches, val: _Batches, num_classes: int) -> dict[str, Any]:
    from ftui.bench.reference import frozen_features, linear_probe
    from ftui.models.backbones import layer_groups, split_model

    start = time.perf_counter()
    groups = layer_groups(model, backbone)
    body = split_model(model, backbone, groups, len(groups) - 1)[0]
    out = linear_probe(frozen_features(body, train), frozen_features(body, val), num_classes)
    return {**out, "seconds": time.perf_counter() - start}


def _reference(model, backbone: str, train: _Batches, val: _Batches, epochs: int,
               log: Callable[[str], None]) -> dict[str, Any]:
    from ftui.bench.reference import fastai_fine_tune
    from ftui.models.backbones import layer_groups

    start = time.perf_counter()
    ref = fastai_fine_tune(model, layer_groups(model, backbone), train, val, epochs,
                           on_epoch=lambda e, acc, s: log(f"reference epoch {e}: val acc {acc:.4f} ({s:.0f} s)"))
    return {"val_acc": ref.val_acc[-1], "seconds": time.perf_counter() - start,
            "epoch_seconds": statistics.fmean(ref.epoch_seconds[1:] or ref.epoch_seconds),
            "epochs": [round(a, 4) for a in ref.val_acc], "epoch_times": [round(t, 2) for t in ref.epoch_seconds]}


@dataclass(frozen=True)
class BenchSettings:
    """What every dataset of one `bench-recipes` run shares.

    `seed` seeds the training (shuffling, augmentation, head init); the split stays that of seed 0, so rows
    with different seeds are paired comparisons on the same val images.
    """

    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    epochs: int = 5
    batch_size: int = 16
    image_size: int | None = None
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    # The demo row's from-scratch recipe has its own fixed seed: run it once, not once per training seed.
    demo_recipe: bool = True


def bench_dataset(data: str, settings: BenchSettings, log: Callable[[str], None] = lambda line: None
                  ) -> dict[str, Any]:
    """One row: every method on `data` from the same pristine weights and the same split."""
    from ftui.data.datasets import load_dataset
    from ftui.data.demo import ensure_demo_dataset
    from ftui.data.imagecache import DecodedImageCache
    from ftui.models.backbones import build
    from ftui.train.batches import transform_settings
    from ftui.train.trainer import seed_everything

    path = str(ensure_demo_dataset()) if data == "demo" else data
    backbone, batch_size, methods = settings.backbone, settings.batch_size, settings.methods
    config = TrainConfig(data=path, backbone=backbone, weights=settings.weights, epochs=settings.epochs,
                         batch_size=batch_size, image_size=settings.image_size, seed=settings.seed, split_seed=0)
    config.validate()
    dataset = load_dataset(path, val_fraction=config.val_fraction, seed=config.data_seed)
    n_val = len(dataset.split("val"))
    row: dict[str, Any] = {"dataset": Path(path).name if data != "demo" else "demo textures", "seed": settings.seed,
                           "classes": len(dataset.classes), "train": len(dataset.split("train")), "val": n_val}
    seed_everything(config.seed)
    model = build(backbone, len(dataset.classes), weights=settings.weights)
    pristine = copy.deepcopy(model.state_dict())
    tfs = transform_settings(config)
    row["image_size"] = tfs["image_size"]

    def fresh() -> torch.nn.Module:
        model.load_state_dict(pristine)
        for p in model.parameters():
            p.requires_grad_(True)
        seed_everything(config.seed)
        return model.train()

    if "default" in methods:
        log(f"{row['dataset']}: default recipe")
        row["default"] = _engine_default(config, dataset, fresh(), backbone)
    if "head_only" in methods:
        log(f"{row['dataset']}: head only (the old default)")
        row["head_only"] = _engine_default(config.replace(**HEAD_ONLY), dataset, fresh(), backbone)
    from ftui.data.augment import eval_transform, train_transform

    size, resize = tfs["image_size"], tfs["resize_size"]
    eval_tf = eval_transform(size, resize, tfs["mean"], tfs["std"])
    cache = DecodedImageCache(resize, lazy=True)
    try:
        train_eval = _Batches(cache, dataset.split("train"), eval_tf, batch_size, shuffle=False)
        val = _Batches(cache, dataset.split("val"), eval_tf, batch_size, shuffle=False)
        if "probe" in methods:
            log(f"{row['dataset']}: linear probe")
            row["probe"] = _probe(fresh(), backbone, train_eval, val, len(dataset.classes))
        if "reference" in methods:
            log(f"{row['dataset']}: reference fine-tune")
            train_aug = _Batches(cache, dataset.split("train"), train_transform(AugConfig(), size, tfs["mean"],
                                 tfs["std"], resize_size=resize), batch_size, shuffle=True, seed=config.seed)
            row["reference"] = _reference(fresh(), backbone, train_aug, val, settings.epochs, log)
    finally:
        cache.close()
    if data == "demo" and settings.demo_recipe:
        row["demo_recipe"] = demo_from_scratch(path, log)
    for m in methods:
        row[m].update(_counted(row[m]["val_acc"], n_val))
    return row


def _counted(val_acc: float, n_val: int) -> dict[str, Any]:
    """The images right out of `n_val` and their 95% Wilson interval."""
    correct = round(val_acc * n_val)
    return {"correct": correct, "ci95": [round(v, 4) for v in wilson_interval(correct, n_val)]}


def combine_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One dataset's rows under several training seeds as one row: each method's mean accuracy (its Wilson
    interval at the val set's size: the seeds share the val images) and every seed's accuracy."""
    if len(runs) == 1:
        return runs[0]
    row = {k: v for k, v in runs[0].items() if k not in METHODS and k != "seed"}
    row["seeds"] = [r["seed"] for r in runs]
    for m in METHODS:
        per = [r[m] for r in runs if m in r]
        if not per:
            continue
        mean = statistics.fmean(p["val_acc"] for p in per)
        row[m] = {"val_acc": mean, "seed_accs": [p["val_acc"] for p in per], **_counted(mean, row["val"]),
                  "seconds": statistics.fmean(p["seconds"] for p in per)}
        if all(p.get("epoch_seconds") for p in per):
            row[m]["epoch_seconds"] = statistics.fmean(p["epoch_seconds"] for p in per)
    row["runs"] = runs
    return row


def _cell(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    spread = ""
    if len(r.get("seed_accs", ())) > 1:
        spread = f" ({min(r['seed_accs']):.3f}-{max(r['seed_accs']):.3f})"
    return f"{r['val_acc']:.3f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]{spread}"


def _margin(r: dict[str, Any]) -> str:
    """The default's accuracy minus the best of probe and reference, in points (the issue's yardstick)."""
    others = [r[m]["val_acc"] for m in ("probe", "reference") if m in r]
    if "default" not in r or not others:
        return "-"
    return f"{100 * (r['default']['val_acc'] - max(others)):+.1f}"


def _time(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    per = f", {r['epoch_seconds']:.0f} s/ep" if r.get("epoch_seconds") else ""
    return f"{r['seconds']:.0f} s{per}"


def format_table(rows: list[dict[str, Any]], title: str) -> str:
    """A markdown table: one line per dataset, accuracy [95% Wilson interval] and time per method; with several
    seeds the mean accuracy, then (lowest-highest seed)."""
    header = ["dataset", "classes", "train/val", "size", *(f"{m} acc [95% CI]" for m in METHODS),
              "default - max(probe, reference), points", *(f"{m} time" for m in METHODS)]
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["dataset"], str(r["classes"]), f"{r['train']}/{r['val']}", str(r["image_size"]),
                 *(_cell(r.get(m)) for m in METHODS), _margin(r), *(_time(r.get(m)) for m in METHODS)]
        lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        d = r.get("demo_recipe")
        if d:
            lines.append(f"\n{r['dataset']}, the app's demo recipe from random init (ftui/data/demo.py): val acc "
                         f"{d['val_acc']:.3f} [{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}] in {d['seconds']:.0f} s wall, "
                         f"{d['cpu_seconds']:.0f} s CPU, {d['epochs']} epochs; bundled examples labelled right: "
                         f"{d['examples_right']}/{d['examples']}")
    return "\n".join(lines)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench-recipes` subcommand's flags."""
    parser.add_argument("data", nargs="+", help="dataset folders (or 'demo' for the built-in textures)")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", default="imagenet", help="imagenet | none | path to a weights file")
    parser.add_argument("--epochs", type=int, default=5, help="the epoch budget of every recipe")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    parser.add_argument("--image-size", dest="image_size", type=int, default=None,
                        help="default: the backbone's native input size")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds; each method's accuracy "
                        "is their mean (the split stays seed 0's, so the seeds' runs are paired)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run_cli(args: argparse.Namespace) -> int:
    """Run every dataset in turn (progress on stderr), then print the table or JSON on stdout."""
    from ftui import devices

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise BenchError(f"--methods must be a subset of {','.join(METHODS)}, got {args.methods!r}")
    for d in args.data:
        if d != "demo" and not Path(d).exists():
            raise BenchError(f"dataset not found: {d}")
    devices.configure_threads()
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--seeds must be comma-separated whole numbers, got {args.seeds!r}") from None
    if not seeds or len(seeds) > 20 or any(not 0 <= v < 2**32 for v in seeds):
        raise BenchError(f"--seeds takes 1 to 20 seeds in [0, 2**32), got {args.seeds!r}")
    settings = BenchSettings(args.backbone, args.weights, args.epochs, args.batch_size, args.image_size, methods)

    def log(line: str) -> None:
        print(f"bench-recipes: {line}", file=sys.stderr, flush=True)

    rows = []
    for d in args.data:
        runs = []
        for i, seed in enumerate(seeds):
            runs.append(bench_dataset(d, dataclasses.replace(settings, seed=seed, demo_recipe=i == 0), log))
            log(json.dumps(runs[-1]))
        rows.append(combine_seeds(runs))
    device = devices.pick_device("auto").type
    title = (f"ftui bench-recipes: {args.backbone}, weights {Path(args.weights).name}, {args.epochs} epochs, "
             f"batch {args.batch_size}, seeds {','.join(map(str, seeds))}, on {device} ({torch.get_num_threads()} threads)")
    print(json.dumps({"title": title, "rows": rows}, indent=2) if args.json else format_table(rows, title))
    return 0
