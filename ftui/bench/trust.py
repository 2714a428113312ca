"""`python -m ftui bench-trust DATA... [demo]`: calibration, "none of these", TTA and ensembles on every set.

For each set it trains real runs through the job (so the post-training calibration is the one users get):
seed 0 and seed 1, plus (sets with 3+ classes) a run without the last quarter of its classes. Then it prints:
- ECE (15 bins) of val before and after temperature scaling; "after" is 2-fold on val (each half scaled by the
  temperature fitted on the other half), so the number is not the optimistic in-sample one. "ECE floor": the
  mean ECE a perfectly calibrated model with the same confidences shows on this many images (sampling noise).
- far-OOD: the run's val images against val images of the OTHER sets ("none of these"), AUROC and FPR at 95%
  TPR for the run's stored score (Mahalanobis on normalised features), energy, MSP and k-NN.
- near-OOD: the held-out run's val images of its kept classes against the val images of the classes it never
  saw (e.g. clothing without shorts/skirt/t-shirt shown shorts): the hard, honest case.
- TTA: accuracy gain of flip + 4 corner crops over the plain view, paired 95% interval, right->wrong and
  wrong->right counts.
- ensemble: seed 0 + seed 1 averaged, gain over the better member with its interval and flips.

Runs are kept in --runs-dir and reused when rerun (delete the folder to retrain).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftui.errors import FtuiError


class BenchError(FtuiError):
    """A dataset that is missing or settings out of range."""


@dataclass
class TrustSettings:
    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    image_size: int = 112
    epochs: int = 3
    runs_dir: str = "runs-bench-trust"
    ood_per_set: int = 100


def _name(data: str) -> str:
    return "demo" if data == "demo" else Path(data).name


def _path(data: str) -> str:
    from ftui.data.demo import ensure_demo_dataset

    return str(ensure_demo_dataset()) if data == "demo" else data


def train_run(data: str, settings: TrustSettings, seed: int, tag: str, log) -> Path:
    """A finished, calibrated run of `data` (reused when its folder already has a calibrated evaluation)."""
    from ftui.config import TrainConfig
    from ftui.jobs import run_training
    from ftui.runs import RunStore

    run_dir = Path(settings.runs_dir) / f"{tag}-s{seed}"
    saved = run_dir / "evaluation.json"
    if saved.is_file() and "ood_method" in json.loads(saved.read_text()):
        return run_dir
    if saved.is_file() and "temperature" in json.loads(saved.read_text()):
        # Trained and calibrated before the feature score existed: fit it (and the temperature) again on the
        # same weights, no retraining.
        from ftui.results.calibrate import calibrate_and_evaluate
        from ftui.runs import write_json_atomic

        log(f"calibrating {run_dir.name} again")
        write_json_atomic(saved, calibrate_and_evaluate(run_dir).to_dict())
        return run_dir
    log(f"training {run_dir.name}")
    config = TrainConfig(data=data, backbone=settings.backbone, weights=settings.weights,
                         image_size=settings.image_size, epochs=settings.epochs, seed=seed, device="cpu",
                         runs_dir=settings.runs_dir)
    result, _folder = run_training(config, RunStore(settings.runs_dir), threading.Event(), run_dir=run_dir)
    if result.status != "done":
        raise BenchError(f"training {run_dir} ended {result.status}: {result.message}")
    return run_dir


def heldout_view(data: str, keep: list[str], folder: Path) -> str:
    """A folder of links (no copies) holding only the `keep` classes of `data` (its train/ and val/ when it
    has them, else its class folders)."""
    source = Path(data).resolve()
    splits = [s for s in ("train", "val") if (source / s).is_dir()] or [""]
    for split in splits:
        for name in keep:
            link = folder / split / name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(source / split / name, target_is_directory=True)
    return str(folder)


def val_items(run_dir: Path) -> tuple[list[str], list[str]]:
    """The run's val image paths and their class names."""
    from ftui.data.datasets import load_dataset
    from ftui.results.loading import load_run

    run = load_run(run_dir)
    dataset = load_dataset(run.config.data, val_fraction=run.config.val_fraction, seed=run.config.data_seed)
    items = dataset.split("val")
    return [it.path for it in items], [dataset.classes[it.label] for it in items]


def sample(paths: list[str], n: int, seed: int = 0) -> list[str]:
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed)).tolist()
    return [paths[i] for i in order[:n]]


def _ood(run_dir: Path, inside: list[str], outside: list[str]) -> dict[str, Any]:
    """AUROC / FPR95 of the run's stored score, energy, MSP, and k-NN (Sun et al. 2022, k = 5, fitted here on
    the same train images as the stored Mahalanobis statistics) for comparison."""
    from ftui.results.evaluate import run_dataset, run_targets
    from ftui.results.oodscore import NearestNeighbour, fit_sample
    from ftui.results.predict import Predictor
    from ftui.results.trust import ood_report

    predictor, features = Predictor(run_dir), Predictor(run_dir, features=True)
    (zi, si), (zo, so) = predictor.scored(inside), predictor.scored(outside)
    scores = {predictor.trust.ood_method: (si, so)} if predictor.trust.ood_method != "energy" else {}
    _, fi = features.logits_and_features(inside)
    if fi is not None:
        dataset = run_dataset(features.run)
        train = list(dataset.split("train"))
        picked = fit_sample(run_targets(features.run, dataset, train).tolist())
        knn = NearestNeighbour.fit(features.logits_and_features([train[i].path for i in picked])[1])
        scores["knn"] = (knn(fi), knn(features.logits_and_features(outside)[1]))
    return ood_report(zi, zo, predictor.trust.temperature, scores, predictor.trust.ood_method)


def _tta(run_dir: Path, paths: list[str], true: list[str]) -> dict[str, Any]:
    from ftui.results.compare import flip_counts
    from ftui.results.predict import Predictor

    plain, tta = Predictor(run_dir), Predictor(run_dir, tta=True)
    names = plain.classes
    a = [names[int(i)] for i in plain.logits(paths).argmax(1)]
    b = [names[int(i)] for i in tta.logits(paths).argmax(1)]
    return flip_counts(true, a, b)


def bench_set(data: str, others: list[str], settings: TrustSettings, log) -> dict[str, Any]:
    """One row of the table for `data` (others: the suite's other sets, its far-OOD images)."""
    from ftui.results.ensemble import make_ensemble
    from ftui.results.trust import ece_floor

    name, path = _name(data), _path(data)
    runs = [train_run(path, settings, seed, name, log) for seed in (0, 1)]
    ev = json.loads((runs[0] / "evaluation.json").read_text())
    row: dict[str, Any] = {"set": name, "classes": len(ev["classes"]), "val": ev["num_items"],
                           "accuracy": ev["accuracy"], "temperature": ev["temperature"],
                           "ece_before": ev["ece_before"], "ece_after": ev["ece_after"],
                           "abstain_rate": ev.get("abstain_rate")}
    paths, true = val_items(runs[0])
    row["ece_floor"] = ece_floor(torch.tensor(ev["probabilities"]))
    outside = [p for other in others for p in sample(val_items_of(other), settings.ood_per_set)]
    row["far_ood"] = _ood(runs[0], paths, outside)
    row["far_ood"]["sets"] = [_name(o) for o in others]
    classes = ev["classes"]
    if len(classes) >= 3:
        held = classes[-max(1, len(classes) // 4):]
        keep = [c for c in classes if c not in held]
        view = heldout_view(path, keep, Path(settings.runs_dir) / "views" / name)
        near_run = train_run(view, settings, 0, f"{name}-heldout", log)
        near_paths, _ = val_items(near_run)
        unseen = [p for p, c in zip(paths, true) if c in held]
        row["near_ood"] = _ood(near_run, near_paths, unseen)
        row["near_ood"]["held_out"] = held
    log(f"{name}: TTA")
    row["tta"] = _tta(runs[0], paths, true)
    log(f"{name}: ensemble")
    ens_dir = Path(settings.runs_dir) / f"{name}-ensemble"
    if (ens_dir / "evaluation.json").is_file():
        row["ensemble"] = json.loads((ens_dir / "evaluation.json").read_text())["ensemble"]
    else:
        row["ensemble"] = make_ensemble(runs, ens_dir)
    return row


def val_items_of(data: str) -> list[str]:
    """Val image paths of a suite set (its own val/ folder, or the generated split)."""
    from ftui.data.datasets import load_dataset

    return [it.path for it in load_dataset(_path(data), val_fraction=0.2, seed=0).split("val")]


def _gain(r: dict[str, Any]) -> str:
    low, high = r["gain_ci95"]
    return (f"{r['gain'] * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}] "
            f"({r['wrong->right']} w->r, {r['right->wrong']} r->w)")


SHORT = {"mahalanobis": "maha", "energy": "energy", "msp": "MSP", "knn": "kNN"}


def _auroc(r: dict[str, Any] | None) -> str:
    """'maha 0.981 (FPR95 0.08) · energy 0.663 · MSP 0.831 · kNN 0.950': the stored score first."""
    if not r:
        return "n/a (2 classes)"
    used = r.get("method", "energy")
    rest = [name for name in ("energy", "msp", "knn") if name in r and name != used]
    return (f"{SHORT.get(used, used)} **{r[used]['auroc']:.3f}** (FPR95 {r[used]['fpr95']:.2f}) · "
            + " · ".join(f"{SHORT[name]} {r[name]['auroc']:.3f}" for name in rest))


def format_table(rows: list[dict[str, Any]], title: str) -> str:
    """Markdown: one row per set."""
    head = ("| set | classes | val | accuracy | T | ECE before | ECE after (2-fold) | ECE floor | abstain on val | "
            "far-OOD AUROC: stored score (FPR95) · others | near-OOD AUROC (held out) | TTA gain, points [95%] | "
            "ensemble gain over best member, points [95%] |")
    lines = [title, "", head, "|" + "---|" * 13]
    for r in rows:
        near = _auroc(r.get("near_ood")) + (f" ({', '.join(r['near_ood']['held_out'])})" if r.get("near_ood") else "")
        lines.append(
            f"| {r['set']} | {r['classes']} | {r['val']} | {r['accuracy']:.3f} | {r['temperature']:.2f} | "
            f"{r['ece_before'] * 100:.1f}% | {r['ece_after'] * 100:.1f}% | {r['ece_floor'] * 100:.1f}% | "
            f"{(r['abstain_rate'] or 0) * 100:.1f}% | "
            f"{_auroc(r['far_ood'])} | {near} | {_gain(r['tta'])} | {_gain(r['ensemble'])} |")
    return "\n".join(lines)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", help="dataset folders with train/ and val/ (and 'demo')")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", default="imagenet", help="imagenet | none | a weights file")
    parser.add_argument("--image-size", dest="image_size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs-dir", dest="runs_dir", default="runs-bench-trust")
    parser.add_argument("--ood-per-set", dest="ood_per_set", type=int, default=100,
                        help="val images drawn from each other set as far-OOD (seeded)")
    parser.add_argument("--json", action="store_true")


def run_cli(args: argparse.Namespace) -> int:
    from ftui import devices

    for d in args.data:
        if d != "demo" and not Path(d).is_dir():
            raise BenchError(f"dataset not found: {d}")
    if len(args.data) < 2:
        raise BenchError("give at least two sets: each one's far-OOD images are the others'")
    if not 1 <= args.ood_per_set <= 2000 or not 1 <= args.epochs <= 100:
        raise BenchError("--ood-per-set must be 1..2000 and --epochs 1..100")
    devices.configure_threads()
    settings = TrustSettings(args.backbone, args.weights, args.image_size, args.epochs, args.runs_dir,
                             args.ood_per_set)

    def log(line: str) -> None:
        print(f"bench-trust: {line}", file=sys.stderr, flush=True)

    rows = []
    for d in args.data:
        rows.append(bench_set(d, [o for o in args.data if o != d], settings, log))
        log(json.dumps(rows[-1], default=str))
    title = (f"ftui bench-trust: {args.backbone}, weights {Path(args.weights).name}, {args.image_size} px, "
             f"{args.epochs} epochs, CPU ({torch.get_num_threads()} threads)")
    print(json.dumps({"title": title, "rows": rows}, indent=2, default=str) if args.json
          else format_table(rows, title))
    return 0
