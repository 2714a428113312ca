"""Multilabel and regression metrics with 95% bootstrap intervals over images.

Multilabel: per-label average precision and their macro mean (mAP), F1 at 0.5 and at a threshold per label
chosen on val (the threshold that maximises that label's F1 there), exact match (every label right) and label
cardinality (labels per image, true and predicted). Regression: MAE, RMSE, R² and the MAE of predicting the
train mean for every image (the baseline a model must beat). Intervals: the metric recomputed on
BOOTSTRAP_SAMPLES resamples of the images (with replacement, seeded), 2.5th and 97.5th percentiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ftui.stats import average_precision

BOOTSTRAP_SAMPLES = 500
BOOTSTRAP_SEED = 0


def bootstrap_interval(metric: Callable[[np.ndarray], float], n: int, samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> list[float]:
    """[low, high] of `metric(indices)` over `samples` resamples of n images (NaN results left out)."""
    if n == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    values = np.array([metric(rng.integers(0, n, n)) for _ in range(samples)], dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return [float("nan"), float("nan")]
    low, high = np.percentile(values, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


# --- multilabel -------------------------------------------------------------------------------------------
def label_aps(probs: np.ndarray, truth: np.ndarray) -> list[float]:
    """Average precision of each label (NaN for a label with no positive here)."""
    return [average_precision(probs[:, k], truth[:, k]) for k in range(truth.shape[1])]


def mean_ap(probs: np.ndarray, truth: np.ndarray) -> float:
    """Macro mean of the labels' APs, over labels with a positive (NaN when none has)."""
    aps = [a for a in label_aps(probs, truth) if np.isfinite(a)]
    return float(np.mean(aps)) if aps else float("nan")


def f1_scores(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-label F1 of 0/1 predictions (1.0 where a label is neither true nor predicted anywhere)."""
    tp = (predicted & truth).sum(0)
    fp = (predicted & ~truth).sum(0)
    fn = (~predicted & truth).sum(0)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)


def choose_thresholds(probs: np.ndarray, truth: np.ndarray) -> list[float]:
    """Per label, the probability threshold with the highest F1 on these images (0.5 for a label with no
    positive); midway between the cutting probability and the next, so it is not on any image's value."""
    thresholds = []
    truth = truth.astype(bool)
    for k in range(truth.shape[1]):
        if not truth[:, k].any():
            thresholds.append(0.5)
            continue
        values = np.unique(probs[:, k])
        cuts = np.r_[(values[:-1] + values[1:]) / 2, values[-1] + 1e-6] if len(values) > 1 else values
        best = max(cuts, key=lambda t: (f1_scores((probs[:, k] >= t)[:, None], truth[:, k:k + 1])[0], -abs(t - 0.5)))
        thresholds.append(round(float(best), 6))
    return thresholds


def multilabel_metrics(probs: np.ndarray, truth: np.ndarray, names: Sequence[str],
                       thresholds: Sequence[float]) -> dict[str, Any]:
    """Every multilabel number, with intervals; `thresholds` are the per-label ones chosen on val."""
    truth = truth.astype(bool)
    cut = np.asarray(thresholds, dtype=np.float64)
    at_val, at_half = probs >= cut, probs >= 0.5
    aps = label_aps(probs, truth)
    n = len(truth)

    def macro_f1(predicted, idx):
        return float(f1_scores(predicted[idx], truth[idx]).mean())

    per_label = []
    f1_val, f1_half = f1_scores(at_val, truth), f1_scores(at_half, truth)
    for k, name in enumerate(names):
        per_label.append({
            "label": name, "ap": None if not np.isfinite(aps[k]) else round(aps[k], 4),
            "threshold": round(float(cut[k]), 4), "f1_at_val_threshold": round(float(f1_val[k]), 4),
            "f1_at_0.5": round(float(f1_half[k]), 4), "support": int(truth[:, k].sum()),
            "predicted": int(at_val[:, k].sum()),
        })
    mean = mean_ap(probs, truth)
    return {
        "map": None if not np.isfinite(mean) else round(mean, 4),
        "map_ci95": bootstrap_interval(lambda idx: mean_ap(probs[idx], truth[idx]), n),
        "f1_at_val_thresholds": round(float(f1_val.mean()), 4),
        "f1_at_val_thresholds_ci95": bootstrap_interval(lambda idx: macro_f1(at_val, idx), n),
        "f1_at_0.5": round(float(f1_half.mean()), 4),
        "f1_at_0.5_ci95": bootstrap_interval(lambda idx: macro_f1(at_half, idx), n),
        "exact_match": round(float((at_val == truth).all(1).mean()), 4),
        "exact_match_ci95": bootstrap_interval(lambda idx: float((at_val[idx] == truth[idx]).all(1).mean()), n),
        "label_cardinality": round(float(truth.sum(1).mean()), 4),
        "predicted_cardinality": round(float(at_val.sum(1).mean()), 4),
        "thresholds": [round(float(t), 6) for t in cut],
        "per_label": per_label,
    }


def cooccurrence_errors(probs: np.ndarray, truth: np.ndarray, thresholds: Sequence[float]) -> list[list[int]]:
    """[i][j]: images with label i true where label j was predicted wrongly (i == j: label i missed).
    Shows which labels are confused when they appear together."""
    truth = truth.astype(bool)
    predicted = probs >= np.asarray(thresholds)
    wrong = predicted != truth
    k = truth.shape[1]
    return [[int((truth[:, i] & (wrong[:, j] if i != j else ~predicted[:, i])).sum()) for j in range(k)]
            for i in range(k)]


# --- regression -------------------------------------------------------------------------------------------
def _r2(pred: np.ndarray, true: np.ndarray) -> float:
    total = ((true - true.mean(0)) ** 2).sum(0)
    residual = ((true - pred) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1 - residual / total
    r2 = r2[np.isfinite(r2)]
    return float(r2.mean()) if len(r2) else float("nan")


def regression_metrics(pred: np.ndarray, true: np.ndarray, names: Sequence[str],
                       train_mean: Sequence[float]) -> dict[str, Any]:
    """MAE, RMSE, R² (means over the outputs) and the predict-the-train-mean MAE, with intervals."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    baseline = np.broadcast_to(np.asarray(train_mean, dtype=np.float64), true.shape)
    n = len(true)

    def mae(idx, p=pred):
        return float(np.abs(p[idx] - true[idx]).mean())

    def rmse(idx):
        return float(np.sqrt(((pred[idx] - true[idx]) ** 2).mean(0)).mean())

    per_output = [{"output": name, "mae": round(float(np.abs(pred[:, k] - true[:, k]).mean()), 6),
                   "rmse": round(float(np.sqrt(((pred[:, k] - true[:, k]) ** 2).mean())), 6),
                   "r2": round(_r2(pred[:, k:k + 1], true[:, k:k + 1]), 6),
                   "mae_mean_baseline": round(float(np.abs(baseline[:, k] - true[:, k]).mean()), 6)}
                  for k, name in enumerate(names)]
    everything = np.arange(n)
    r2 = _r2(pred, true)
    return {
        "mae": round(mae(everything), 6), "mae_ci95": bootstrap_interval(mae, n),
        "rmse": round(rmse(everything), 6), "rmse_ci95": bootstrap_interval(rmse, n),
        "r2": None if not np.isfinite(r2) else round(r2, 6),
        "r2_ci95": bootstrap_interval(lambda idx: _r2(pred[idx], true[idx]), n),
        "mae_mean_baseline": round(mae(everything, baseline), 6),
        "mae_mean_baseline_ci95": bootstrap_interval(lambda idx: mae(idx, baseline), n),
        "train_mean": [round(float(m), 6) for m in train_mean],
        "per_output": per_output,
    }
