"""Evaluate a trained run on a split: accuracy, per-class table, confusion matrix, worst mistakes."""

from __future__ import annotations

from dataclasses import dataclass
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
) -> Evaluation:
    """Evaluate `run` on `split` of `dataset` (a Dataset, a data path, or None for the run's own data).
    A multilabel or regression run gets a `taskeval.TaskEvaluation` (its own metrics, same to_dict role)."""
    from ftui.data.datasets import load_dataset

    # Loaded on the CPU; the Predictor moves the model to `device` ("auto": the GPU when there is one).
    run = run if isinstance(run, LoadedRun) else load_run(run)
    if dataset is None or isinstance(dataset, (str, Path)):
        source = run.config.data if dataset is None else str(dataset)
        dataset = load_dataset(source, val_fraction=run.config.val_fraction, seed=run.config.data_seed,
                               task=run.config.task)
    items = _items(dataset, split)
    if run.kind != "classification":
        from ftui.results.taskeval import evaluate_task

        return evaluate_task(run, dataset, items, split, Predictor(run, device=device, batch_size=batch_size))
    unknown = sorted(set(dataset.classes) - set(run.classes))
    if unknown:
        raise EvaluateError(f"classes {unknown} are not among the run's classes {run.classes}")
    # Labels follow the dataset's class order; map them onto the run's by name.
    to_run = {i: run.classes.index(name) for i, name in enumerate(dataset.classes)}
    targets = torch.tensor([to_run[it.label] for it in items])
    predictor = Predictor(run, device=device, batch_size=batch_size)
    logits = predictor.logits([it.path for it in items])
    losses = F.cross_entropy(logits, targets, reduction="none")
    probs = torch.softmax(logits, dim=1)
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
    return Evaluation(
        split=split, accuracy=float((predicted == targets).double().mean()), num_items=len(items),
        per_class=per_class_table(run.classes, confusion), confusion=confusion.tolist(),
        classes=list(run.classes), mistakes=mistakes, predictions=predictions,
        probabilities=probs.double().numpy().round(4).tolist(),
    )


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
