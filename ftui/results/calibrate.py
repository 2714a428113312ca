"""The job's post-training step: evaluate the kept weights on val, fit the temperature and the abstain
threshold on those val logits (ftui/results/trust.py), fit the feature-space "none of these" score on the
train images (ftui/results/oodscore.py), store them in the checkpoint, and score again with them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ftui.results.evaluate import Evaluation, _items, evaluate, run_dataset, run_targets, score
from ftui.results.loading import LoadedRun, load_run
from ftui.results.predict import Predictor
from ftui.results.trust import Trust, add_feature_score, fit_trust, single_label
from ftui.runs import RunFolder, update_checkpoint

log = logging.getLogger(__name__)


def calibrate_and_evaluate(run_dir: str | Path, dataset=None, device: str = "cpu",
                           progress: Callable[[str], None] = lambda message: None) -> Evaluation:
    """The val Evaluation of a finished run, calibrated; best.pt (else last.pt) gets a "trust" entry.

    Only single-label classification is calibrated; other tasks are evaluated as they are."""
    run = load_run(run_dir)
    if not single_label(run.config) or run.kind != "classification":
        return evaluate(run, split="val", dataset=dataset, device=device)
    dataset = run_dataset(run, dataset)
    items = _items(dataset, "val")
    targets = run_targets(run, dataset, items)
    predictor = Predictor(run, device=device, features=True)
    logits, features = predictor.logits_and_features([it.path for it in items])
    progress("calibrating")
    trust = fit_trust(logits, targets, fit_t=not run.members)
    scores = None
    if features is not None:
        progress("fitting the none-of-these score on the train images")
        scores = fit_feature_score(trust, predictor, dataset, features)
    update_checkpoint(RunFolder(run.path).path / f"{run.checkpoint}.pt", trust=trust.to_meta())
    run.trust = trust
    log.info("run %s: temperature %.3f, ECE %.4f -> %.4f (2-fold on val), abstain below %s %.3f",
             run.id, trust.temperature, trust.ece_before or 0, trust.ece_after or 0, trust.ood_method,
             trust.threshold or 0)
    calibrated = score(run, "val", items, targets, logits, scores)
    # The temperature was fitted on these images: ece_after here is in-sample; the 2-fold value is honest.
    calibrated.calibration["ece_after_in_sample"] = calibrated.calibration["ece_after"]
    calibrated.calibration["ece_after"] = round(trust.ece_after, 4)
    calibrated.calibration["abstain_rate"] = round(trust.abstain_rate_val, 4)
    return calibrated


def fit_feature_score(trust: Trust, predictor: Predictor, dataset, val_features: torch.Tensor) -> torch.Tensor | None:
    """Fit the Mahalanobis score on (a stratified sample of at most MAX_FIT_IMAGES) train images and make it
    the run's "none of these" score in `trust`; returns the val images' scores (None: too few train images,
    the run keeps the energy score)."""
    from ftui.results.oodscore import MIN_PER_CLASS, Mahalanobis, fit_sample

    run: LoadedRun = predictor.run
    train = list(dataset.split("train"))
    if len(train) < MIN_PER_CLASS * len(run.classes):
        return None
    labels = run_targets(run, dataset, train)
    picked = fit_sample(labels.tolist())
    _, train_features = predictor.logits_and_features([train[i].path for i in picked])
    scorer = Mahalanobis.fit(train_features, labels[picked])
    add_feature_score(trust, scorer, val_features)
    return scorer(val_features)
