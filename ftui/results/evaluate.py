"""Evaluate a trained run on a split: accuracy, per-class table, confusion matrix, worst mistakes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from ftui.errors import FtuiError
from ftui.results.loading import LoadedRun, load_run
from ftui.results.predict import Predictor

SPLITS = ("train", "val", "test", "all")


class EvaluateError(FtuiError):
    """A split or dataset that cannot be evaluated against this run."""


@dataclass
class Evaluation:
    """What `evaluate` measured on one split."""

    split: str
    accuracy: float
    num_items: int
    per_class: pd.DataFrame  # class, precision, recall, f1, support
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    classes: list[str]
    mistakes: pd.DataFrame  # path, true, predicted, confidence, loss; highest loss first
    # Every image: path, true, predicted, confidence (a confusion cell's images), and each image's class
    # probabilities in `classes` order (precision-recall curves), rounded to 4 decimals.
    predictions: pd.DataFrame | None = None
    probabilities: list[list[float]] | None = None
    # Calibration (ftui/results/trust.py): the run's temperature, ECE (15 bins) with T = 1 and with T,
    # the reliability diagram's bins (with T), the share the abstain threshold answers "unknown", and an
    # "ood" report when a folder of none-of-these images was scored. {} for other tasks.
    calibration: dict[str, Any] = field(default_factory=dict)
    ood: dict[str, Any] | None = None
    # What the numbers came from (not written to JSON): raw logits, targets (run class index), items.
    logits: torch.Tensor | None = field(default=None, repr=False)
    targets: torch.Tensor | None = field(default=None, repr=False)
    items: list | None = field(default=None, repr=False)

    @property
    def correct(self) -> int:
        return int(sum(self.confusion[i][i] for i in range(len(self.confusion))))

    @property
    def accuracy_ci95(self) -> tuple[float, float]:
        """The 95% Wilson interval of the accuracy: how far it could be off on this many images."""
        from ftui.stats import wilson_interval

        return wilson_interval(self.correct, self.num_items)

    @property
    def warnings(self) -> list[str]:
        """Classes with too few images here for their recall to mean much."""
        from ftui.data.datasets import MIN_VAL_PER_CLASS

        return [f"class {row['class']!r} has only {int(row['support'])} {self.split} image(s): its numbers are "
                f"not reliable (fewer than {MIN_VAL_PER_CLASS})"
                for row in self.per_class.to_dict(orient="records") if int(row["support"]) < MIN_VAL_PER_CLASS]

    def accuracy_text(self) -> str:
        """'0.954 [0.909, 0.977] (146/153)': accuracy, 95% Wilson interval, counts."""
        from ftui.stats import format_accuracy

        return format_accuracy(self.correct, self.num_items)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (per_class and mistakes as lists of records)."""
        lo, hi = self.accuracy_ci95
        return {
            "task": "classification", "split": self.split, "accuracy": self.accuracy, "num_items": self.num_items,
            "correct": self.correct, "accuracy_ci95": [round(lo, 4), round(hi, 4)],
            "ci_method": "wilson", "warnings": self.warnings,
            "classes": self.classes, "confusion": self.confusion,
            "per_class": self.per_class.to_dict(orient="records"),
            "mistakes": self.mistakes.to_dict(orient="records"),
            "predictions": [] if self.predictions is None else self.predictions.to_dict(orient="records"),
            "probabilities": self.probabilities or [],
            **self.calibration, **({"ood": self.ood} if self.ood else {}),
        }


def _items(dataset, split: str) -> list:
    if split not in SPLITS:
        raise EvaluateError(f"split must be one of {SPLITS}, got {split!r}")
    items = list(dataset.items) if split == "all" else list(dataset.split(split))
    if not items:
        raise EvaluateError(f"the dataset has no {split!r} images to evaluate")
    return items


def per_class_table(classes: list[str], confusion: torch.Tensor) -> pd.DataFrame:
    """precision, recall, f1 and support per class from a confusion matrix (rows = true)."""
    tp = confusion.diag().double()
    predicted = confusion.sum(0).double()
    support = confusion.sum(1).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    return pd.DataFrame({
        "class": classes, "precision": precision.numpy().round(4), "recall": recall.numpy().round(4),
        "f1": f1.numpy().round(4), "support": support.long().numpy(),
    })


def evaluate(
    run: LoadedRun | str | Path,
    split: str = "val",
    dataset=None,
    batch_size: int = 32,
    device: str = "cpu",
    ood: str | Path | None = None,
    tta: bool = False,
) -> Evaluation:
    """Evaluate `run` on `split` of `dataset` (a Dataset, a data path, or None for the run's own data);
    `ood`: a folder of images from none of the classes, scored for "none of these" (AUROC, FPR at 95% TPR); tta: test-time
    augmentation (flip + corner crops, ftui.results.predict.tta_views).
    A multilabel or regression run gets a `taskeval.TaskEvaluation` (its own metrics, same to_dict role)."""
    # Loaded on the CPU; the Predictor moves the model to `device` ("auto": the GPU when there is one).
    run = run if isinstance(run, LoadedRun) else load_run(run)
    dataset = run_dataset(run, dataset)
    items = _items(dataset, split)
    if run.kind != "classification":
        from ftui.results.taskeval import evaluate_task

        return evaluate_task(run, dataset, items, split, Predictor(run, device=device, batch_size=batch_size))
    targets = run_targets(run, dataset, items)
    predictor = Predictor(run, device=device, batch_size=batch_size, tta=tta)
    logits, inside = predictor.scored([it.path for it in items])
    evaluation = score(run, split, items, targets, logits, inside)
    if ood is not None:
        evaluation.ood = ood_scores(predictor, (logits, inside), ood)
    return evaluation


def run_dataset(run: LoadedRun, dataset=None):
    """`dataset` as a Dataset: a data path, or None for the run's own data, loaded with the run's split."""
    from ftui.data.datasets import load_dataset

    if dataset is None or isinstance(dataset, (str, Path)):
        source = run.config.data if dataset is None else str(dataset)
        dataset = load_dataset(source, val_fraction=run.config.val_fraction, seed=run.config.data_seed,
                               task=run.config.task)
    return dataset


def run_targets(run: LoadedRun, dataset, items: list) -> torch.Tensor:
    """The items' true classes as indices into the run's classes (matched by name)."""
    unknown = sorted(set(dataset.classes) - set(run.classes))
    if unknown:
        raise EvaluateError(f"classes {unknown} are not among the run's classes {run.classes}")
    # Labels follow the dataset's class order; map them onto the run's by name.
    to_run = {i: run.classes.index(name) for i, name in enumerate(dataset.classes)}
    return torch.tensor([to_run[it.label] for it in items], dtype=torch.long)


def score(run: LoadedRun, split: str, items: list, targets: torch.Tensor, logits: torch.Tensor,
          ood_scores: torch.Tensor | None = None) -> Evaluation:
    """The Evaluation of raw `logits` for `items` (true run-class indices `targets`), calibrated with the
    run's temperature; the job calls it again after fitting one, without a second pass over the images.
    `ood_scores`: the images' "none of these" scores (`Predictor.scored`; energy of the logits when None)."""
    from ftui.results.trust import calibrated, single_label

    losses = F.cross_entropy(logits, targets, reduction="none")
    probs = calibrated(logits, run.trust.temperature)
    confidence, predicted = probs.max(dim=1)
    n = len(run.classes)
    confusion = torch.zeros(n, n, dtype=torch.long)
    confusion.index_put_((targets, predicted), torch.ones_like(targets), accumulate=True)
    wrong = (predicted != targets).nonzero().flatten().tolist()
    mistakes = pd.DataFrame(
        [{"path": items[i].path, "true": run.classes[int(targets[i])], "predicted": run.classes[int(predicted[i])],
          "confidence": round(float(confidence[i]), 4), "loss": round(float(losses[i]), 4)} for i in wrong],
        columns=["path", "true", "predicted", "confidence", "loss"],
    ).sort_values("loss", ascending=False, ignore_index=True)
    predictions = pd.DataFrame({"path": [it.path for it in items],
                                "true": [run.classes[int(t)] for t in targets],
                                "predicted": [run.classes[int(p)] for p in predicted],
                                "confidence": confidence.double().numpy().round(4)})
    calibration: dict[str, Any] = {}
    if single_label(run.config):
        calibration = calibration_summary(run, logits, targets, ood_scores)
    return Evaluation(
        split=split, accuracy=float((predicted == targets).double().mean()), num_items=len(items),
        per_class=per_class_table(run.classes, confusion), confusion=confusion.tolist(),
        classes=list(run.classes), mistakes=mistakes, predictions=predictions,
        probabilities=probs.double().numpy().round(4).tolist(), calibration=calibration,
        logits=logits, targets=targets, items=items,
    )


def calibration_summary(run: LoadedRun, logits: torch.Tensor, targets: torch.Tensor,
                        ood_scores: torch.Tensor | None = None) -> dict[str, Any]:
    """evaluation.json's calibration keys for these logits under the run's stored temperature, and the share
    of these images the stored "none of these" threshold answers "unknown"."""
    from ftui.results.trust import ECE_BINS, calibrated, energy_score, expected_calibration_error, reliability

    trust = run.trust
    probs = calibrated(logits, trust.temperature)
    summary = {
        "temperature": round(trust.temperature, 4),
        "ece_before": round(expected_calibration_error(calibrated(logits, 1.0), targets), 4),
        "ece_after": round(expected_calibration_error(probs, targets), 4),
        "ece_bins": ECE_BINS,
        "reliability": reliability(probs, targets),
        "reliability_before": reliability(calibrated(logits, 1.0), targets),
        "energy_threshold": trust.energy_threshold,
        "ood_method": trust.ood_method,
        "ood_threshold": trust.threshold,
    }
    if ood_scores is None and trust.ood_method == "energy":
        ood_scores = energy_score(logits)
    if trust.threshold is not None and ood_scores is not None:
        summary["abstain_rate"] = round(float((ood_scores < trust.threshold).double().mean()), 4)
    return summary


MAX_OOD_IMAGES = 5000


def ood_images(folder: str | Path) -> list[str]:
    """Every image file under `folder` (sorted; at most MAX_OOD_IMAGES, an EvaluateError when none)."""
    from ftui.data.images import has_image_extension, is_ignored

    root = Path(folder)
    if not root.is_dir():
        raise EvaluateError(f"--ood {folder}: not a folder of images")
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file() and has_image_extension(p)
                   and not any(is_ignored(part) for part in p.relative_to(root).parts))
    if not paths:
        raise EvaluateError(f"--ood {folder}: no images in it")
    return paths[:MAX_OOD_IMAGES]


def ood_scores(predictor: Predictor, inside: tuple[torch.Tensor, torch.Tensor], folder: str | Path) -> dict[str, Any]:
    """AUROC and FPR at 95% TPR of the run's "none of these" score, energy and MSP; in-distribution = the
    evaluated images (`inside`: their logits and run scores, from `predictor.scored`)."""
    report = ood_report_of(predictor, inside, ood_images(folder))
    report["folder"] = str(folder)
    return report


def ood_report_of(predictor: Predictor, inside: tuple[torch.Tensor, torch.Tensor], paths: list) -> dict[str, Any]:
    """The "ood" report of images `paths` (from none of the classes) against `inside`, with the share the
    stored threshold answers "unknown"."""
    from ftui.results.trust import ood_report

    trust = predictor.trust
    outside_logits, outside = predictor.scored(paths)
    extra = {trust.ood_method: (inside[1], outside)} if trust.ood_method != "energy" else {}
    report = ood_report(inside[0], outside_logits, trust.temperature, extra, trust.ood_method)
    if trust.threshold is not None:
        report["unknown_rate"] = round(float((outside < trust.threshold).double().mean()), 4)
    return report


MAX_CURVE_POINTS = 100


def pr_curves(classes: list[str], true: list[str], probabilities: list[list[float]]) -> tuple[pd.DataFrame, dict]:
    """One-vs-rest precision-recall curves from saved class probabilities: (points, average precision).

    For class k, images are ranked by their probability of k; each rank gives precision (share of k among
    the images so far) and recall (share of all k images found). Average precision is the mean precision at
    the ranks of the k images (scikit-learn's average_precision_score when scores do not tie). Points:
    DataFrame(class, recall, precision), at most MAX_CURVE_POINTS per class, starting at recall 0.
    """
    probs = torch.as_tensor(probabilities, dtype=torch.float64)
    index = {name: i for i, name in enumerate(classes)}
    labels = torch.tensor([index[name] for name in true])
    parts, average = [], {}
    for k, name in enumerate(classes):
        positive = labels == k
        if not positive.any():
            continue
        hits = positive[torch.argsort(probs[:, k], descending=True, stable=True)].double()
        found = hits.cumsum(0)
        precision = found / torch.arange(1, len(hits) + 1, dtype=torch.float64)
        recall = found / hits.sum()
        average[name] = float((precision * hits).sum() / hits.sum())
        keep = torch.linspace(0, len(hits) - 1, min(len(hits), MAX_CURVE_POINTS)).round().long().unique()
        parts.append(pd.DataFrame({"class": name, "recall": [0.0, *recall[keep].tolist()],
                                   "precision": [1.0, *precision[keep].tolist()]}))
    points = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["class", "recall", "precision"])
    return points, average
