"""A linear head fitted to convergence on frozen features: L2-regularised logistic regression by L-BFGS.

On cached features this takes seconds, and it is what a careful user does by hand (a tuned linear probe):
the weight decay is chosen on a held-out fold of the TRAINING images, never on val, then the head is refit
on all of train. Both the reference probe (ftui/bench/reference.py) and the default recipe's first phase use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ftui.devices import single_torch_thread

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
