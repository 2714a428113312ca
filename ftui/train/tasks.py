"""What the head predicts and how it is scored: `Task` for classification, multilabel and regression.

A Task owns the head's output size, the loss, the live metric and the output activation, so the Trainer
and the results code call it instead of assuming softmax classes:
- classification: cross-entropy (class weights, label smoothing), metric accuracy, softmax outputs;
- multilabel: binary cross-entropy with logits per label (pos_weight = negatives/positives per label on
  request), metric macro average precision (mAP), sigmoid outputs;
- regression: a linear output per value on standardized targets (train mean/std, stored in the checkpoint
  meta), Huber (default) or MSE loss, metric MAE in the user's units, outputs mapped back to those units.

Multilabel and regression batches carry row indices into the task's target table instead of labels (the
data pipelines, feature cache and distributed padding then treat every task alike); padding rows are
IGNORE and add nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ftui.stats import average_precision
from ftui.train.distributed import IGNORE

CLASSIFICATION, MULTILABEL, REGRESSION = "classification", "multilabel", "regression"
REGRESSION_LOSSES = ("huber", "mse")
# The task's live metric: its name for charts and whether the score (higher is better) is its negative.
METRIC_NAMES = {CLASSIFICATION: "accuracy", MULTILABEL: "mAP", REGRESSION: "MAE"}


def metric_value(task: str, score: float | None) -> float | None:
    """The metric a user reads from the trainer's score (higher is better): MAE is the score's negative."""
    if score is None:
        return None
    return -score if task == REGRESSION else score


def best_score(trainer) -> float:
    """A trainer's best val score so far (-inf before any): regression's score, -MAE, is below zero."""
    best = trainer.result.best_val_acc
    return -math.inf if best is None else best


def target_meta(kind: str, targets: torch.Tensor | None) -> dict[str, Any]:
    """What a checkpoint records about the targets: the task, and for regression the train mean and std."""
    meta: dict[str, Any] = {"task": kind}
    if kind == REGRESSION and targets is not None:
        mean = targets.double().mean(0)
        std = targets.double().std(0, unbiased=False).clamp_min(1e-12)
        meta["target_mean"], meta["target_std"] = mean.tolist(), std.tolist()
    return meta


class Task:
    """Classification: cross-entropy on class indices (the trainer's behaviour before tasks existed)."""

    kind = CLASSIFICATION

    def __init__(self, meta: dict[str, Any], table: torch.Tensor | None = None, config=None,
                 class_weight: torch.Tensor | None = None) -> None:
        self.meta = meta
        self.names = list(meta["classes"])
        self.table = table  # multilabel / regression: one target row per train+val item
        self.config = config
        self.class_weight = class_weight

    @property
    def out_features(self) -> int:
        return len(self.names)

    @property
    def metric_name(self) -> str:
        return METRIC_NAMES[self.kind]

    def to(self, device: torch.device) -> Task:
        if self.table is not None:
            self.table = self.table.to(device)
        return self

    # --- training ---------------------------------------------------------------------------------
    def criterion(self) -> nn.Module:
        """The summed training loss (the trainer divides by the batch's weight)."""
        smoothing = self.config.label_smoothing if self.config is not None else 0.0
        return nn.CrossEntropyLoss(weight=self.class_weight, label_smoothing=smoothing, reduction="sum")

    def val_criterion(self) -> nn.Module:
        return nn.CrossEntropyLoss(reduction="sum")

    def mean_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss as a batch mean (the head trained alone steps on it)."""
        smoothing = self.config.label_smoothing if self.config is not None else 0.0
        return nn.functional.cross_entropy(logits, y, weight=self.class_weight, label_smoothing=smoothing)

    def meter(self) -> Meter:
        return AccuracyMeter()

    def task_meter(self) -> Meter | None:
        """The live metric's meter for multilabel / regression; None for classification (the trainer counts
        correct answers itself)."""
        return None if self.kind == CLASSIFICATION else self.meter()

    # --- outputs ----------------------------------------------------------------------------------
    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """What a user reads: class probabilities, label probabilities or values in their units."""
        return torch.softmax(logits.float(), dim=1)


class MultilabelTask(Task):
    """Binary cross-entropy with logits per label; live metric mAP; sigmoid outputs."""

    kind = MULTILABEL

    def __init__(self, meta, table=None, config=None, class_weight=None) -> None:
        super().__init__(meta, table, config, None)
        self.pos_weight = None
        if config is not None and config.class_weighted_loss and table is not None:
            train = table[: meta["num_train"]]
            positives = train.sum(0)
            # negatives / positives per label (torch's pos_weight), 1 where a label never occurs in train.
            self.pos_weight = torch.where(positives > 0, (len(train) - positives) / positives.clamp_min(1),
                                          torch.ones_like(positives))

    def to(self, device):
        super().to(device)
        if self.pos_weight is not None:
            self.pos_weight = self.pos_weight.to(device)
        return self

    def _bce(self, logits, y, pos_weight):
        keep = y != IGNORE
        target = self.table[y[keep]]
        loss = nn.functional.binary_cross_entropy_with_logits(logits[keep].float(), target, reduction="none",
                                                              pos_weight=pos_weight)
        return loss.mean(1).sum()  # the mean over labels, summed over images

    def criterion(self):
        return lambda logits, y: self._bce(logits, y, self.pos_weight)

    def val_criterion(self):
        return lambda logits, y: self._bce(logits, y, None)

    def mean_loss(self, logits, y):
        return self._bce(logits, y, self.pos_weight) / max(int((y != IGNORE).sum()), 1)

    def meter(self) -> Meter:
        return APMeter(self.table)

    def outputs(self, logits):
        return torch.sigmoid(logits.float())


class RegressionTask(Task):
    """Huber or MSE on standardized targets; live metric MAE in user units (score = -MAE); outputs in units."""

    kind = REGRESSION

    def __init__(self, meta, table=None, config=None, class_weight=None) -> None:
        super().__init__(meta, table, config, None)
        self.mean = torch.tensor(meta["target_mean"], dtype=torch.float32)
        self.std = torch.tensor(meta["target_std"], dtype=torch.float32)
        self.loss_name = getattr(config, "regression_loss", "huber") if config is not None else "huber"

    def to(self, device):
        super().to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def _loss(self, logits, y):
        keep = y != IGNORE
        target = (self.table[y[keep]] - self.mean) / self.std
        pred = logits[keep].float()
        if self.loss_name == "mse":
            loss = nn.functional.mse_loss(pred, target, reduction="none")
        else:
            loss = nn.functional.huber_loss(pred, target, reduction="none", delta=1.0)
        return loss.mean(1).sum()

    def criterion(self):
        return self._loss

    def val_criterion(self):
        return self._loss

    def mean_loss(self, logits, y):
        return self._loss(logits, y) / max(int((y != IGNORE).sum()), 1)

    def meter(self) -> Meter:
        return AbsErrorMeter(self.table, self.mean, self.std)

    def outputs(self, logits):
        return logits.float() * self.std.to(logits.device) + self.mean.to(logits.device)


TASK_CLASSES = {CLASSIFICATION: Task, MULTILABEL: MultilabelTask, REGRESSION: RegressionTask}


def task_losses(config, data, device: torch.device) -> tuple[Task, torch.Tensor | None, nn.Module, nn.Module]:
    """(task, class weights, training loss, validation loss) for a run's prepared data. Classification keeps the
    recipe's criteria (ftui/train/recipes.py); multilabel and regression use their task's (batches then carry
    target-table rows). Class weights apply to classification only (multilabel weighs by pos_weight)."""
    from ftui.train.recipes import class_weights, make_criteria

    kind = data.meta.get("task", CLASSIFICATION)
    class_weight = None
    if config.class_weighted_loss and kind == CLASSIFICATION:
        class_weight = class_weights(data.train_class_counts()).to(device)
    criterion, val_criterion = make_criteria(config, class_weight)
    task = make_task(data.meta, getattr(data, "targets", None), config, class_weight).to(device)
    if kind != CLASSIFICATION:
        criterion, val_criterion = task.criterion(), task.val_criterion()
    return task, class_weight, criterion, val_criterion


def make_task(meta: dict[str, Any], table: torch.Tensor | None = None, config=None,
              class_weight: torch.Tensor | None = None) -> Task:
    """The Task a checkpoint's (or a data source's) meta describes; a meta without "task" is classification."""
    return TASK_CLASSES[meta.get("task", CLASSIFICATION)](meta, table, config, class_weight)


# --- live metrics ------------------------------------------------------------------------------------
class Meter:
    """A pass's metric: `add(logits, y)` per batch, then `result(dist)` -> (score, images) over every rank.
    The score is higher-is-better (accuracy, mAP, -MAE)."""

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    def result(self, dist) -> tuple[float, int]:
        raise NotImplementedError


class AccuracyMeter(Meter):
    def __init__(self) -> None:
        self.correct, self.seen = 0, 0

    def add(self, logits, y):
        self.correct += int((logits.argmax(1) == y).sum())
        self.seen += int((y != IGNORE).sum())

    def counts(self, dist) -> tuple[int, int]:
        correct, seen = dist.sum([self.correct, self.seen])
        return int(correct), int(seen)

    def result(self, dist):
        correct, seen = self.counts(dist)
        return correct / max(seen, 1), seen


class APMeter(Meter):
    """Macro average precision over the labels that occur in the pass (all ranks' rows gathered)."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table, self.logits, self.rows = table, [], []

    def add(self, logits, y):
        self.logits.append(logits.detach().float())
        self.rows.append(y.detach())

    def result(self, dist):
        if not self.rows:
            return 0.0, 0
        logits, rows = torch.cat(self.logits), torch.cat(self.rows)
        if dist.enabled:  # every rank holds the same number of rows (padding included)
            logits, rows = dist.gather(logits), dist.gather(rows)
        keep = rows != IGNORE
        truth = self.table[rows[keep]].cpu().numpy()
        scores = logits[keep].cpu().numpy()
        return macro_ap(scores, truth), int(keep.sum())


def macro_ap(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean average precision over the labels with at least one positive (0.0 when none has)."""
    aps = [average_precision(scores[:, k], truth[:, k]) for k in range(truth.shape[1]) if truth[:, k].any()]
    return float(np.mean(aps)) if aps else 0.0


class AbsErrorMeter(Meter):
    """Summed absolute error in the user's units (mean over outputs per image); score = -MAE."""

    def __init__(self, table, mean, std) -> None:
        self.table, self.mean, self.std = table, mean, std
        self.total, self.seen = 0.0, 0

    def add(self, logits, y):
        keep = y != IGNORE
        pred = logits[keep].float() * self.std + self.mean
        self.total += float((pred - self.table[y[keep]]).abs().mean(1).sum())
        self.seen += int(keep.sum())

    def result(self, dist):
        total, seen = dist.sum([self.total, self.seen])
        return -total / max(seen, 1), int(seen)
