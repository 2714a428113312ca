"""Evaluate a multilabel or regression run on a split (ftui/results/evaluate.py hands such runs here).

evaluation.json then holds "task" and, by task, "map", "f1_at_val_thresholds", "exact_match" (multilabel) or
"mae", "rmse", "r2", "mae_mean_baseline" (regression), each with a 95% bootstrap interval, the per-label
(per-output) table, every image's prediction and the worst images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ftui.errors import FtuiError
from ftui.results import taskmetrics
from ftui.results.loading import LoadedRun
from ftui.results.predict import Predictor
from ftui.train.tasks import MULTILABEL, REGRESSION

WORST = 50


class TaskEvaluateError(FtuiError):
    """A dataset whose labels or values do not match the run's."""


@dataclass
class TaskEvaluation:
    """What `evaluate` measured on one split of a multilabel or regression run."""

    task: str
    split: str
    num_items: int
    names: list[str]
    metrics: dict[str, Any]
    predictions: pd.DataFrame  # path, then true and predicted per label/output, and the image's error
    worst: pd.DataFrame  # the images with the largest error first
    outputs: list[list[float]] = field(default_factory=list)  # probabilities / values, `names` order
    targets: list[list[float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cooccurrence: list[list[int]] | None = None

    @property
    def accuracy(self) -> float:
        """The headline number where older code asks for one: mAP, or MAE for regression."""
        return float(self.metrics["map"] or 0.0) if self.task == MULTILABEL else float(self.metrics["mae"])

    def headline(self) -> str:
        m = self.metrics
        if self.task == MULTILABEL:
            lo, hi = m["map_ci95"]
            return (f"mAP {m['map']:.3f} [{lo:.3f}, {hi:.3f}], F1 at val thresholds {m['f1_at_val_thresholds']:.3f}, "
                    f"exact match {m['exact_match']:.3f} ({self.num_items} images)")
        lo, hi = m["mae_ci95"]
        return (f"MAE {m['mae']:.4g} [{lo:.4g}, {hi:.4g}], RMSE {m['rmse']:.4g}, R² {m['r2']}, predict-the-mean "
                f"MAE {m['mae_mean_baseline']:.4g} ({self.num_items} images)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "split": self.split, "num_items": self.num_items, "classes": self.names,
            **self.metrics, "notes": self.notes, "cooccurrence_errors": self.cooccurrence,
            "predictions": self.predictions.to_dict(orient="records"),
            "mistakes": self.worst.to_dict(orient="records"),
            "outputs": self.outputs, "targets": self.targets,
        }


def _targets(run: LoadedRun, dataset, items: list) -> np.ndarray:
    """The items' targets in the run's label/output order (labels matched by name)."""
    if getattr(dataset, "task", "classification") != run.kind:
        raise TaskEvaluateError(f"the dataset is a {getattr(dataset, 'task', 'classification')} dataset, the "
                                f"run is {run.kind}: evaluate it on data of the same kind")
    if run.kind == MULTILABEL:
        missing = sorted(set(run.classes) - set(dataset.classes))
        extra = sorted(set(dataset.classes) - set(run.classes))
        if extra:
            raise TaskEvaluateError(f"labels {extra} are not among the run's labels {run.classes}")
        order = [dataset.classes.index(name) if name not in missing else None for name in run.classes]
        return np.array([[item.target[k] if k is not None else 0.0 for k in order] for item in items])
    if len(dataset.classes) != len(run.classes):
        raise TaskEvaluateError(f"the dataset has {len(dataset.classes)} value columns, the run predicts "
                                f"{len(run.classes)} ({', '.join(run.classes)})")
    return np.array([list(item.target) for item in items], dtype=np.float64)


def val_thresholds(run: LoadedRun, dataset, predictor: Predictor) -> list[float]:
    """The per-label thresholds chosen on the run's val split (from its evaluation.json when it has them)."""
    saved = run.path / "evaluation.json"
    if saved.is_file():
        try:
            data = json.loads(saved.read_text())
            if data.get("split") == "val" and len(data.get("thresholds", [])) == len(run.classes):
                return [float(t) for t in data["thresholds"]]
        except (OSError, ValueError):
            pass
    items = dataset.split("val")
    probs = predictor.outputs([it.path for it in items]).numpy()
    return taskmetrics.choose_thresholds(probs, _targets(run, dataset, items))


def evaluate_task(run: LoadedRun, dataset, items: list, split: str, predictor: Predictor) -> TaskEvaluation:
    """Every number of a multilabel or regression run on `items` (one split of `dataset`)."""
    truth = _targets(run, dataset, items)
    outputs = predictor.outputs([it.path for it in items]).double().numpy()
    paths = [it.path for it in items]
    if run.kind == MULTILABEL:
        return _multilabel(run, dataset, split, predictor, paths, outputs, truth)
    return _regression(run, split, paths, outputs, truth)


def _multilabel(run, dataset, split, predictor, paths, probs, truth) -> TaskEvaluation:
    notes = []
    if split == "val" or not dataset.split("val"):
        thresholds = taskmetrics.choose_thresholds(probs, truth)
        notes.append("thresholds chosen on these same images: F1 and exact match at them are optimistic; "
                     "evaluate a test split for unbiased numbers")
    else:
        thresholds = val_thresholds(run, dataset, predictor)
    metrics = taskmetrics.multilabel_metrics(probs, truth, run.classes, thresholds)
    predicted = probs >= np.asarray(thresholds)
    # An image's error: the summed binary cross-entropy of its labels (confident and wrong ranks first).
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    loss = -(truth * np.log(clipped) + (1 - truth) * np.log(1 - clipped)).sum(1)
    rows = pd.DataFrame({
        "path": paths,
        "true": [";".join(n for n, t in zip(run.classes, row) if t) for row in truth],
        "predicted": [";".join(n for n, p in zip(run.classes, row) if p) for row in predicted],
        "wrong_labels": (predicted != truth.astype(bool)).sum(1), "loss": loss.round(4),
    })
    worst = rows.sort_values("loss", ascending=False, ignore_index=True).head(WORST)
    return TaskEvaluation(MULTILABEL, split, len(paths), list(run.classes), metrics, rows, worst,
                          probs.round(4).tolist(), truth.tolist(), notes,
                          taskmetrics.cooccurrence_errors(probs, truth, thresholds))


def _regression(run, split, paths, pred, true) -> TaskEvaluation:
    mean = run.task.mean.cpu().double().numpy()
    metrics = taskmetrics.regression_metrics(pred, true, run.classes, mean)
    error = np.abs(pred - true).mean(1)
    columns: dict[str, Any] = {"path": paths}
    for k, name in enumerate(run.classes):
        columns[f"true_{name}"] = true[:, k].round(6)
        columns[f"predicted_{name}"] = pred[:, k].round(6)
    columns["abs_error"] = error.round(6)
    rows = pd.DataFrame(columns)
    worst = rows.sort_values("abs_error", ascending=False, ignore_index=True).head(WORST)
    return TaskEvaluation(REGRESSION, split, len(paths), list(run.classes), metrics, rows, worst,
                          pred.round(6).tolist(), true.tolist())
