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
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ftui.train.featurecache import CachedTrainFeatures, CachedValFeatures
from ftui.train.recipes import make_optimizer
from ftui.train.resume import rng_preserved


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
