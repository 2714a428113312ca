"""The run's validation pass: a module scored on a batch source (BatchNorm folded on CPU, inference autocast)."""

from __future__ import annotations

import torch
from torch import nn

from ftui import devices
from ftui.models.fusing import fuse_for_inference
from ftui.train.batches import IGNORE


def unwrapped(module: nn.Module) -> nn.Module:
    """The module inside DDP / torch.compile wrappers (validation runs it directly, BatchNorm folded)."""
    module = getattr(module, "_orig_mod", module)
    return getattr(module, "module", module) if module.__class__.__name__ == "DistributedDataParallel" else module


@torch.inference_mode()
def evaluate_sums(forward, source, criterion, device, use_amp: bool, channels_last: bool,
                  meter=None) -> list[float]:
    """[summed loss, correct, seen] over `source` with the module in eval mode (padding labels skipped);
    a task's `meter` (multilabel / regression, ftui/train/tasks.py) sees every batch's outputs too."""
    was_training = forward.training
    forward.eval()
    # A BatchNorm-folded copy of the module as it is now: same outputs, faster on CPU. On a GPU, cuDNN's
    # BatchNorm costs little next to tracing the model again every epoch: the module runs as it is.
    fast = fuse_for_inference(forward) if device.type != "cuda" else forward
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    total_loss, correct, seen = 0.0, 0, 0
    try:
        for x, y in source.batches():
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with devices.autocast(device, use_amp):
                logits = fast(x).float()
            total_loss += float(criterion(logits, y))
            correct += int((logits.argmax(1) == y).sum())
            seen += int((y != IGNORE).sum())
            if meter is not None:
                meter.add(logits, y)
    finally:
        forward.train(was_training)
    return [total_loss, correct, seen]
