"""Ensembles of runs (model fusion): one run whose answer averages its members' calibrated probabilities.

`python -m ftui ensemble RUN_A RUN_B [...] --out RUN_E` writes a run folder like any other (config.json,
classes.json, status.json, best.pt, evaluation.json), so Predict, Evaluate, Grad-CAM, export (.onnx of the
combined graph) and the demo page work on it unchanged. Members must share their classes and preprocessing
(image size, resize, mean, std); their backbones may differ.

The combined module outputs log(mean_i softmax(z_i / T_i)) + mean_i logsumexp(z_i): softmax of it is exactly
the mean of the members' calibrated probabilities (adding one number per image to every logit does not move a
softmax), and its energy score (logsumexp) is the members' mean energy, so "none of these" keeps working.
The ensemble's own temperature stays 1 (its members are calibrated already); its abstain threshold is fitted
on val like any run's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ftui.errors import FtuiError
from ftui.models.ensemble import Ensemble
from ftui.results.loading import LoadedRun, load_run

ENSEMBLE = "ensemble"
MAX_MEMBERS = 8


class EnsembleError(FtuiError):
    """Runs that cannot be combined (different classes or preprocessing, too few or too many)."""


def _same_preprocessing(runs: list[LoadedRun]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if list(run.classes) != list(first.classes):
            raise EnsembleError(f"run {run.id} has classes {run.classes}, run {first.id} {first.classes}: "
                                "members must share their classes (same names, same order)")
        for key in ("image_size", "resize_size", "mean", "std"):
            if [float(v) for v in _as_list(run.transform[key])] != [float(v) for v in _as_list(first.transform[key])]:
                raise EnsembleError(f"run {run.id} has {key} {run.transform[key]}, run {first.id} "
                                    f"{first.transform[key]}: members must see the same input (retrain one at "
                                    "the other's image size)")


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def build_ensemble(runs: list[LoadedRun]) -> Ensemble:
    """The combined module of already loaded runs (checked: same classes and preprocessing)."""
    if not 2 <= len(runs) <= MAX_MEMBERS:
        raise EnsembleError(f"an ensemble takes 2 to {MAX_MEMBERS} runs, got {len(runs)}")
    _same_preprocessing(runs)
    return Ensemble([r.model for r in runs], [r.trust.temperature for r in runs]).eval()


def member_meta(run: LoadedRun) -> dict[str, Any]:
    """What best.pt records of each member, enough to rebuild it (its weights are in the state_dict)."""
    return {"run": run.id, "path": str(run.path), "backbone": run.config.backbone,
            "temperature": float(run.trust.temperature)}


def make_ensemble(run_dirs: list[str | Path], out: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Write the ensemble run folder `out`, calibrate and evaluate it on val, and measure it against its best
    member on the same val images; returns evaluation.json's "ensemble" entry."""
    from ftui.results.calibrate import calibrate_and_evaluate
    from ftui.runs import RunStore, save_checkpoint, write_json_atomic

    runs = [load_run(d) for d in run_dirs]
    model = build_ensemble(runs)
    first = runs[0]
    config = first.config.replace(run_name=ENSEMBLE)
    folder = RunStore(Path(out).parent).create(config, out)
    folder.write_classes(first.classes)
    t = first.transform
    meta = {"classes": list(first.classes), "backbone": ENSEMBLE, "num_classes": len(first.classes),
            "image_size": t["image_size"], "resize_size": t["resize_size"], "mean": list(t["mean"]),
            "std": list(t["std"]), "members": [member_meta(r) for r in runs], "epoch": 0}
    save_checkpoint(folder.best_path, model, meta)
    evaluation = calibrate_and_evaluate(folder.path, device=device)
    report = gain_over_members(runs, evaluation, device)
    write_json_atomic(folder.evaluation_path, {**evaluation.to_dict(), "ensemble": report})
    folder.update_status(status="done", backbone=f"{ENSEMBLE}: " + " + ".join(r.config.backbone for r in runs),
                         best_val_acc=evaluation.accuracy, epochs_done=0, members=[r.id for r in runs],
                         ended=time.strftime("%Y-%m-%d %H:%M:%S"), message=f"ensemble of {len(runs)} runs")
    return report


def gain_over_members(runs: list[LoadedRun], evaluation, device: str = "cpu") -> dict[str, Any]:
    """Each member's accuracy on the ensemble's val images, and the ensemble's gain over the best member
    with its paired 95% interval and the images it flipped."""
    from ftui.results.compare import flip_counts
    from ftui.results.predict import Predictor

    paths = [it.path for it in evaluation.items]
    true = [evaluation.classes[int(t)] for t in evaluation.targets]
    ours = list(evaluation.predictions["predicted"])
    members = []
    for run in runs:
        logits = Predictor(run, device=device).logits(paths)
        predicted = [run.classes[int(i)] for i in logits.argmax(1)]
        members.append({"run": run.id, "backbone": run.config.backbone, "predicted": predicted,
                        "accuracy": sum(p == t for p, t in zip(predicted, true)) / len(true)})
    best = max(members, key=lambda m: m["accuracy"])
    flips = flip_counts(true, best["predicted"], ours)
    return {"members": [{k: m[k] for k in ("run", "backbone", "accuracy")} for m in members],
            "best_member": best["run"], "best_member_accuracy": best["accuracy"],
            "accuracy": evaluation.accuracy, **{k: flips[k] for k in flips if k not in ("accuracy_a", "accuracy_b")}}


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """`ftui ensemble RUN_A RUN_B [...] --out RUN_E`."""
    parser.add_argument("runs", nargs="+", help="two or more finished runs with the same classes")
    parser.add_argument("--out", required=True, help="the ensemble's run folder (must be new or empty)")
    parser.add_argument("--device", default="cpu", help="cpu | auto | cuda | mps")


def run_cli(args: argparse.Namespace) -> int:
    report = make_ensemble(args.runs, args.out, args.device)
    low, high = report["gain_ci95"]
    for m in report["members"]:
        print(f"member {m['run']} ({m['backbone']}): val accuracy {m['accuracy']:.3f}")
    print(f"ensemble: val accuracy {report['accuracy']:.3f}, gain over the best member {report['gain']:+.3f} "
          f"[95% interval {low:+.3f}, {high:+.3f}], {report['wrong->right']} wrong->right, "
          f"{report['right->wrong']} right->wrong of {report['n']}")
    print(f"run folder: {args.out}")
    return 0
