"""The job's post-training step: evaluate the kept weights on val, fit the temperature and the abstain
threshold on those val logits (ftui/results/trust.py), store them in the checkpoint, and score again with
them, all from one pass over the val images."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ftui.results.evaluate import Evaluation, evaluate, score
from ftui.results.loading import load_run
from ftui.results.trust import fit_trust, single_label
from ftui.runs import RunFolder, update_checkpoint

log = logging.getLogger(__name__)


def calibrate_and_evaluate(run_dir: str | Path, dataset=None, device: str = "cpu",
                           progress: Callable[[str], None] = lambda message: None) -> Evaluation:
    """The val Evaluation of a finished run, calibrated; best.pt (else last.pt) gets a "trust" entry.

    Only single-label classification is calibrated; other tasks are evaluated as they are."""
    run = load_run(run_dir)
    evaluation = evaluate(run, split="val", dataset=dataset, device=device)
    if not single_label(run.config):
        return evaluation
    progress("calibrating")
    trust = fit_trust(evaluation.logits, evaluation.targets, fit_t=not run.members)
    folder = RunFolder(run.path)
    update_checkpoint(folder.path / f"{run.checkpoint}.pt", trust=trust.to_meta())
    run.trust = trust
    log.info("run %s: temperature %.3f, ECE %.4f -> %.4f (2-fold on val), abstain below energy %.3f",
             run.id, trust.temperature, trust.ece_before or 0, trust.ece_after or 0, trust.energy_threshold or 0)
    calibrated = score(run, "val", evaluation.items, evaluation.targets, evaluation.logits)
    # The temperature was fitted on these images: ece_after here is in-sample; the 2-fold value is honest.
    calibrated.calibration["ece_after_in_sample"] = calibrated.calibration["ece_after"]
    calibrated.calibration["ece_after"] = round(trust.ece_after, 4)
    calibrated.calibration["abstain_rate"] = round(trust.abstain_rate_val, 4)
    return calibrated
