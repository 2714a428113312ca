"""Does a sweep beat the default? `python scripts/sweep_suite.py [--trials 10] [--budget-minutes 10] [--out DIR]
[--datasets a,b] [--image-size 112] [--epochs 5]`.

For each suite dataset in ../shared/data (train/ + val/): the sweep sees only train/ (a view folder that links
to it; its val split is generated from train, as a user without a val folder gets), so the dataset's own val/
stays untouched for the comparison. Trial 0 is the default config; the table compares it with the sweep's
best trial, both evaluated on the untouched val/ with the Wilson interval, and the gain with its paired
interval (only the val images the two models disagree on carry the difference). The base: mobilenet_v2 with the
shared ImageNet weights at 112 px (the project's small suite setting; --image-size and --epochs shrink it for a
bounded run on a small CPU), ftui's other defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftui.bench.sweep import Sweep, SweepSettings
from ftui.config import TrainConfig
from ftui.results.evaluate import evaluate
from ftui.stats import format_accuracy, paired_gain_interval

SHARED = ROOT.parent / "shared"
DATASETS = ("hymenoptera_data", "clothing_small", "mnist_small")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--budget-minutes", type=float, default=10.0)
    parser.add_argument("--out", default="/tmp/ftui_sweep_suite")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--image-size", type=int, default=112, help="the base config's image size")
    parser.add_argument("--epochs", type=int, default=None, help="the base config's epochs (default: ftui's)")
    args = parser.parse_args()
    out = Path(args.out)
    weights = SHARED / "weights" / "mobilenet_v2_imagenet_dequantized.pth"
    rows = []
    for name in args.datasets.split(","):
        view = out / "views" / name
        view.mkdir(parents=True, exist_ok=True)
        if not (view / "train").exists():
            os.symlink(SHARED / "data" / name / "train", view / "train")
        base = TrainConfig(data=str(view), backbone="mobilenet_v2", weights=str(weights), image_size=args.image_size,
                           device="cpu", runs_dir=str(out / "runs" / name))
        if args.epochs is not None:
            base = base.replace(epochs=args.epochs)
        started = time.time()
        sweep = Sweep(SweepSettings(base=base, trials=args.trials, budget_minutes=args.budget_minutes))
        records = sweep.run()
        best = sweep.best()
        default = records[0]
        if best is None or default.state != "complete":
            note = {"dataset": name, "trials": len(records), "states": [r.state for r in records],
                    "default": (default.state, default.best_val_acc, default.note),
                    "minutes": round((time.time() - started) / 60, 1),
                    "result": "no comparison: the default trial did not complete within the budget"}
            print(json.dumps(note), flush=True)
            continue
        val = SHARED / "data" / name / "val"
        scores = {}
        for label, record in (("default", default), ("best", best)):
            ev = evaluate(Path(base.runs_dir) / record.run_id, split="all", dataset=str(val), device="cpu")
            scores[label] = (ev.correct, ev.num_items, ev.predictions)
        gain, low, high = _paired_gain(scores["default"][2], scores["best"][2])
        rows.append({"dataset": name, "trials": len(records),
                     "complete": sum(r.state == "complete" for r in records),
                     "pruned": sum(r.state == "pruned" for r in records),
                     "default_val": format_accuracy(*scores["default"][:2]),
                     "best_val": format_accuracy(*scores["best"][:2]),
                     "gain_points": [round(100 * gain, 1), round(100 * low, 1), round(100 * high, 1)],
                     "best_trial": best.number, "best_params": best.params,
                     "minutes": round((time.time() - started) / 60, 1)})
        print(json.dumps(rows[-1]), flush=True)
    print("| dataset | trials (complete/pruned) | default on val/ | sweep best on val/ | gain, points [95%] | "
          "best trial params | minutes |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["best_params"]
        params = (f"lr {p['lr']:.1e}, {p['epochs']} ep, {p['train_groups']}, {p['image_size']} px, "
                  f"aug {p['aug_strength']:.2f}")
        print(f"| {r['dataset']} | {r['trials']} ({r['complete']}/{r['pruned']}) | {r['default_val']} | "
              f"{r['best_val']} | {_gain_text(r['gain_points'])} | trial {r['best_trial']}: {params} | {r['minutes']} |")
    return 0


def _paired_gain(default, best) -> tuple[float, float, float]:
    """The best trial's accuracy gain over the default on the same val images, with its paired interval."""
    merged = default.merge(best, on=["path", "true"], suffixes=("_default", "_best"))
    right_default = merged["predicted_default"] == merged["true"]
    right_best = merged["predicted_best"] == merged["true"]
    return paired_gain_interval(int((~right_default & right_best).sum()), int((right_default & ~right_best).sum()),
                                len(merged))


def _gain_text(points: list[float]) -> str:
    return f"{points[0]:+.1f} [{points[1]:+.1f}, {points[2]:+.1f}]"


if __name__ == "__main__":
    raise SystemExit(main())
