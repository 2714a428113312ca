"""`python -m ftui bench-tasks [--suites ...] [--epochs 4] [--json]`: multilabel and regression, ftui's default
against a hand-written plain fine-tune, on suites made from the shared data (never from one set alone).

Suites (written to a temporary folder, never into the repository; train images come from the source's train
split and val images from its val split, so no photo or tile is in both):
- mnist-mosaic-2 / clothing-mosaic-4: 2 or 4 tiles of mnist_small / clothing_small in a 2x2 grid; labels =
  the set of their classes (multilabel, metric mAP);
- hymenoptera-rotation: a photo rotated by an angle in [-40, 40] degrees, the inscribed square kept (no black
  corners); target = the angle;
- hymenoptera-brightness: a photo's brightness scaled by a factor in [0.4, 1.6]; target = the factor;
- clothing-scale: the central 1/f of a photo enlarged back to full size, f in [1, 2.5]; target = f;
- mnist-digit: the digit's value 0..9 as a number (regression).
Methods, same backbone, weights, image size, split and epoch budget:
  default    ftui's TrainConfig defaults (task detected from the CSV) through jobs.run_training; its
             evaluation.json's val numbers;
  reference  a plain fine-tune by hand (ftui/bench/reference.py `plain_task_fine_tune`): every layer, AdamW,
             one-cycle, BCE-with-logits / MSE on standardized targets, no augmentation, best val epoch.
Kept small for a shared CPU: a few hundred images per suite at 64-96 px, mobilenet_v2.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from ftui.bench.speed import BenchError

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DEFAULT_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_dequantized.pth"
# suite -> (source dataset, maker, image size, train images, val images)
SUITES: dict[str, tuple[str, str, int, int, int]] = {
    "mnist-mosaic-2": ("mnist_small", "mosaic2", 64, 240, 120),
    "clothing-mosaic-4": ("clothing_small", "mosaic4", 96, 240, 120),
    "hymenoptera-rotation": ("hymenoptera_data", "rotation", 96, 244, 153),
    "hymenoptera-brightness": ("hymenoptera_data", "brightness", 96, 244, 153),
    "clothing-scale": ("clothing_small", "scale", 96, 240, 120),
    "mnist-digit": ("mnist_small", "digit", 64, 240, 120),
}


def _source_images(root: Path, split: str) -> list[tuple[Path, str]]:
    return sorted((p, p.parent.name) for p in (root / split).glob("*/*") if p.is_file())


def _square(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return image.convert("RGB").crop(box).resize((size, size), Image.BILINEAR)


def _mosaic(tiles: list[Image.Image], count: int, size: int, rng: random.Random) -> Image.Image:
    """`count` tiles at random cells of a 2x2 grid (empty cells black)."""
    canvas = Image.new("RGB", (size, size))
    half = size // 2
    for cell, tile in zip(rng.sample(range(4), count), tiles):
        canvas.paste(_square(tile, half), ((cell % 2) * half, (cell // 2) * half))
    return canvas


def _regression_image(kind: str, image: Image.Image, size: int, rng: random.Random) -> tuple[Image.Image, float]:
    if kind == "rotation":
        angle = rng.uniform(-40, 40)
        big = _square(image, 2 * size).rotate(angle, resample=Image.BILINEAR)
        # The largest axis-aligned square inside the rotated one (no black corners).
        theta = np.radians(abs(angle))
        inner = 2 * size / (np.cos(theta) + np.sin(theta))
        lo = (2 * size - inner) / 2
        return big.crop((lo, lo, lo + inner, lo + inner)).resize((size, size), Image.BILINEAR), round(angle, 3)
    if kind == "brightness":
        factor = rng.uniform(0.4, 1.6)
        return ImageEnhance.Brightness(_square(image, size)).enhance(factor), round(factor, 4)
    if kind == "scale":
        factor = rng.uniform(1.0, 2.5)
        big = _square(image, 4 * size)
        side = 4 * size / factor
        lo = (4 * size - side) / 2
        return big.crop((lo, lo, lo + side, lo + side)).resize((size, size), Image.BILINEAR), round(factor, 4)
    raise BenchError(f"unknown regression suite kind {kind!r}")


def make_suite(name: str, data_root: Path, out: Path, seed: int = 0) -> Path:
    """Write suite `name`'s images and CSV (path, labels|value, split) under `out`; returns the CSV."""
    source, kind, size, n_train, n_val = SUITES[name]
    root = data_root / source
    if not root.is_dir():
        raise BenchError(f"{root} not found: the suites are made from the shared data")
    rows = []
    for split, n in (("train", n_train), ("val", n_val)):
        rng = random.Random(f"{seed}:{name}:{split}")
        pool = _source_images(root, split)
        for i in range(n):
            path = out / "images" / f"{split}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind.startswith("mosaic"):
                count = int(kind[-1])
                picked = rng.sample(pool, count)
                with_open = [Image.open(p) for p, _ in picked]
                _mosaic(with_open, count, size, rng).save(path)
                rows.append({"path": f"images/{path.name}", "labels": ";".join(sorted({c for _, c in picked})),
                             "split": split})
            elif kind == "digit":
                p, label = pool[rng.randrange(len(pool))] if n > len(pool) else pool[i * len(pool) // n]
                _square(Image.open(p), size).save(path)
                rows.append({"path": f"images/{path.name}", "value": float(label), "split": split})
            else:
                p, _ = pool[i % len(pool)]
                image, value = _regression_image(kind, Image.open(p), size, rng)
                image.save(path)
                rows.append({"path": f"images/{path.name}", "value": value, "split": split})
    csv = out / f"{name}.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def _config(csv: Path, name: str, backbone: str, weights: str, epochs: int, seed: int, runs: Path):
    from ftui.config import TrainConfig

    return TrainConfig(data=str(csv), backbone=backbone, weights=weights, image_size=SUITES[name][2],
                       epochs=epochs, seed=seed, device="cpu", runs_dir=str(runs))


def run_default(csv: Path, name: str, backbone: str, weights: str, epochs: int, seed: int) -> dict[str, Any]:
    """ftui's defaults through a real job; the kept model's val numbers from its evaluation.json."""
    from ftui.jobs import run_training
    from ftui.runs import RunStore

    with tempfile.TemporaryDirectory(prefix="ftui-bench-tasks-") as tmp:
        config = _config(csv, name, backbone, weights, epochs, seed, Path(tmp))
        start = time.perf_counter()
        result, folder = run_training(config, RunStore(tmp), threading.Event())
        if result.status != "done" or folder is None:
            raise BenchError(f"{name}: default run {result.status}: {result.message}")
        evaluation = json.loads(folder.evaluation_path.read_text())
    return {"evaluation": evaluation, "seconds": time.perf_counter() - start, "notes": result.notes}


def run_reference(csv: Path, name: str, backbone: str, weights: str, epochs: int, seed: int) -> dict[str, Any]:
    """The plain hand fine-tune on the same split (the CSV's split column), images and size."""
    from ftui.bench.reference import plain_task_fine_tune
    from ftui.data.datasets import load_dataset
    from ftui.models.backbones import build
    from ftui.train.batches import transform_settings
    from ftui.train.trainer import seed_everything

    dataset = load_dataset(csv)
    config = _config(csv, name, backbone, weights, epochs, seed, Path("."))
    settings = transform_settings(config)
    seed_everything(seed)
    model = build(backbone, len(dataset.classes), weights=weights)
    start = time.perf_counter()
    out = plain_task_fine_tune(model, dataset, settings, epochs, seed=seed)
    return {**out, "seconds": time.perf_counter() - start}


def _headline(task: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    if task == "multilabel":
        return {"metric": "mAP", "value": evaluation["map"], "ci95": evaluation["map_ci95"]}
    return {"metric": "MAE", "value": evaluation["mae"], "ci95": evaluation["mae_ci95"],
            "baseline": evaluation["mae_mean_baseline"], "r2": evaluation["r2"]}


def bench_suite(name: str, data_root: Path, backbone: str, weights: str, epochs: int, seed: int,
                log: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"ftui-suite-{name}-") as tmp:
        csv = make_suite(name, data_root, Path(tmp), seed=0)
        log(f"{name}: default")
        default = run_default(csv, name, backbone, weights, epochs, seed)
        log(f"{name}: reference")
        reference = run_reference(csv, name, backbone, weights, epochs, seed)
    task = default["evaluation"]["task"]
    row = {"suite": name, "task": task, "default": _headline(task, default["evaluation"]),
           "default_seconds": round(default["seconds"], 1), "reference": reference["headline"],
           "reference_seconds": round(reference["seconds"], 1), "notes": default["notes"]}
    d, r = row["default"]["value"], row["reference"]["value"]
    row["holds"] = (d >= r - 0.01) if task == "multilabel" else (d <= 1.05 * r)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| suite | task | ftui default | hand reference | mean baseline | bar | holds | s (default / ref) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        d, r = row["default"], row["reference"]
        bar = ">= ref - 0.01 mAP" if row["task"] == "multilabel" else "<= 1.05 x ref MAE"
        base = f"{d['baseline']:.4g}" if "baseline" in d else ""
        lines.append(f"| {row['suite']} | {row['task']} | {d['metric']} {d['value']:.4g} "
                     f"[{d['ci95'][0]:.4g}, {d['ci95'][1]:.4g}] | {r['metric']} {r['value']:.4g} | {base} | {bar} | "
                     f"{'yes' if row['holds'] else 'NO'} | {row['default_seconds']} / {row['reference_seconds']} |")
    return "\n".join(lines)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=list(SUITES))
    parser.add_argument("--data-root", default=str(SHARED / "data"))
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")


def run_cli(args: argparse.Namespace) -> int:
    rows = []
    for name in args.suites:
        rows.append(bench_suite(name, Path(args.data_root), args.backbone, args.weights, args.epochs, args.seed,
                                lambda line: print(line, file=sys.stderr, flush=True)))
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0
