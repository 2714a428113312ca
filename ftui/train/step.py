"""One optimizer step of the trainer: micro-batches, autocast and grad scaling, DDP's gradient sync.

On CPU each forward/backward sees at most `devices.CPU_MAX_MICRO_BATCH` images and gradients accumulate to the
user's batch (exact with frozen BatchNorm); the summed loss over the batch's weight is the batch's mean.
"""

from __future__ import annotations

import torch

from ftui import devices
from ftui.train.failures import check_finite


def optimizer_step(trainer, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
    """Train `trainer.forward` on one batch and step optimizer and scheduler; (mean loss, correct, images) of
    the global batch (every rank's share when several processes train)."""
    speed, dist = trainer.speed, trainer.dist
    trainer.optimizer.zero_grad(set_to_none=True)
    norm, scale = dist.loss_norm(y, trainer.class_weight)
    loss_value, correct = 0.0, 0
    pieces = list(zip(x.split(speed.micro_batch), y.split(speed.micro_batch)))
    for k, (xm, ym) in enumerate(pieces):
        if speed.channels_last and xm.dim() == 4:
            xm = xm.contiguous(memory_format=torch.channels_last)
        with dist.sync_gradients(trainer.forward, last=k == len(pieces) - 1):
            with devices.autocast(speed.device, speed.use_amp):
                logits = trainer.forward(xm)
                loss = trainer.criterion(logits.float(), ym) / norm
            check_finite(loss, f"epoch {trainer.epoch} step {trainer.batch}", trainer.config.lr)
            trainer.scaler.scale(loss * scale).backward()
        loss_value += float(loss.detach())
        correct += int((logits.detach().argmax(1) == ym).sum())
        if trainer.train_meter is not None:  # multilabel / regression: the task's metric over the epoch
            trainer.train_meter.add(logits.detach(), ym)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.scheduler.step()
    return dist.batch_totals(loss_value, correct, y)
