"""Honest numbers: a confidence interval for an accuracy measured on n images."""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) for `correct` successes out of `n`; (0, 1) when n == 0.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or n successes: 30/30 is
    [0.886, 1.0], not "1.0 +- 0".
    """
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes one bound is exactly 0 or 1 (floating point leaves 0.9999999...).
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def format_accuracy(correct: int, n: int) -> str:
    """'0.954 [0.909, 0.977] (146/153)': the accuracy, its 95% Wilson interval and the counts."""
    lo, hi = wilson_interval(correct, n)
    acc = correct / n if n else 0.0
    return f"{acc:.3f} [{lo:.3f}, {hi:.3f}] ({correct}/{n})"


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image', '2 images', '0 images': a count with its noun in the right number."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def paired_gain_interval(wrong_to_right: int, right_to_wrong: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(gain, low, high): accuracy gain of B over A on the same n images and its 95% interval.

    Only the images that flipped carry the difference: gain = (w2r - r2w) / n with the paired (McNemar-style)
    standard error sqrt(w2r + r2w - (w2r - r2w)^2 / n) / n, so 3 fixed and 1 broken out of 150 is not
    "+1.3 points" but "+1.3 [-1.3, +4.0]"."""
    if n <= 0:
        return 0.0, 0.0, 0.0
    diff = wrong_to_right - right_to_wrong
    gain = diff / n
    se = math.sqrt(max(wrong_to_right + right_to_wrong - diff * diff / n, 0.0)) / n
    return gain, gain - z * se, gain + z * se


def average_precision(scores, truth) -> float:
    """Average precision of `scores` ranking the positives of `truth` (0/1): the precision at each positive's
    rank, averaged over the positives, tied scores counted as one threshold (scikit-learn's
    average_precision_score). NaN when there is no positive."""
    import numpy as np

    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=np.float64) > 0.5
    positives = truth.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, truth = scores[order], truth[order]
    # The last index of each run of equal scores: one threshold per distinct score.
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    found = np.cumsum(truth)[last]
    precision = found / (last + 1)
    recall_step = np.diff(np.r_[0, found]) / positives
    return float((recall_step * precision).sum())
