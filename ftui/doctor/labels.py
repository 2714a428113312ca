"""Likely label problems: a cross-validated linear probe on pretrained features, and per-class outliers.

Both only rank images to look at first; a pretrained feature space can be wrong about any single image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ftui.devices import single_torch_thread
from ftui.doctor.report import CheckResult
from ftui.doctor.scan import ImageRecord
from ftui.stats import counted

COLUMNS = ["path", "label", "split", "level", "issue", "suggested", "p_given", "p_suggested", "outlier_z"]
# Another class must beat the given label by this much probability (out of fold) to be flagged.
MARGIN = 0.5
# Robust z-score (median/MAD) of the distance to the class centroid above which an image is an outlier
# (Iglewicz & Hoaglin's 3.5).
OUTLIER_Z = 3.5
MIN_OUTLIER_CLASS = 5


def stratified_folds(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold index per sample, each class spread evenly over the k folds."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        folds[idx] = np.arange(len(idx)) % k
    return folds


def fit_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float = 1e-3,
              steps: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (weights, bias), full-batch L-BFGS."""
    w = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int,
                              k: int = 5, seed: int = 0) -> np.ndarray:
    """Class probabilities for every sample from a probe that never saw it (k-fold cross-validation).

    One thread: the matrices are small (images x features x classes), and waking a second thread for every
    product cost more than it saved (combined mnist_small + clothing_small, 5 folds: 0.3 CPU-s a fit with
    one thread, 3 with two, and 5-30x the wall time while the cores were busy). torch's thread count is per
    thread here (OpenMP), so a training job in another thread keeps its own."""
    with single_torch_thread():
        return _out_of_fold(features, labels, num_classes, k, seed)


def _out_of_fold(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int, seed: int) -> np.ndarray:
    x = torch.from_numpy(features.astype(np.float32))
    x = torch.nn.functional.normalize(x, dim=1)
    y = torch.from_numpy(labels.astype(np.int64))
    folds = stratified_folds(labels, k, seed)
    probs = np.zeros((len(labels), num_classes), dtype=np.float32)
    for fold in range(k):
        held = torch.from_numpy(folds == fold)
        if not held.any():
            continue
        w, b = fit_probe(x[~held], y[~held], num_classes)
        probs[held.numpy()] = torch.softmax(x[held] @ w + b, dim=1).numpy()
    return probs


def outlier_scores(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Robust z-score of each sample's cosine distance to its class centroid (NaN for tiny classes), and
    whether that distance is also large in absolute terms: at least half the gap to the nearest other
    class centre. The second test keeps a very tight class from calling tiny differences outliers."""
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    present = np.unique(labels)
    centroids = np.stack([x[labels == c].mean(axis=0) for c in present])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    gaps = 1.0 - centroids @ centroids.T
    np.fill_diagonal(gaps, np.inf)
    z = np.full(len(labels), np.nan)
    far = np.zeros(len(labels), dtype=bool)
    for row, c in enumerate(present):
        idx = np.flatnonzero(labels == c)
        if len(idx) < MIN_OUTLIER_CLASS:
            continue
        dist = 1.0 - x[idx] @ centroids[row]
        med = np.median(dist)
        mad = np.median(np.abs(dist - med))
        z[idx] = 0.6745 * (dist - med) / max(mad, 1e-12)
        far[idx] = dist >= 0.5 * gaps[row].min()
    return z, far


def skipped_labels(reason: str) -> CheckResult:
    """The label check's result when it could not run."""
    return CheckResult("labels", "ok", f"not checked: {reason}", pd.DataFrame(columns=COLUMNS), ran=False)


def check_labels(records: list[ImageRecord], features: np.ndarray, classes: list[str],
                 feature_name: str = "features", k: int = 5) -> CheckResult:
    """Rank images whose label the out-of-fold probe disputes, and images far from their class centre."""
    keep = np.flatnonzero([r.ok for r in records])
    labels = np.array([records[i].label for i in keep], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(classes)) if len(labels) else np.zeros(len(classes))
    usable = counts >= 2
    if usable.sum() < 2:
        return skipped_labels("needs at least two classes with two or more readable images")
    # Classes with a single image cannot be cross-validated; leave them out of the probe.
    mask = usable[labels]
    keep, labels = keep[mask], labels[mask]
    x = features[keep]
    k = int(max(2, min(k, counts[usable].min())))
    probs = out_of_fold_probabilities(x, labels, len(classes), k=k)
    z, far = outlier_scores(x, labels)
    p_given = probs[np.arange(len(labels)), labels]
    masked = probs.copy()
    masked[np.arange(len(labels)), labels] = -1.0
    best_other = masked.argmax(axis=1)
    p_other = masked.max(axis=1)
    agreement = float((probs.argmax(axis=1) == labels).mean())
    rows = []
    for j, i in enumerate(keep):
        r = records[i]
        disputed = p_other[j] - p_given[j] >= MARGIN
        outlier = bool(z[j] > OUTLIER_Z and far[j])
        if not (disputed or outlier):
            continue
        if disputed:
            issue = f"look at this first: looks like '{classes[best_other[j]]}' ({p_other[j]:.0%})"
        else:
            issue = f"look at this first: unusual for '{classes[r.label]}' (outlier z={z[j]:.1f})"
        if disputed and outlier:
            issue += f", and unusual for its class (z={z[j]:.1f})"
        rows.append({"path": r.path, "label": classes[r.label], "split": r.split, "level": "warning",
                     "issue": issue, "suggested": classes[best_other[j]] if disputed else "",
                     "p_given": round(float(p_given[j]), 3), "p_suggested": round(float(p_other[j]), 3),
                     "outlier_z": None if np.isnan(z[j]) else round(float(z[j]), 2), "_rank": p_given[j]})
    table = pd.DataFrame(rows, columns=COLUMNS + ["_rank"]).sort_values("_rank", kind="stable")
    table = table.drop(columns="_rank").reset_index(drop=True)
    stats = {"probe_cv_accuracy": round(agreement, 4), "folds": k, "features": feature_name,
             "images": len(labels)}
    # Not "agrees with 61% of labels": read as "39% are mislabelled", which it is not (most misses are hard
    # images a linear probe on generic features gets wrong). Say what it measures and what it does not.
    head = (f"a simple classifier on {feature_name} ({k}-fold) predicts the folder's class for "
            f"{agreement:.0%} of images: a rough measure of how separable the classes are, not a count of "
            "wrong labels")
    if table.empty:
        return CheckResult("labels", "ok", f"{head}; nothing stands out", table, stats=stats)
    n_disputed = int((table["suggested"] != "").sum())
    n_outliers = len(table) - n_disputed
    summary = (f"{head}; look at these first: {counted(n_disputed, 'image')} that may be in the wrong class, "
               f"{counted(n_outliers, 'image')} unusual for {'its' if n_outliers == 1 else 'their'} class")
    return CheckResult("labels", "warning", summary, table, stats=stats, suggestions=[
        "these are hints, not verdicts: open each image and fix its folder only if the label is wrong"])


# Side the images are embedded at (unless the backbone accepts one size only). Half the pixels of the usual
# 224: ~2x less compute, and the duplicate and label checks were re-calibrated at this size
# (tests/test_doctor_duplicates.py, tests/test_doctor.py; numbers in the README's doctor section).
EMBED_SIZE = 160


def embedding_size(input_size: int, fixed_input_size: bool) -> int:
    """The side a backbone embeds images at: EMBED_SIZE, or its only size when it accepts no other."""
    return input_size if fixed_input_size else min(input_size, EMBED_SIZE)


class BackboneFeatures:
    """Pooled penultimate features of a torchvision backbone: the head swapped for an identity, BatchNorm
    folded into the convolutions, channels_last and bfloat16 autocast where this CPU profits (ftui.devices),
    eval mode, no gradients."""

    def __init__(self, model: torch.nn.Module, head_path: str, mean: tuple, std: tuple,
                 input_size: int, batch_size: int = 32):
        from ftui import devices
        from ftui.models.fusing import fuse_for_inference

        # The head's input is the backbone's pooled feature vector, for every torchvision family.
        model.set_submodule(head_path, torch.nn.Identity())
        self.cpu = torch.device("cpu")
        self.channels_last = devices.use_channels_last(model, self.cpu)
        self.model = fuse_for_inference(model.eval())
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.amp = devices.amp_enabled(self.cpu, True)
        self.input_size = input_size
        self.batch_size = batch_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @torch.inference_mode()
    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        from ftui import devices

        out = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([np.asarray(im.convert("RGB")) for im in images[start:start + self.batch_size]])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
            if x.shape[-1] != self.input_size:
                x = torch.nn.functional.interpolate(x, size=(self.input_size, self.input_size),
                                                    mode="bilinear", antialias=True, align_corners=False)
            x = (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with devices.autocast(self.cpu, self.amp):
                out.append(self.model(x).float().flatten(1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def colour_histogram_features(images: list[Image.Image], bins: int = 4) -> np.ndarray:
    """A joint RGB histogram (bins^3, normalised): a cheap real feature for colour-coded classes."""
    rows = []
    for im in images:
        q = (np.asarray(im.convert("RGB"), dtype=np.int64) * bins) // 256
        codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
        hist = np.bincount(codes.ravel(), minlength=bins ** 3).astype(np.float32)
        rows.append(hist / hist.sum())
    return np.stack(rows) if rows else np.zeros((0, bins ** 3), dtype=np.float32)

