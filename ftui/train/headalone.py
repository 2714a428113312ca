"""The head trained alone, as a candidate for best.pt before the body trains.

On ImageNet-like photos the head alone on frozen features is often the best model a short budget buys, and
training every layer overfits (bench-recipes, hymenoptera at 224 px: head alone 0.961, the fine-tune 0.941,
means of three seeds). On shifted data the fine-tune is far ahead (clothing: 0.86 vs 0.78). Neither is known
in advance, so the default recipe measures both: at the end of its head phase, while the frozen features are
cached, a copy of the head trains on for the whole epoch budget (fractions of a second per epoch: no backbone
pass) and is validated after each epoch on the cached val features. Its best epoch becomes best.pt when it
beats every epoch so far; later epochs replace it only by beating it, exactly like any epoch would.

The body then trains from the head as the head phase left it, not from this one: after a head trained to
convergence, the body's first AdamW steps followed noise and the run ended lower (README, "Recipes").
Random states are saved and restored around the extra epochs, so the run's other epochs are the same as
without them.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ftui.train.callbacks import Callback
from ftui.train.featurecache import CachedTrainFeatures, CachedValFeatures
from ftui.train.recipes import make_optimizer
from ftui.train.resume import rng_preserved
from ftui.train.tasks import best_score
from ftui.train.validation import evaluate_sums, unwrapped


@dataclass
class HeadAloneResult:
    """The head trained alone: its best epoch's val accuracy and weights (a state_dict of the head module)."""

    val_acc: float
    val_loss: float
    epoch: int
    epochs: int
    state: dict[str, torch.Tensor]


def reads_cached_features(train_source, val_source) -> bool:
    """True when both sources read stored features (a pass costs no backbone work), not images."""
    return (isinstance(train_source, CachedTrainFeatures) and isinstance(val_source, CachedValFeatures)
            and not train_source.store.over_cap and train_source.views_stored >= train_source.num_views
            and val_source.stored)


def train_head_alone(head: nn.Module, train_source, config, stop_requested: Callable[[], bool],
                     val_scores: Callable[[nn.Module], tuple[float, float]],
                     loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     ) -> HeadAloneResult | None:
    """Train a copy of `head` for `config.epochs` epochs (the run's optimizer at config.lr, cosine to zero:
    the old head-only default) on the cached train features, scoring each epoch with `val_scores` (val loss,
    val accuracy); `head` is left as it was.

    Returns the best epoch by val accuracy (the task's score), or None when stopped. `loss_fn(logits, y)` is
    the batch's mean training loss (the task's; default plain cross-entropy). `stop_requested()` is checked
    per batch.
    """
    if loss_fn is None:
        def loss_fn(logits, y):
            return nn.functional.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
    candidate = copy.deepcopy(head)
    params = [p for p in candidate.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, [{"params": params, "lr": config.lr}])
    total = max(1, config.epochs * train_source.num_batches(config.batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    best: HeadAloneResult | None = None
    with rng_preserved(train_source.generator):
        for epoch in range(1, config.epochs + 1):
            candidate.train()
            for x, y in train_source.batches():
                if stop_requested():
                    return None
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(candidate(x).float(), y)
                loss.backward()
                optimizer.step()
                scheduler.step()
            val_loss, val_acc = val_scores(candidate)
            if best is None or val_acc > best.val_acc:
                best = HeadAloneResult(val_acc, val_loss, epoch, config.epochs,
                                       {k: v.detach().clone() for k, v in candidate.state_dict().items()})
    return best


@dataclass
class HeadAloneOutcome:
    """What the run reports of the head alone (FitResult.head_alone, status.json): no note text to parse."""

    val_acc: float
    epoch: int  # its own best epoch, of `epochs`
    epochs: int
    seconds: float
    kept_at_epoch: int | None  # the run's epoch at which it became best.pt, None when not kept
    best_at_end: bool = False  # still best.pt when the run ended

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, best_epoch: int | None) -> str:
        """The run's note: its val accuracy, its cost, and whether best.pt is still it."""
        text = (f"head alone ({self.epochs} epochs on the cached features, {self.seconds:.3f} s): best val acc "
                f"{self.val_acc:.4f} at its epoch {self.epoch}")
        if self.kept_at_epoch is None:
            return text + ", not kept (the head phase's epoch was as good)"
        if self.best_at_end:
            return text + f", kept as best.pt (epoch {self.kept_at_epoch}): no all-layer epoch beat it"
        return text + f", best.pt until epoch {best_epoch} beat it"


class HeadAlone(Callback):
    """At the end of an SGD head phase with a later phase, on cached features, in one process: train the head
    alone (train_head_alone) and keep it as best.pt when it beats every epoch so far. The body goes on from
    the head as it is (its epochs are the same as without this)."""

    def __init__(self, checkpoint=None) -> None:
        self.checkpoint = checkpoint  # the run's Checkpoint callback, None without a run folder

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        trainer = info["trainer"]
        if self._due(trainer):
            self._train(trainer, info.get("val_acc"))

    def on_fit_end(self, info: dict[str, Any]) -> None:
        trainer = info["trainer"]
        outcome = trainer.result.head_alone
        if outcome is None:
            return
        best = (trainer.result.best_epoch, trainer.result.best_val_acc)
        outcome.best_at_end = outcome.kept_at_epoch is not None and best == (outcome.kept_at_epoch, outcome.val_acc)
        trainer.notes.append(outcome.summary(trainer.result.best_epoch))

    @staticmethod
    def _due(trainer) -> bool:
        phase, index = trainer.phase, trainer.phase_index
        last_of_phase = trainer.epoch == sum(p.epochs for p in trainer.phases[:index + 1])
        return (phase.name == "head" and phase.solver == "sgd" and last_of_phase
                and index + 1 < len(trainer.phases) and not trainer.dist.enabled
                and not trainer.control.should_stop
                and reads_cached_features(trainer.train_source, trainer.val_source))

    def _train(self, trainer, val_acc: float | None) -> None:
        trainer.say("training the head alone on the cached features")
        head, t0 = unwrapped(trainer.forward), time.perf_counter()
        found = train_head_alone(head, trainer.train_source, trainer.config, trainer.stop_requested,
                                 lambda candidate: _val_scores(trainer, candidate), trainer.task.mean_loss)
        if found is None:
            return
        kept = found.val_acc > best_score(trainer)
        trainer.result.head_alone = HeadAloneOutcome(found.val_acc, found.epoch, found.epochs,
                                                     time.perf_counter() - t0, trainer.epoch if kept else None)
        trainer.say(f"head alone: best val acc {found.val_acc:.4f}" + (" (best.pt so far)" if kept else ""))
        if not kept:
            return
        trainer.result.best_val_acc, trainer.result.best_epoch = found.val_acc, trainer.epoch
        if self.checkpoint is not None:
            live = copy.deepcopy(head.state_dict())
            head.load_state_dict(found.state)
            meta = {**self.checkpoint.meta(trainer, found.val_acc), "head_alone": True}
            self.checkpoint.save_best(trainer.model, meta)
            head.load_state_dict(live)
            self.checkpoint.save_last(trainer, val_acc)  # last.pt's resume state: the new best val acc


def _val_scores(trainer, head: nn.Module) -> tuple[float, float]:
    """(val loss, val accuracy) of a head on the cached val features, in float32 (the head is tiny)."""
    meter = None if trainer.task.kind == "classification" else trainer.task.meter()
    total_loss, correct, seen = evaluate_sums(head, trainer.val_source, trainer.val_criterion,
                                              trainer.speed.device, use_amp=False, channels_last=False,
                                              meter=meter)
    score = correct / max(seen, 1) if meter is None else meter.result(trainer.dist)[0]
    return total_loss / max(seen, 1), score
