"""Compare two runs on the same images: curves overlaid, per-class recall deltas, and the images that
flipped right->wrong or wrong->right. `ftui compare RUN_A RUN_B` prints it; the app shows it.

Both runs are judged on one dataset (by default run B's: the data as it is after the fixes), so a relabel
between the runs counts against A's old answer, which is what "did the fix help" asks."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ftui.errors import FtuiError

FLIP_COLUMNS = ["path", "true", "predicted_a", "predicted_b", "change"]
RIGHT_TO_WRONG = "right->wrong"
WRONG_TO_RIGHT = "wrong->right"


class CompareError(FtuiError):
    """Two runs that cannot be compared; the message says why."""


@dataclass
class Comparison:
    """What changed between run A and run B on one split of one dataset."""

    run_a: str
    run_b: str
    data: str
    split: str
    accuracy_a: float
    accuracy_b: float
    num_items: int
    curves: pd.DataFrame  # epoch, run, metric, value (long form, for overlaid plots)
    per_class: pd.DataFrame  # class, support, recall_a, recall_b, delta
    flipped: pd.DataFrame  # FLIP_COLUMNS, right->wrong first
    left_out: int = 0  # images whose class one of the runs does not know

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a, "run_b": self.run_b, "data": self.data, "split": self.split,
            "accuracy_a": self.accuracy_a, "accuracy_b": self.accuracy_b, "num_items": self.num_items,
            "left_out": self.left_out, "per_class": self.per_class.to_dict(orient="records"),
            "flipped": self.flipped.to_dict(orient="records"),
        }

    def summary(self) -> str:
        counts = self.flipped["change"].value_counts()
        return (f"{self.split} accuracy {self.accuracy_a:.1%} -> {self.accuracy_b:.1%} on {self.num_items} images; "
                f"{int(counts.get(WRONG_TO_RIGHT, 0))} fixed (wrong->right), "
                f"{int(counts.get(RIGHT_TO_WRONG, 0))} broken (right->wrong)")


def curves(folders: dict[str, Any]) -> pd.DataFrame:
    """Both runs' epoch metrics in long form: epoch, run, metric (val_acc, train_loss...), value."""
    frames = []
    for name, folder in folders.items():
        metrics = folder.metrics()
        if metrics.empty:
            continue
        cols = [c for c in ("train_loss", "val_loss", "train_acc", "val_acc") if c in metrics.columns]
        long = metrics.reset_index(drop=True).assign(epoch=range(1, len(metrics) + 1))
        long = long.melt(id_vars="epoch", value_vars=cols, var_name="metric", value_name="value")
        frames.append(long.assign(run=name))
    if not frames:
        return pd.DataFrame(columns=["epoch", "run", "metric", "value"])
    return pd.concat(frames, ignore_index=True)[["epoch", "run", "metric", "value"]]


def flip_counts(true: list, predicted_a: list, predicted_b: list) -> dict[str, Any]:
    """How B changed A's answers on the same images: right->wrong, wrong->right, the accuracy gain of B and
    its paired 95% interval (ftui.stats.paired_gain_interval). Used for TTA (A: plain, B: with TTA) and
    ensembles (A: the best member, B: the ensemble)."""
    from ftui.stats import paired_gain_interval

    right_a = [t == p for t, p in zip(true, predicted_a)]
    right_b = [t == p for t, p in zip(true, predicted_b)]
    fixed = sum(1 for a, b in zip(right_a, right_b) if b and not a)
    broken = sum(1 for a, b in zip(right_a, right_b) if a and not b)
    gain, low, high = paired_gain_interval(fixed, broken, len(true))
    return {"n": len(true), "accuracy_a": sum(right_a) / max(len(true), 1), "accuracy_b": sum(right_b) / max(len(true), 1),
            WRONG_TO_RIGHT: fixed, RIGHT_TO_WRONG: broken, "gain": gain, "gain_ci95": [low, high]}


def _predict(run, paths: list[str], device: str) -> list[str]:
    from ftui.results.predict import Predictor

    logits = Predictor(run, device=device).logits(paths)
    return [run.classes[int(i)] for i in logits.argmax(dim=1)]


def compare_runs(run_a: str | Path, run_b: str | Path, data: str | None = None, split: str = "val",
                 device: str = "cpu") -> Comparison:
    """Predict `split` of `data` (default: run B's dataset) with both runs and line the answers up."""
    from ftui.data.datasets import load_dataset
    from ftui.results.loading import load_run
    from ftui.runs import RunFolder

    a, b = load_run(run_a, device=device), load_run(run_b, device=device)
    source = data or b.config.data
    if not source:
        raise CompareError("run B records no dataset; pass the data to compare on")
    dataset = load_dataset(source, val_fraction=b.config.val_fraction, seed=b.config.data_seed,
                           task=b.config.task)
    items = dataset.split(split)
    known = set(a.classes) & set(b.classes)
    usable = [it for it in items if dataset.classes[it.label] in known]
    if not usable:
        raise CompareError(f"no {split} images of a class both runs know ({sorted(known)})")
    paths = [it.path for it in usable]
    truth = [dataset.classes[it.label] for it in usable]
    pred_a, pred_b = _predict(a, paths, device), _predict(b, paths, device)
    table = pd.DataFrame({"path": paths, "true": truth, "predicted_a": pred_a, "predicted_b": pred_b})
    table["right_a"] = table["true"] == table["predicted_a"]
    table["right_b"] = table["true"] == table["predicted_b"]
    per_class = table.groupby("true").agg(support=("path", "size"), recall_a=("right_a", "mean"),
                                          recall_b=("right_b", "mean")).reset_index().rename(columns={"true": "class"})
    per_class["delta"] = per_class["recall_b"] - per_class["recall_a"]
    per_class = per_class.round(4).sort_values("delta", kind="stable", ignore_index=True)
    flips = table[table["right_a"] != table["right_b"]].copy()
    flips["change"] = flips["right_a"].map({True: RIGHT_TO_WRONG, False: WRONG_TO_RIGHT})
    flips = flips.sort_values(["change", "path"], key=lambda s: s.map({RIGHT_TO_WRONG: 0, WRONG_TO_RIGHT: 1})
                              if s.name == "change" else s, ignore_index=True)[FLIP_COLUMNS]
    return Comparison(
        run_a=str(run_a), run_b=str(run_b), data=str(getattr(dataset, "root", source)), split=split,
        accuracy_a=float(table["right_a"].mean()), accuracy_b=float(table["right_b"].mean()),
        num_items=len(table), curves=curves({"A": RunFolder(Path(run_a)), "B": RunFolder(Path(run_b))}),
        per_class=per_class, flipped=flips, left_out=len(items) - len(usable),
    )


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", metavar="RUN_A", help="the earlier run folder")
    parser.add_argument("run_b", metavar="RUN_B", help="the later run folder (its dataset is used)")
    parser.add_argument("--data", help="compare on this dataset instead of run B's")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def run_cli(args: argparse.Namespace) -> int:
    result = compare_runs(args.run_a, args.run_b, data=args.data, split=args.split)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"A: {result.run_a}\nB: {result.run_b}\n{result.summary()}")
    if result.left_out:
        print(f"({result.left_out} images left out: their class is unknown to one of the runs)")
    print("\nper-class recall (B - A):")
    print(result.per_class.to_string(index=False))
    if not result.flipped.empty:
        print("\nflipped images:")
        print(result.flipped.to_string(index=False, max_colwidth=70))
    return 0
