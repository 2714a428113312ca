"""The doctor for multilabel and regression datasets: what "balance" and "label noise" mean for them.

- multilabel balance: images per label and split, label cardinality, images with no label, labels too rare
  to learn or measure, labels on every image, the frequency spread (suggesting pos_weight);
- regression values: a histogram per split and the values far outside the rest (Tukey's far-out fences,
  3 x IQR beyond the quartiles), val values outside the train range;
- label noise: the single-label check's idea (a cross-validated linear probe on pretrained features, images
  ranked by how strongly the probe that never saw them disagrees) with a per-label logistic probe for
  multilabel and a ridge probe with standardized residuals for regression.

Duplicates and leakage run unchanged: each distinct target (label set or value) plays the part of a class,
so copies with different targets are the "two labels" case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ftui.data.tasks import MULTILABEL, REGRESSION, target_text
from ftui.devices import single_torch_thread
from ftui.doctor.balance import SPLIT_ORDER
from ftui.doctor.labels import OUTLIER_Z, skipped_labels, stratified_folds
from ftui.doctor.report import CheckResult
from ftui.doctor.scan import ImageRecord
from ftui.stats import average_precision, counted

# A probe that never saw an image must be this sure it is wrong about a label to flag it: p >= 0.75 for a
# missing label, p <= 0.25 for a given one (the single-label check's margin of 0.5 between the two answers).
LABEL_MARGIN = 0.5
# Tukey's "far out" fence: this many interquartile ranges beyond the quartiles.
FAR_OUT_IQR = 3.0
# A flagged residual must also be this share of the values' standard deviation (a very precise probe
# otherwise calls small differences outliers).
MIN_RESIDUAL_STD = 0.5
RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
HISTOGRAM_BINS = 10
# The regression probe is refitted without its worst flagged image at most this many times.
MAX_REFITS = 5


@dataclass
class TaskTargets:
    """A task dataset's targets in record order: one row per image (0/1 per label, or the values)."""

    task: str
    names: list[str]
    values: np.ndarray  # images x outputs, float64

    def text(self, row: int) -> str:
        return target_text(self.task, self.names, self.values[row])


def task_entries(dataset) -> tuple[list[tuple[str, int, str]], list[str], TaskTargets]:
    """(path, target index, split) entries for the scan, the distinct targets as texts, and the targets.
    Each distinct label set / value plays the part of a class for the checks that compare labels
    (duplicates under two labels, the unreadable table's label column)."""
    targets = TaskTargets(dataset.task, list(dataset.classes),
                          np.array([item.target for item in dataset.items], dtype=np.float64))
    texts = [targets.text(i) for i in range(len(dataset.items))]
    distinct = sorted(set(texts))
    index = {text: i for i, text in enumerate(distinct)}
    entries = [(item.path, index[text], item.split) for item, text in zip(dataset.items, texts)]
    return entries, distinct, targets


def retarget_duplicates(result: CheckResult, task: str) -> CheckResult:
    """Say "with different label sets / values" where the classification wording says "across classes"."""
    words = "with different label sets" if task == MULTILABEL else "with different values"
    result.summary = result.summary.replace("across classes", words)
    if not result.table.empty:
        for column in ("scope", "issue"):
            result.table[column] = result.table[column].str.replace("across classes", words, regex=False)
    result.suggestions = [s.replace("the same image under two labels: keep one copy under the right class",
                                    f"the same image {words}: keep one copy with the right target")
                          for s in result.suggestions]
    return result


def _splits(records: list[ImageRecord]) -> list[str]:
    present = {r.split for r in records if r.ok}
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


# --- multilabel balance ------------------------------------------------------------------------------------
def check_label_balance(records: list[ImageRecord], targets: TaskTargets, limits) -> CheckResult:
    """Images per label and split, labels too rare to learn or measure, label cardinality, empty label sets."""
    ok = np.array([r.ok for r in records], dtype=bool)
    splits = _splits(records)
    split_of = np.array([r.split for r in records])
    y = targets.values
    table = pd.DataFrame({"class": targets.names})
    for split in splits:
        table[split] = y[ok & (split_of == split)].sum(0).astype(int)
    table["total"] = y[ok].sum(0).astype(int)
    table["share"] = (table["total"] / max(int(ok.sum()), 1)).round(3)
    train_col = "train" if "train" in splits else "total"
    n_train = int((ok & (split_of == train_col)).sum()) if train_col == "train" else int(ok.sum())
    levels, issues = [], []
    for _, row in table.iterrows():
        found = _label_issues(int(row[train_col]), n_train, int(row["val"]) if "val" in splits else None, limits)
        levels.append(max((lv for lv, _ in found), key=("ok", "warning", "error").index, default="ok"))
        issues.append("; ".join(text for _, text in found))
    table["level"], table["issue"] = levels, issues
    positives = table.loc[table[train_col] > 0, train_col]
    ratio = float(positives.max() / positives.min()) if len(positives) else float("nan")
    cardinality = y[ok].sum(1)
    empty = int((cardinality == 0).sum())
    severity = "error" if "error" in levels else "warning" if "warning" in levels else "ok"
    suggestions = []
    if ratio >= limits.max_imbalance:
        severity = "error" if severity == "error" else "warning"
        suggestions.append(f"label frequencies differ {ratio:.1f}:1 - turn on the class-weighted loss (for "
                           "multilabel: BCE pos_weight per label) or collect more images of the rare labels")
    if any("training" in text for text in issues):
        suggestions.append(f"aim for at least {limits.min_train} training images with each label")
    summary = (f"{len(targets.names)} labels, {int(ok.sum())} images, {cardinality.mean():.2f} labels per image "
               f"({int(cardinality.min())}-{int(cardinality.max())}), {counted(empty, 'image')} with no label; "
               f"label frequencies differ {ratio:.1f}:1 in {train_col}")
    flagged = sum(level != "ok" for level in levels)
    if flagged:
        summary += f"; {counted(flagged, 'label')} worth a look"
    stats = {"task": MULTILABEL, "imbalance_ratio": ratio, "mean_labels_per_image": float(cardinality.mean()),
             "images_without_label": empty, "split_column": train_col,
             "counts": {name: table.loc[i, [*splits, "total"]].to_dict() for i, name in enumerate(targets.names)}}
    return CheckResult("balance", severity, summary, table, stats=stats, suggestions=suggestions)


def _label_issues(train: int, n_train: int, val: int | None, limits) -> list[tuple[str, str]]:
    found = []
    if train == 0:
        found.append(("error", "no training image has it"))
    elif train < limits.min_train:
        found.append(("warning", f"only {counted(train, 'training image')} with it: too few to learn"))
    elif train == n_train:
        found.append(("warning", "on every training image: nothing to tell apart"))
    if val is not None and val < limits.min_val:
        found.append(("warning", f"only {counted(val, 'validation image')} with it: too few to measure"))
    return found


# --- regression values -------------------------------------------------------------------------------------
VALUE_COLUMNS = ["path", "label", "split", "level", "issue", "output", "value"]


def far_out(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Which values lie beyond Tukey's far-out fences (3 IQR past the quartiles), and the fences."""
    q1, q3 = np.percentile(values, [25, 75])
    low, high = q1 - FAR_OUT_IQR * (q3 - q1), q3 + FAR_OUT_IQR * (q3 - q1)
    return (values < low) | (values > high), float(low), float(high)


def histogram_rows(values: np.ndarray, split_of: np.ndarray, splits: list[str]) -> list[dict]:
    """(bin, split, images) rows of a value histogram (equal-width bins over the whole range): the chart."""
    edges = np.histogram_bin_edges(values, bins=HISTOGRAM_BINS)
    rows = []
    for split in splits:
        counts, _ = np.histogram(values[split_of == split], bins=edges)
        rows += [{"class": f"{edges[b]:.3g}–{edges[b + 1]:.3g}", "split": split, "images": int(n)}
                 for b, n in enumerate(counts)]
    return rows


def check_value_distribution(records: list[ImageRecord], targets: TaskTargets) -> CheckResult:
    """Per output: the value histogram per split, values far outside the rest, val values outside train's."""
    keep = np.flatnonzero([r.ok for r in records])
    splits = _splits(records)
    split_of = np.array([records[i].split for i in keep])
    rows, stats = [], {"task": REGRESSION, "outputs": {}}
    for k, name in enumerate(targets.names):
        values = targets.values[keep, k]
        outside, low, high = far_out(values)
        for j in np.flatnonzero(outside):
            r = records[keep[j]]
            rows.append({"path": r.path, "label": targets.text(keep[j]), "split": r.split, "level": "warning",
                         "issue": f"{name} = {values[j]:g} is far outside the rest (fences {low:.3g} to {high:.3g})",
                         "output": name, "value": float(values[j])})
        train = values[split_of == "train"] if "train" in splits else values
        beyond = (values < train.min()) | (values > train.max())
        stats["outputs"][name] = {
            "min": float(values.min()), "median": float(np.median(values)), "max": float(values.max()),
            "distinct": len(np.unique(values)), "far_out": int(outside.sum()),
            "val_outside_train_range": int((beyond & (split_of == "val")).sum()),
            "histogram": histogram_rows(values, split_of, splits)}
    table = pd.DataFrame(rows, columns=VALUE_COLUMNS)
    parts = [f"{name}: {s['min']:g} to {s['max']:g} (median {s['median']:g}, {s['distinct']} distinct)"
             for name, s in stats["outputs"].items()]
    summary = f"{len(keep)} images; " + "; ".join(parts)
    outside_val = sum(s["val_outside_train_range"] for s in stats["outputs"].values())
    if outside_val:
        summary += f"; {counted(outside_val, 'val image')} outside the train range (a linear head extrapolates)"
    if table.empty:
        return CheckResult("balance", "ok", summary + "; no value far outside the rest", table, stats=stats)
    summary += f"; {counted(table['path'].nunique(), 'image')} with a value far outside the rest"
    return CheckResult("balance", "warning", summary, table, stats=stats, suggestions=[
        "check the flagged values for typos or unit mix-ups (cm vs m); a real extreme value is fine to keep"])


def chart_rows(result: CheckResult) -> list[dict]:
    """The balance chart's (class, split, images) rows of a regression report: the first output's histogram."""
    outputs = result.stats.get("outputs", {})
    return next(iter(outputs.values()))["histogram"] if outputs else []


# --- label noise -------------------------------------------------------------------------------------------
NOISE_COLUMNS = ["path", "label", "split", "level", "issue", "probe_says", "disagreement"]


def _unit(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def out_of_fold_label_probabilities(features: np.ndarray, y: np.ndarray, folds: np.ndarray,
                                    weight_decay: float = 1e-3, steps: int = 100) -> np.ndarray:
    """Per-label probabilities for every image from a one-vs-rest logistic probe (L-BFGS, all labels at once)
    that never saw it. One torch thread, as the single-label probe (ftui/doctor/labels.py says why)."""
    x = torch.from_numpy(_unit(features).astype(np.float32))
    target = torch.from_numpy(y.astype(np.float32))
    probs = np.zeros(y.shape, dtype=np.float32)
    with single_torch_thread():
        for fold in np.unique(folds):
            held = torch.from_numpy(folds == fold)
            w = torch.zeros(x.shape[1], y.shape[1], requires_grad=True)
            b = torch.zeros(y.shape[1], requires_grad=True)
            opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

            def closure(w=w, b=b, opt=opt, held=held):
                opt.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(x[~held] @ w + b, target[~held])
                loss = loss + weight_decay * (w * w).sum()
                loss.backward()
                return loss

            opt.step(closure)
            with torch.no_grad():
                probs[held.numpy()] = torch.sigmoid(x[held] @ w + b).numpy()
    return probs


def check_multilabel_noise(records: list[ImageRecord], features: np.ndarray, targets: TaskTargets,
                           feature_name: str = "features", k: int = 5) -> CheckResult:
    """Images whose given labels an out-of-fold probe disputes: a label it is sure is missing (p >= 0.75)
    or a given label it is sure is not there (p <= 0.25); labels with < 2 images either way are left out."""
    keep = np.flatnonzero([r.ok for r in records])
    y = targets.values[keep]
    positives = y.sum(0)
    checked = np.flatnonzero((positives >= 2) & (len(y) - positives >= 2))
    if len(checked) == 0 or len(keep) < 4:
        return skipped_labels("needs a label that 2+ images have and 2+ images lack")
    combos = np.unique(y, axis=0, return_inverse=True)[1].ravel()
    # Folds keep each label combination spread out; a label with 2 images still has one in a training fold.
    folds = stratified_folds(combos, int(max(2, min(k, len(keep) // 2))))
    probs = out_of_fold_label_probabilities(features[keep], y[:, checked], folds)
    given = y[:, checked]
    gap = np.abs(probs - given)  # how far the probe is from the given answer, per label
    flagged = gap >= 0.5 + LABEL_MARGIN / 2
    rows = []
    for j in np.flatnonzero(flagged.any(1)):
        r = records[keep[j]]
        reasons = [(f"may also show '{targets.names[c]}' ({probs[j, m]:.0%})" if given[j, m] == 0 else
                    f"'{targets.names[c]}' may not be in it ({probs[j, m]:.0%})")
                   for m, c in enumerate(checked) if flagged[j, m]]
        says = [targets.names[c] for m, c in enumerate(checked) if probs[j, m] >= 0.5]
        rows.append({"path": r.path, "label": targets.text(keep[j]), "split": r.split, "level": "warning",
                     "issue": "look at this first: " + ", ".join(reasons),
                     "probe_says": ";".join(says) or "(no label)", "disagreement": round(float(gap[j].max()), 3)})
    table = pd.DataFrame(rows, columns=NOISE_COLUMNS).sort_values("disagreement", ascending=False, kind="stable")
    table = table.reset_index(drop=True)
    aps = [average_precision(probs[:, m], given[:, m]) for m in range(len(checked))]
    stats = {"probe_cv_map": round(float(np.mean(aps)), 4), "folds": int(folds.max() + 1),
             "features": feature_name, "images": len(keep), "labels_checked": [targets.names[c] for c in checked]}
    head = (f"a simple per-label probe on {feature_name} ({stats['folds']}-fold) ranks the labels with mAP "
            f"{stats['probe_cv_map']:.2f}: a rough measure of how visible the labels are, not a count of "
            "wrong labels")
    return probe_result(head, table, stats, calm="nothing stands out", disputed="label set the probe disputes",
                        advice="open each image and fix its labels only if wrong")


def probe_result(head: str, table: pd.DataFrame, stats: dict, calm: str, disputed: str, advice: str) -> CheckResult:
    """The label-noise check's verdict from a probe's flagged images: ok when none, else a warning of hints."""
    if table.empty:
        return CheckResult("labels", "ok", f"{head}; {calm}", table, stats=stats)
    return CheckResult("labels", "warning", f"{head}; look at these first: {counted(len(table), 'image')} whose "
                       f"{disputed}", table, stats=stats,
                       suggestions=[f"these are hints, not verdicts: {advice}"])


def out_of_fold_ridge(features: np.ndarray, y: np.ndarray, folds: np.ndarray,
                      fit: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Out-of-fold ridge predictions of standardized targets (the alpha with the least out-of-fold squared
    error among RIDGE_ALPHAS) in the targets' units, and that alpha. Only the `fit` rows are fitted on."""
    fit = np.ones(len(y), dtype=bool) if fit is None else fit
    x = _unit(features.astype(np.float64))
    mean, std = y[fit].mean(0), np.maximum(y[fit].std(0), 1e-12)
    z = (y - mean) / std
    preds = {alpha: np.zeros_like(z) for alpha in RIDGE_ALPHAS}
    for fold in np.unique(folds):
        held, train = folds == fold, (folds != fold) & fit
        x_mean, z_mean = x[train].mean(0), z[train].mean(0)
        u, s, vt = np.linalg.svd(x[train] - x_mean, full_matrices=False)
        projected = u.T @ (z[train] - z_mean)
        for alpha in RIDGE_ALPHAS:
            w = vt.T @ ((s / (s * s + alpha))[:, None] * projected)
            preds[alpha][held] = (x[held] - x_mean) @ w + z_mean
    alpha = min(RIDGE_ALPHAS, key=lambda a: float(((preds[a] - z)[fit] ** 2).sum()))
    return preds[alpha] * std + mean, alpha


def robust_residuals(y: np.ndarray, pred: np.ndarray, fit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residuals and their robust z-scores (median/MAD of the `fit` rows), and which are flagged."""
    residual = y - pred
    median = np.median(residual[fit], 0)
    mad = np.maximum(np.median(np.abs(residual[fit] - median), 0), 1e-12)
    z = 0.6745 * (residual - median) / mad
    return z, (np.abs(z) > OUTLIER_Z) & (np.abs(residual) >= MIN_RESIDUAL_STD * y[fit].std(0))


def check_regression_noise(records: list[ImageRecord], features: np.ndarray, targets: TaskTargets,
                           feature_name: str = "features", k: int = 5) -> CheckResult:
    """Images whose value an out-of-fold ridge probe on the features contradicts: a standardized residual
    (robust: median/MAD) beyond 3.5 that is also at least half the values' standard deviation. Images with a
    far-out value (flagged by the value check) are left out of the probe."""
    # Values far outside the rest are the value check's finding; fitted, one typo (1000 for 10.00) would
    # drag the probe's predictions for every similar image and flag them all.
    usual = ~np.column_stack([far_out(targets.values[:, m])[0] for m in range(len(targets.names))]).any(1)
    keep = np.flatnonzero([r.ok and usual[i] for i, r in enumerate(records)])
    if len(keep) < 2 * k:
        return skipped_labels(f"needs at least {2 * k} readable images")
    y = targets.values[keep]
    folds = np.random.default_rng(0).permutation(len(keep)) % k
    # A badly wrong value drags the predictions of the images that look like it: the worst flagged image is
    # left out of the fit and the probe refitted, one at a time (a few rounds), before the final verdicts.
    fit = np.ones(len(y), dtype=bool)
    for _ in range(MAX_REFITS + 1):
        pred, alpha = out_of_fold_ridge(features[keep], y, folds, fit)
        z, flagged = robust_residuals(y, pred, fit)
        worst = np.flatnonzero(flagged.any(1) & fit)
        if not len(worst):
            break
        fit[worst[np.abs(z[worst]).max(1).argmax()]] = False
    residual = y - pred
    rows = []
    for j in np.flatnonzero(flagged.any(1)):
        r = records[keep[j]]
        reasons = [f"{name} = {y[j, m]:g} but the probe predicts {pred[j, m]:.3g} (residual z={z[j, m]:.1f})"
                   for m, name in enumerate(targets.names) if flagged[j, m]]
        rows.append({"path": r.path, "label": targets.text(keep[j]), "split": r.split, "level": "warning",
                     "issue": "look at this first: " + "; ".join(reasons),
                     "probe_says": ", ".join(f"{v:.3g}" for v in pred[j]),
                     "disagreement": round(float(np.abs(z[j]).max()), 2)})
    table = pd.DataFrame(rows, columns=NOISE_COLUMNS).sort_values("disagreement", ascending=False, kind="stable")
    table = table.reset_index(drop=True)
    total = ((y - y.mean(0)) ** 2).sum(0)
    r2 = 1 - (residual ** 2).sum(0) / np.maximum(total, 1e-12)
    stats = {"probe_cv_r2": [round(float(v), 4) for v in r2], "ridge_alpha": alpha, "folds": k,
             "features": feature_name, "images": len(keep)}
    head = (f"a simple ridge probe on {feature_name} ({k}-fold) explains R² {float(r2.mean()):.2f} of the values: "
            "a rough measure of how visible they are in the images")
    return probe_result(head, table, stats, calm="no value stands out", disputed="value the probe contradicts",
                        advice="check each value (typo, unit, wrong row) before fixing")


def check_task_labels(records: list[ImageRecord], features: np.ndarray, targets: TaskTargets,
                      feature_name: str) -> CheckResult:
    """The label-noise check for a task dataset."""
    if targets.task == MULTILABEL:
        return check_multilabel_noise(records, features, targets, feature_name)
    return check_regression_noise(records, features, targets, feature_name)


def check_task_balance(records: list[ImageRecord], targets: TaskTargets, limits) -> CheckResult:
    """The balance check for a task dataset: per label (multilabel) or the value distribution (regression)."""
    if targets.task == MULTILABEL:
        return check_label_balance(records, targets, limits)
    return check_value_distribution(records, targets)
