"""Multilabel and regression metrics: hand-computed values, thresholds chosen on val, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from ftui.results import taskmetrics as tm
from ftui.results.evaluate import pr_curves


def test_average_precision_matches_the_classification_pr_curves():
    rng = np.random.default_rng(0)
    probs = rng.random((40, 3))
    probs /= probs.sum(1, keepdims=True)
    true = rng.integers(0, 3, 40)
    classes = ["a", "b", "c"]
    _, average = pr_curves(classes, [classes[t] for t in true], probs.tolist())
    truth = np.eye(3)[true]
    for k, name in enumerate(classes):
        assert tm.label_aps(probs, truth)[k] == pytest.approx(average[name])


def test_thresholds_maximise_each_labels_f1_on_val():
    probs = np.array([[0.9, 0.2], [0.7, 0.35], [0.4, 0.3], [0.2, 0.1]])
    truth = np.array([[1, 1], [1, 1], [0, 0], [0, 0]])
    cuts = tm.choose_thresholds(probs, truth)
    assert 0.4 < cuts[0] <= 0.7  # label 0 separates between 0.4 and 0.7
    # Label 1's positives score 0.2 and 0.35 with a negative at 0.3 between: keeping all three (F1 0.8) beats
    # keeping 0.35 alone (F1 0.67), so the cut falls between 0.1 and 0.2.
    assert 0.1 < cuts[1] <= 0.2
    at = probs >= np.array(cuts)
    assert tm.f1_scores(at, truth.astype(bool))[0] == 1.0


def test_multilabel_numbers_by_hand():
    probs = np.array([[0.9, 0.8], [0.6, 0.1], [0.2, 0.7], [0.1, 0.2]])
    truth = np.array([[1, 1], [1, 0], [0, 1], [0, 0]])
    m = tm.multilabel_metrics(probs, truth, ["a", "b"], [0.5, 0.5])
    assert m["map"] == 1.0 and m["exact_match"] == 1.0 and m["f1_at_0.5"] == 1.0
    assert m["label_cardinality"] == 1.0 and m["predicted_cardinality"] == 1.0
    m = tm.multilabel_metrics(probs, truth, ["a", "b"], [0.95, 0.5])  # label a never predicted
    assert m["exact_match"] == 0.5  # the two images without label a are right everywhere
    assert m["per_label"][0]["f1_at_val_threshold"] == 0.0 and m["per_label"][1]["f1_at_val_threshold"] == 1.0
    assert m["f1_at_val_thresholds"] == 0.5
    lo, hi = m["map_ci95"]
    assert lo <= m["map"] <= hi


def test_cooccurrence_counts_the_errors_beside_each_true_label():
    probs = np.array([[0.9, 0.2], [0.9, 0.9], [0.1, 0.9]])
    truth = np.array([[1, 1], [1, 0], [0, 1]])
    table = tm.cooccurrence_errors(probs, truth, [0.5, 0.5])
    # Image 0 has a and b, b missed: row a column b, and b's diagonal (missed). Image 1: a true, b wrongly on:
    # row a column b again. Image 2 is right. a is never missed.
    assert table == [[0, 2], [0, 1]]


def test_regression_numbers_by_hand():
    true = np.array([[1.0], [2.0], [3.0], [4.0]])
    pred = np.array([[1.5], [2.0], [2.0], [4.0]])
    m = tm.regression_metrics(pred, true, ["y"], [2.0])
    assert m["mae"] == pytest.approx(0.375)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 1) / 4))
    assert m["r2"] == pytest.approx(1 - 1.25 / 5.0)
    assert m["mae_mean_baseline"] == pytest.approx((1 + 0 + 1 + 2) / 4)
    lo, hi = m["mae_ci95"]
    assert lo <= m["mae"] <= hi and lo >= 0


def test_bootstrap_interval_narrows_with_more_images():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 500):
        errors = rng.normal(0, 1, n)
        lo, hi = tm.bootstrap_interval(lambda idx: float(np.abs(errors[idx]).mean()), n)
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2
