"""Does a sweep beat the default? `python scripts/sweep_suite.py [--trials 10] [--budget-minutes 10] [--out DIR]`.

For each suite dataset in ../shared/data (train/ + val/): the sweep sees only train/ (a view folder that links
to it; its val split is generated from train, as a user without a val folder gets), so the dataset's own val/
stays untouched for the comparison. Trial 0 is the default config; the table compares it with the sweep's
best trial, both evaluated on the untouched val/ with the Wilson interval. The base: mobilenet_v2 with the
shared ImageNet weights at 112 px (the project's small suite setting), ftui's other defaults.
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
from ftui.stats import format_accuracy

SHARED = ROOT.parent / "shared"
DATASETS = ("hymenoptera_data", "clothing_small", "mnist_small")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--budget-minutes", type=float, default=10.0)
    parser.add_argument("--out", default="/tmp/ftui_sweep_suite")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    args = parser.parse_args()
    out = Path(args.out)
    weights = SHARED / "weights" / "mobilenet_v2_imagenet_dequantized.pth"
    rows = []
    for name in args.datasets.split(","):
        view = out / "views" / name
        view.mkdir(parents=True, exist_ok=True)
        if not (view / "train").exists():
            os.symlink(SHARED / "data" / name / "train", view / "train")
        base = TrainConfig(data=str(view), backbone="mobilenet_v2", weights=str(weights), image_size=112,
                           device="cpu", runs_dir=str(out / "runs" / name))
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
            scores[label] = (ev.correct, ev.num_items, record)
        rows.append({"dataset": name, "trials": len(records),
                     "complete": sum(r.state == "complete" for r in records),
                     "pruned": sum(r.state == "pruned" for r in records),
                     "default_val": format_accuracy(*scores["default"][:2]),
                     "best_val": format_accuracy(*scores["best"][:2]),
                     "delta_points": round(100 * (scores["best"][0] / scores["best"][1]
                                                  - scores["default"][0] / scores["default"][1]), 1),
                     "best_trial": best.number, "best_params": best.params,
                     "minutes": round((time.time() - started) / 60, 1)})
        print(json.dumps(rows[-1]), flush=True)
    print("| dataset | trials (complete/pruned) | default on val/ | sweep best on val/ | delta (points) | "
          "best trial params | minutes |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["best_params"]
        params = (f"lr {p['lr']:.1e}, {p['epochs']} ep, {p['train_groups']}, {p['image_size']} px, "
                  f"aug {p['aug_strength']:.2f}")
        print(f"| {r['dataset']} | {r['trials']} ({r['complete']}/{r['pruned']}) | {r['default_val']} | "
              f"{r['best_val']} | {r['delta_points']:+.1f} | trial {r['best_trial']}: {params} | {r['minutes']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
