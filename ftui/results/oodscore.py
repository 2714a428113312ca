"""Feature-space "none of these" scores, fitted on a run's TRAIN images after training.

- Mahalanobis (Lee et al. 2018) on L2-normalised features (as in "Mahalanobis++", Mueller and Hein 2025):
  class means of the normalised pooled penultimate features and one covariance shared by the classes; an
  image's score is minus its squared Mahalanobis distance to the nearest class mean. Normalising matters:
  on the raw features the far-OOD AUROC was 0.48-1.00 across the suite (mean 0.78, worse than energy),
  normalised 0.990-1.000 (docs/trust.md).
  With few images per feature dimension (hundreds of images, 512-2048 dimensions) the sample covariance is
  singular, so it is shrunk towards a multiple of the identity by the Ledoit-Wolf (2004) formula (no knob
  to tune). Stored: the class means (C x D) and a whitening matrix W with W^T W = covariance^-1 (D x D).
- k-NN (Sun et al. 2022): cosine similarity of an image's normalised features to its k-th nearest train
  image. Fitted here for comparison in the benchmark only (storing it would mean storing every train
  image's features).

Which one a run stores was chosen by measurement on every suite set (docs/trust.md), not on one.
Higher score = more like the training images, as with the energy score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

MAX_FIT_IMAGES = 2000  # train images the statistics are fitted on (stratified sample above that)
MIN_PER_CLASS = 2  # fewer train images per class on average: no statistics, the run keeps energy


def ledoit_wolf(centered: torch.Tensor) -> torch.Tensor:
    """The Ledoit-Wolf shrunk covariance of rows that are already centered (float64)."""
    x = centered.double()
    n, p = x.shape
    sample = x.T @ x / n
    mu = torch.trace(sample) / p
    eye = torch.eye(p, dtype=x.dtype)
    d2 = ((sample - mu * eye) ** 2).sum()
    if float(d2) == 0.0:
        return sample + eye * max(float(mu), 1e-12)
    # sum_k ||x_k x_k^T - S||_F^2 without forming the n outer products.
    b_sum = ((x * x).sum(1) ** 2).sum() - 2 * ((x @ sample) * x).sum() + n * (sample ** 2).sum()
    shrink = float(torch.clamp(b_sum / n ** 2 / d2, 0.0, 1.0))
    return shrink * mu * eye + (1 - shrink) * sample


@dataclass
class Mahalanobis:
    """Class means and the whitening matrix of their shared, shrunk covariance."""

    means: torch.Tensor  # (C, D) float32
    whiten: torch.Tensor  # (D, D) float32, W with W^T W = inverse covariance

    method = "mahalanobis"

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor) -> Mahalanobis:
        f, y = F.normalize(features.double(), dim=1), labels.long()
        present = y.unique()
        means = torch.zeros(int(y.max()) + 1, f.shape[1], dtype=torch.float64)
        for c in present:
            means[c] = f[y == c].mean(0)
        cov = ledoit_wolf(f - means[y])
        # covariance = L L^T  ->  inverse = L^-T L^-1, so W = L^-1.
        chol = torch.linalg.cholesky(cov + torch.eye(len(cov), dtype=cov.dtype) * 1e-10 * float(torch.trace(cov)))
        whiten = torch.linalg.solve_triangular(chol, torch.eye(len(cov), dtype=cov.dtype), upper=False)
        # A class with no train image (it cannot happen after training, but a hand-made run could) never wins.
        means[[c for c in range(len(means)) if c not in set(present.tolist())]] = float("inf")
        return cls(means.float(), whiten.float())

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Minus the squared distance to the nearest class mean, one per image (higher = more familiar)."""
        z = F.normalize(features.float(), dim=1) @ self.whiten.T  # whitened normalised features
        centers = self.means @ self.whiten.T
        finite = torch.isfinite(centers).all(1)
        d = torch.cdist(z.double(), centers[finite].double()) ** 2
        return -d.min(dim=1).values.float()

    def to_meta(self) -> dict[str, Any]:
        return {"method": self.method, "means": self.means.contiguous(), "whiten": self.whiten.contiguous()}


@dataclass
class NearestNeighbour:
    """Cosine similarity to the k-th nearest train image (Sun et al. 2022); for the benchmark's comparison."""

    bank: torch.Tensor  # (N, D) normalised train features
    k: int = 5

    method = "knn"

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor | None = None, k: int = 5) -> NearestNeighbour:
        return cls(F.normalize(features.float(), dim=1), k)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        sim = F.normalize(features.float(), dim=1) @ self.bank.T
        return sim.topk(min(self.k, len(self.bank)), dim=1).values[:, -1]


def from_meta(meta: Any) -> Mahalanobis | None:
    """The stored score from a checkpoint's trust entry; None when absent or not usable (then energy)."""
    if not isinstance(meta, dict) or meta.get("method") != "mahalanobis":
        return None
    means, whiten = meta.get("means"), meta.get("whiten")
    if not (isinstance(means, torch.Tensor) and isinstance(whiten, torch.Tensor)):
        return None
    if means.dim() != 2 or whiten.dim() != 2 or whiten.shape != (means.shape[1], means.shape[1]):
        return None
    return Mahalanobis(means.float(), whiten.float())


def fit_sample(labels: list[int], limit: int = MAX_FIT_IMAGES, seed: int = 0) -> list[int]:
    """Indices of at most `limit` items, every class as evenly as it allows (seeded)."""
    if len(labels) <= limit:
        return list(range(len(labels)))
    g = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i in torch.randperm(len(labels), generator=g).tolist():
        by_class.setdefault(labels[i], []).append(i)
    picked: list[int] = []
    rank = 0
    while len(picked) < limit:
        for c in sorted(by_class):
            if rank < len(by_class[c]) and len(picked) < limit:
                picked.append(by_class[c][rank])
        rank += 1
    return sorted(picked)
