"""How far a training job is and how long it has left, weighted by what each epoch costs.

Counting epochs alone was too optimistic: with the fine-tune recipe the head's epoch on cached features is a
fraction of an all-layer epoch, yet it counted as a fifth of a 5-epoch bar ("20%, 18 s left" with 85 s
left). Each epoch is weighed by its kind until one of that kind has been measured, then by its measured time:

- a head epoch that fills the feature cache: one forward pass over the images (1 unit);
- a later head epoch on the cached features: next to nothing (0.05 units);
- an epoch that trains the backbone: forward and backward passes (3 units, the usual backward ~ 2x forward).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

UNITS = {"head_first": 1.0, "head_cached": 0.05, "full": 3.0}


def epoch_kinds(config) -> list[str]:
    """The kind of each epoch of a run, in order (see UNITS)."""
    from ftui.train.recipes import plan_phases

    # plan_phases only asks whether the head alone trains; two stand-in group names say which.
    trainable = ["head"] if config.train_groups.strip() == "head" else ["body", "head"]
    kinds: list[str] = []
    for phase in plan_phases(config, ["body", "head"], trainable):
        if phase.trainable == ["head"] and config.feature_cache:
            kinds += ["head_first"] + ["head_cached"] * (phase.epochs - 1)
        else:
            kinds += ["full"] * phase.epochs
    return kinds[:config.epochs]


def _measured(kinds: list[str], history: pd.DataFrame) -> dict[str, float]:
    """Seconds per epoch of each kind measured so far (the mean of its finished epochs)."""
    if history is None or history.empty or "seconds" not in history:
        return {}
    seconds: dict[str, list[float]] = {}
    for epoch, value in zip(history["epoch"], history["seconds"]):
        if 1 <= int(epoch) <= len(kinds) and pd.notna(value):
            seconds.setdefault(kinds[int(epoch) - 1], []).append(float(value))
    return {kind: sum(v) / len(v) for kind, v in seconds.items()}


def progress_and_eta(snap: dict[str, Any], kinds: list[str], history: pd.DataFrame | None
                     ) -> tuple[float, float | None]:
    """(fraction done 0..1, seconds left or None) from the job's counters and its finished epochs."""
    if snap.get("status") == "done":
        return 1.0, 0.0
    epoch, step, spe = snap.get("epoch") or 0, snap.get("step") or 0, snap.get("steps_per_epoch") or 0
    if not kinds or not epoch or not spe:
        return 0.0, None
    measured = _measured(kinds, history)
    # Seconds per unit from what was measured (None until one epoch has finished).
    rates = [measured[k] / UNITS[k] for k in measured if UNITS[k] >= 0.5]
    per_unit = sum(rates) / len(rates) if rates else None

    def cost(kind: str) -> float:
        if kind in measured:
            return measured[kind]
        return UNITS[kind] * (per_unit or 1.0)

    costs = [cost(k) for k in kinds]
    current = min(epoch, len(kinds)) - 1
    done = sum(costs[:current]) + costs[current] * min(step / spe, 1.0)
    total = sum(costs)
    fraction = max(0.0, min(1.0, done / total)) if total else 0.0
    if per_unit is not None:
        return fraction, total - done
    elapsed = snap.get("elapsed_s")
    # Before the first epoch ends: the elapsed time scaled by the weighted fraction.
    return fraction, (elapsed * (1 - fraction) / fraction if elapsed and fraction > 0.02 else None)
