"""The combined module of an ensemble of runs (ftui/results/ensemble.py makes and reports them): members'
calibrated probabilities averaged, returned as logits whose softmax is exactly that mean and whose
logsumexp (the "none of these" energy score) is the members' mean energy."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class Ensemble(nn.Module):
    """Members' calibrated probabilities averaged, returned as logits (see the module docstring)."""

    def __init__(self, members: list[nn.Module], temperatures: list[float]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("temperatures", torch.tensor([float(t) for t in temperatures]))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        log_probs, energies = [], []
        # The first member runs last: Grad-CAM explains the last spatial map of the forward pass, so the
        # heat map is the first member's (the run the ensemble was named after).
        for i in reversed(range(len(self.members))):
            z = self.members[i](image).float()
            log_probs.append(torch.log_softmax(z / self.temperatures[i], dim=1))
            energies.append(torch.logsumexp(z, dim=1, keepdim=True))
        mean_log_prob = torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(log_probs))
        return mean_log_prob + torch.stack(energies).mean(0)


def load_ensemble_model(ckpt: dict[str, Any], num_classes: int) -> Ensemble:
    """Rebuild the combined module from an ensemble best.pt (members' architectures, then all weights)."""
    from ftui.models.backbones import build

    members = [build(m["backbone"], num_classes, weights="none") for m in ckpt["members"]]
    model = Ensemble(members, [m["temperature"] for m in ckpt["members"]])
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model
