"""A linear head fitted to convergence on frozen features: L2-regularised logistic regression by L-BFGS.

On cached features this takes seconds, and it is what a careful user does by hand (a tuned linear probe):
the weight decay is chosen on a held-out fold of the TRAINING images, never on val, then the head is refit
on all of train. Both the reference probe (ftui/bench/reference.py) and the default recipe's first phase use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ftui import devices
from ftui.devices import single_torch_thread
from ftui.models.backbones import BackboneError, classifier_head
from ftui.train.callbacks import Callback, CancelEpoch
from ftui.train.failures import StopRequested

# Strengths of 0.5 * wd * ||W||^2 added to the mean cross-entropy, strongest first: each fit starts from the
# previous solution (a regularisation path), which converges in a fraction of the iterations. Below 1e-4 the
# separable small sets this is for took 20-30x longer to converge for no held-out gain (measured).
WEIGHT_DECAYS = (1.0, 1e-1, 1e-2, 1e-3, 1e-4)
HOLDOUT_FRACTION = 0.2
MAX_ITER = 100


@dataclass
class HeadFit:
    """The fitted head's weight (classes x features) and bias, and how its weight decay was chosen."""

    weight: torch.Tensor
    bias: torch.Tensor
    weight_decay: float
    holdout_loss: dict[float, float]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias minimising mean cross-entropy + 0.5 * weight_decay * ||W||^2 (full batch L-BFGS)."""
    # A copy: features computed under inference_mode cannot take part in autograd.
    x, y = x.float().clone(), y.clone()
    w = torch.zeros(num_classes, x.shape[1]) if init is None else init[0].detach().clone()
    b = torch.zeros(num_classes) if init is None else init[1].detach().clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=MAX_ITER, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad(), single_torch_thread():
        opt.step(closure)
    return w.detach(), b.detach()


def holdout_split(y: torch.Tensor, fraction: float = HOLDOUT_FRACTION, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit indices, held-out indices): about `fraction` of each class held out, at least one image of every
    class with two or more images kept on each side."""
    gen = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        held.append(idx[:k])
        fit.append(idx[k:])
    return torch.cat(fit), torch.cat(held)


def fit_head(x: torch.Tensor, y: torch.Tensor, num_classes: int,
             weight_decays: Sequence[float] = WEIGHT_DECAYS, seed: int = 0) -> HeadFit:
    """Pick weight decay by held-out loss on a fold of (x, y), then refit on all of (x, y)."""
    fit_idx, held_idx = holdout_split(y, seed=seed)
    losses: dict[float, float] = {}
    path: tuple[torch.Tensor, torch.Tensor] | None = None
    if len(held_idx) and len(weight_decays) > 1:
        for wd in weight_decays:
            path = fit_logistic(x[fit_idx], y[fit_idx], num_classes, wd, init=path)
            losses[wd] = float(F.cross_entropy(x[held_idx].float() @ path[0].T + path[1], y[held_idx]))
        best = min(losses, key=losses.get)
    else:
        best = weight_decays[len(weight_decays) // 2]
    w, b = fit_logistic(x, y, num_classes, best, init=path)
    return HeadFit(w, b, best, losses)


class LbfgsHead(Callback):
    """The recipe's head phase with head_fit="lbfgs": at the start of its epoch, the model's final Linear layer
    is fitted to convergence on the features it sees (one pass over the train images, the frozen body's cached
    features, then L-BFGS); the epoch's batches are skipped. A conv head or a model ftui did not build trains
    by SGD instead, and so do several processes (each would fit its own shard's head)."""

    def on_epoch_start(self, info: dict[str, Any]) -> None:
        trainer = info["trainer"]
        # Softmax classes only: multilabel / regression heads step by SGD.
        if trainer.phase.solver != "lbfgs" or trainer.dist.enabled or trainer.task.kind != "classification":
            return
        try:
            head = classifier_head(trainer.model, trainer.config.backbone)
        except (BackboneError, AttributeError):
            return
        if isinstance(head, nn.Linear):
            trainer.epoch_sums = _fit_in_place(trainer, head)
            raise CancelEpoch()


def _fit_in_place(trainer, head: nn.Linear) -> list[float]:
    """Fit `head` on the features it receives; [train loss, train accuracy, 1] (the epoch's sums)."""
    features, labels = [], []
    hook = head.register_forward_pre_hook(lambda module, args: features.append(args[0].detach().float().cpu()))
    trainer.say("fitting the head")
    forward, speed = trainer.forward, trainer.speed
    was_training = forward.training
    forward.eval()
    try:
        with torch.no_grad():
            for x, y in trainer.train_source.batches():
                if trainer.stop_requested():
                    raise StopRequested()
                if speed.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with devices.autocast(speed.device, speed.use_amp):
                    forward(x)
                labels.append(y.cpu())
    finally:
        hook.remove()
        forward.train(was_training)
    x, y = torch.cat(features).flatten(1), torch.cat(labels)
    fit = fit_head(x, y, trainer.data.meta["num_classes"], seed=trainer.config.seed)
    with torch.no_grad():
        head.weight.copy_(fit.weight.view_as(head.weight))
        head.bias.copy_(fit.bias)
    logits = x @ fit.weight.T + fit.bias
    trainer.notes.append(f"head fitted to convergence by L-BFGS on {len(y)} images' features, weight decay "
                         f"{fit.weight_decay:g} chosen on a held-out fold of train")
    return [float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean()), 1]
