"""Baselines the engine is measured against, each kept small and readable so the comparison is honest:

- the PyTorch transfer-learning tutorial's loop as published (ImageFolder + PIL transforms every epoch,
  batch 4, SGD 0.001 momentum 0.9, StepLR(7, 0.1), BatchNorm in train mode);
- the compute limit (synthetic tensors, no data loading);
- a tuned linear probe: frozen features, logistic regression with weight decay chosen on a fold of train;
- a hand fine-tune in the style of fastai's `fine_tune`: the head for one epoch, then every layer with
  discriminative one-cycle rates (1e-5 for the stem .. 1e-3 for the head, AdamW), BatchNorm statistics frozen.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class ReferenceResult:
    """What one tutorial run measured: per-epoch val accuracy and the wall clock at each epoch's end."""

    val_acc: list[float] = field(default_factory=list)
    epoch_end_seconds: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def best_val_acc(self) -> float:
        return max(self.val_acc, default=0.0)

    def seconds_to(self, target: float) -> float | None:
        """Wall time until val accuracy first reached `target`, or None."""
        for acc, t in zip(self.val_acc, self.epoch_end_seconds):
            if acc >= target:
                return t
        return None

    def epochs_to(self, target: float) -> int | None:
        for i, acc in enumerate(self.val_acc, start=1):
            if acc >= target:
                return i
        return None


def tutorial_loaders(data_dir: str | Path, batch_size: int = 4, num_workers: int = 2):
    """The tutorial's ImageFolder datasets and loaders (train/ and val/ folders)."""
    from torchvision import datasets, transforms

    data_transforms = {
        "train": transforms.Compose([
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]),
        "val": transforms.Compose([
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]),
    }
    image_datasets = {x: datasets.ImageFolder(str(Path(data_dir) / x), data_transforms[x]) for x in ("train", "val")}
    loaders = {
        x: torch.utils.data.DataLoader(image_datasets[x], batch_size=batch_size, shuffle=(x == "train"),
                                       num_workers=num_workers)
        for x in ("train", "val")
    }
    return image_datasets, loaders


def run_tutorial(
    model: nn.Module,
    head: nn.Module,
    data_dir: str | Path,
    epochs: int,
    head_only: bool,
    on_epoch: Callable[[int, float, float], None] | None = None,
    num_workers: int = 2,
    device: torch.device | str | None = None,
) -> ReferenceResult:
    """The tutorial's `train_model` loop on `model` (whose classifier is `head`), timed per epoch.

    Runs on `device` (default: where the model's parameters are); like the tutorial, each batch is copied
    there with a plain `.to(device)` (a CUDA model fed CPU tensors would fail).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    image_datasets, loaders = tutorial_loaders(data_dir, num_workers=num_workers)
    if head_only:
        for p in model.parameters():
            p.requires_grad = False
        for p in head.parameters():
            p.requires_grad = True
        params = head.parameters()
    else:
        params = model.parameters()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    result = ReferenceResult()
    best_wts = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        for phase in ("train", "val"):
            model.train() if phase == "train" else model.eval()
            corrects = 0
            for inputs, labels in loaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                corrects += int((outputs.argmax(1) == labels).sum())
            if phase == "train":
                scheduler.step()
            else:
                acc = corrects / len(image_datasets["val"])
                if acc > result.best_val_acc:
                    best_wts = copy.deepcopy(model.state_dict())
                result.val_acc.append(acc)
        now = time.perf_counter()
        result.epoch_seconds.append(now - epoch_start)
        result.epoch_end_seconds.append(now - start)
        if on_epoch:
            on_epoch(epoch + 1, result.val_acc[-1], now - epoch_start)
    model.load_state_dict(best_wts)
    return result


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compute_limit(
    model: nn.Module,
    batch_size: int,
    image_size: int = 224,
    steps: int = 6,
    train_params: list[nn.Parameter] | None = None,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
    infer: bool = True,
) -> dict[str, float]:
    """Images/s of forward+backward+step and of inference on synthetic tensors: no data loading at all.

    `infer=False` measures the training steps alone (the bench samples them between the engine's epochs)."""
    device = next(model.parameters()).device
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, 2, (batch_size,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    params = train_params if train_params is not None else [p for p in model.parameters() if p.requires_grad]
    # No trainable parameters (e.g. a BatchNorm-folded inference copy): inference only.
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9) if params else None
    criterion = nn.CrossEntropyLoss()

    def autocast():
        if autocast_dtype is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=autocast_dtype)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = criterion(model(x).float(), y)
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.inference_mode(), autocast():
            model(x)

    out = {}
    modes = [("train", train_step, "train")] if optimizer is not None else []
    infer_modes = [("infer", infer_step, "eval")] if infer or optimizer is None else []
    for name, step, mode in [*modes, *infer_modes]:
        model.train(mode == "train")
        # BatchNorm in eval for training too: what the engine does with frozen BN statistics.
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        step()  # warm-up: allocations, kernel selection
        _synchronize(device)  # CUDA runs asynchronously: time only the steps below
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _synchronize(device)
        out[f"{name}_images_per_s"] = steps * batch_size / (time.perf_counter() - start)
    model.eval()
    return out


# --- recipe references (ftui bench-recipes) ------------------------------------------------------------------

# A re-iterable source of (images, labels) batches: `batches()` starts a pass, `len(batches)` counts them.
Batches = Any


@torch.inference_mode()
def accuracy_and_loss(model: nn.Module, batches: Batches) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` in eval mode over `batches()`."""
    model.eval()
    device = next(model.parameters()).device
    correct = seen = 0
    loss = 0.0
    for x, y in batches():
        x, y = x.to(device), y.to(device)
        logits = model(x).float()
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        seen += int(y.shape[0])
    return correct / max(seen, 1), loss / max(seen, 1)


@torch.no_grad()
def frozen_features(body: nn.Module, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of every image through the frozen `body` in eval mode."""
    body.eval()
    device = next(body.parameters()).device
    xs, ys = [], []
    for x, y in batches():
        xs.append(body(x.to(device)).float().cpu())
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 num_classes: int) -> dict[str, float]:
    """Logistic regression on frozen features; weight decay picked on a fold of train (ftui/train/headfit.py)."""
    from ftui.train.headfit import fit_head

    fit = fit_head(train[0], train[1], num_classes)
    logits = val[0] @ fit.weight.T + fit.bias
    return {"val_acc": float((logits.argmax(1) == val[1]).float().mean()),
            "val_loss": float(nn.functional.cross_entropy(logits, val[1])), "weight_decay": fit.weight_decay}


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers to eval mode: pretrained running statistics are kept, never updated."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def fastai_fine_tune(model: nn.Module, groups: list, train_batches: Batches, val_batches: Batches,
                     epochs: int, base_lr: float = 2e-3, on_epoch: Callable[[int, float, float], None] | None = None
                     ) -> ReferenceResult:
    """fastai's `fine_tune(epochs - 1, freeze_epochs=1)`: `epochs` in all, the first one head only.

    Head: one-cycle to base_lr (pct_start 0.99, as fastai). Then base_lr / 2 for the head and a geometric
    ramp down to base_lr / 200 for the first group (fastai's slice(lr / 100, lr)), one-cycle with
    pct_start 0.3 and div 5; AdamW, weight decay 0.01; BatchNorm statistics frozen (pretrained weights).
    """
    result = ReferenceResult()
    start = time.perf_counter()
    head_params = groups[-1].parameters()
    plan = [([head_params], [base_lr], 0.99, 25.0, 1)]
    if epochs > 1:
        n = len(groups)
        lrs = [base_lr / 2 * 100 ** (i / (n - 1) - 1) for i in range(n)]
        plan.append(([g.parameters() for g in groups], lrs, 0.3, 5.0, epochs - 1))
    for param_lists, lrs, pct_start, div, n_epochs in plan:
        for p in model.parameters():
            p.requires_grad_(False)
        for params in param_lists:
            for p in params:
                p.requires_grad_(True)
        optimizer = torch.optim.AdamW([{"params": ps, "lr": lr} for ps, lr in zip(param_lists, lrs)],
                                      weight_decay=0.01)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lrs,
                                                        total_steps=len(train_batches) * n_epochs,
                                                        pct_start=pct_start, div_factor=div)
        for _ in range(n_epochs):
            epoch_start = time.perf_counter()
            model.train()
            freeze_batchnorm(model)
            device = next(model.parameters()).device
            for x, y in train_batches():
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
                scheduler.step()
            acc, _ = accuracy_and_loss(model, val_batches)
            now = time.perf_counter()
            result.val_acc.append(acc)
            result.epoch_seconds.append(now - epoch_start)
            result.epoch_end_seconds.append(now - start)
            if on_epoch:
                on_epoch(len(result.val_acc), acc, now - epoch_start)
    return result


# --- multilabel / regression reference (ftui bench-tasks) -----------------------------------------------------

def plain_task_fine_tune(model: nn.Module, dataset, settings: dict, epochs: int, batch_size: int = 16,
                         lr: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """A plain hand fine-tune for a multilabel or regression Dataset: every layer from the first step, AdamW
    (weight decay 0.01), one-cycle to `lr`, BatchNorm statistics frozen, no augmentation; BCE-with-logits per
    label, or MSE on targets standardized by the train mean/std. Returns every epoch's val mAP / MAE (in the
    user's units) and the best one as "headline" (the epoch a user would keep, as ftui keeps best.pt)."""
    import numpy as np

    from ftui.data.augment import eval_transform
    from ftui.data.imagecache import DecodedImageCache
    from ftui.stats import average_precision

    multilabel = dataset.task == "multilabel"
    train, val = dataset.split("train"), dataset.split("val")
    cache = DecodedImageCache.build(train + val, settings["resize_size"])
    tf = eval_transform(settings["image_size"], settings["resize_size"], tuple(settings["mean"]),
                        tuple(settings["std"]))
    x_train = torch.stack([tf(cache.get(it.path)) for it in train])
    x_val = torch.stack([tf(cache.get(it.path)) for it in val])
    y_train = torch.tensor([it.target for it in train], dtype=torch.float32)
    y_val = torch.tensor([it.target for it in val], dtype=torch.float32)
    mean, std = y_train.mean(0), y_train.std(0, unbiased=False).clamp_min(1e-12)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(epochs):
        model.train()
        freeze_batchnorm(model)
        for idx in torch.randperm(len(train), generator=generator).split(batch_size):
            out = model(x_train[idx]).float()
            target = y_train[idx]
            loss = (nn.functional.binary_cross_entropy_with_logits(out, target) if multilabel
                    else nn.functional.mse_loss(out, (target - mean) / std))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.inference_mode():
            out = torch.cat([model(x_val[i:i + 64]).float() for i in range(0, len(val), 64)])
        if multilabel:
            truth = y_val.numpy()
            aps = [average_precision(out[:, k].numpy(), truth[:, k]) for k in range(truth.shape[1])
                   if truth[:, k].any()]
            scores.append(float(np.mean(aps)))
        else:
            scores.append(float((out * std + mean - y_val).abs().mean()))
    best = max(scores) if multilabel else min(scores)
    return {"epochs": [round(s, 4) for s in scores],
            "headline": {"metric": "mAP" if multilabel else "MAE", "value": best}}
