"""`python -m ftui.bench.cacheviews DATA... --views 1,4 --seeds 0,1,2`: do augmented views help cached phases?

A phase whose frozen layers' outputs are cached (head-only and `last:N` runs, the default recipe's head phase)
trains on `feature_cache_views` stored views of each train image: view 0 is the unaugmented image, views 1..n-1
are augmented draws (the Augment step's settings), one more view computed per epoch until all are stored. This
bench trains the head alone (train_groups=head, cosine, the epoch budget) with each number of views on the same
split and prints val accuracy (mean over seeds, each seed's value) and wall time, so the default is chosen on
the suite's numbers, not on one set.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

from ftui.config import TrainConfig


def run_one(data: str, views: int, seed: int, args: argparse.Namespace) -> dict:
    from ftui.data.datasets import load_dataset
    from ftui.models.backbones import build, layer_groups
    from ftui.train.trainer import fit, seed_everything

    config = TrainConfig(data=data, backbone=args.backbone, weights=args.weights, image_size=args.image_size,
                         epochs=args.epochs, train_groups="head", scheduler="cosine", early_stopping_patience=0,
                         feature_cache_views=views, seed=seed, device="cpu")
    dataset = load_dataset(data, val_fraction=config.val_fraction, seed=0)
    seed_everything(seed)
    model = build(config.backbone, len(dataset.classes), weights=config.weights)
    start = time.perf_counter()
    result = fit(config, dataset, model, layer_groups(model, config.backbone), [], threading.Event())
    if result.status != "done":
        raise SystemExit(f"{data} views {views} seed {seed}: {result.status} {result.message}")
    return {"val_acc": result.best_val_acc, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftui.bench.cacheviews", description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--views", default="1,4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--image-size", dest="image_size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    views = [int(v) for v in args.views.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"head only on cached features: {args.backbone}, {args.image_size} px, {args.epochs} epochs, "
          f"seeds {seeds}; cells: val acc mean (each seed) / mean wall s", flush=True)
    print("| dataset | " + " | ".join(f"{v} view(s)" for v in views) + " |")
    print("|---|" + "---|" * len(views))
    for data in args.data:
        cells = []
        for v in views:
            runs = [run_one(data, v, s, args) for s in seeds]
            accs = [r["val_acc"] for r in runs]
            cells.append(f"{statistics.mean(accs):.3f} ({', '.join(f'{a:.3f}' for a in accs)}) / "
                         f"{statistics.mean(r['seconds'] for r in runs):.0f} s")
        print(f"| {Path(data).name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
