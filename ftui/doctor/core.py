"""`check(source) -> Report`: load the dataset, decode every image once, run every check."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ftui.doctor.balance import BalanceLimits, check_balance, check_unreadable
from ftui.doctor.duplicates import check_duplicates
from ftui.doctor.labels import BackboneFeatures, check_labels, embedding_size, skipped_labels
from ftui.doctor.properties import PropertyLimits, check_properties
from ftui.doctor.report import DoctorError, Report
from ftui.doctor.scan import VIEW_SIZE, FeatureFn, Progress, scan
from ftui.doctor.tasks import (
    TaskTargets,
    check_task_balance,
    check_task_labels,
    retarget_duplicates,
    task_entries,
)
from ftui.doctor.timing import PhaseTimer

DEFAULT_BACKBONE = "mobilenet_v3_small"
NO_WEIGHTS = "no pretrained weights available"


@dataclass
class Limits:
    """Every threshold the doctor uses, in one place."""

    balance: BalanceLimits = field(default_factory=BalanceLimits)
    properties: PropertyLimits = field(default_factory=PropertyLimits)


def guess_backbone(weights_file: str, first: str = "") -> str | None:
    """The backbone (`first`, then the shortlist) whose stock layers a weights file fits (names and shapes,
    head aside), if any. Built on the meta device: no memory, no initialisation."""
    import torch

    from ftui.models.backbones import head_path, list_backbones, stock_model
    from ftui.models.weights import read_state_dict

    state = read_state_dict(weights_file)
    for name in dict.fromkeys([first, *list_backbones()] if first else list_backbones()):
        with torch.device("meta"):
            model = stock_model(name, pretrained=True)
        head = head_path(name) + "."
        wanted = {k: v.shape for k, v in model.state_dict().items() if not k.startswith(head)}
        if wanted and all(k in state and tuple(state[k].shape) == tuple(shape) for k, shape in wanted.items()):
            return name
    return None


def cached_imagenet_backbone(preferred: str) -> str | None:
    """`preferred` when its ImageNet weights are on this machine, else any shortlisted backbone whose are."""
    from ftui.models.backbones import backbone_info, list_backbones

    for name in [preferred, *list_backbones()]:
        try:
            if backbone_info(name).weights_cached:
                return name
        except ValueError:
            continue
    return None


def resolve_pretrained(backbone: str, weights: str) -> tuple[str, str, str]:
    """(backbone, weights, note) whose pretrained features the doctor can use, or ("", "", why not).

    The Model step's (or CLI's) choice comes first: a weights file with the backbone it fits (guessed when
    the named one does not fit), ImageNet weights when downloaded. Random init ("none") or missing
    ImageNet weights fall back to any backbone with downloaded ImageNet weights; only when there are none
    at all is the check skipped."""
    from ftui.models.backbones import backbone_info

    try:
        backbone_info(backbone)
    except ValueError as exc:
        raise DoctorError(str(exc)) from None
    if weights not in ("imagenet", "none"):
        if not Path(weights).is_file():
            raise DoctorError(f"weights file not found: {weights}")
        fits = guess_backbone(weights, first=backbone)
        if fits is None:
            raise DoctorError(f"the weights file {Path(weights).name} fits none of the shortlisted backbones")
        note = "" if fits == backbone else f" (the file fits {fits}, not {backbone})"
        return fits, weights, note
    fallback = cached_imagenet_backbone(backbone)
    if fallback is None:
        why = "random init chosen" if weights == "none" else f"ImageNet weights for {backbone} are not downloaded"
        return "", "", (f"{NO_WEIGHTS} ({why}, and no backbone has downloaded ImageNet weights); "
                         "give a weights file to run the label check and embedding duplicate check")
    note = "" if fallback == backbone and weights == "imagenet" else f" (instead of {backbone} with {weights} weights)"
    return fallback, "imagenet", note


def backbone_features(backbone: str, weights: str, num_classes: int = 2,
                      progress: Progress | None = None) -> tuple[FeatureFn | None, str]:
    """A pretrained backbone's feature function and a description, or (None, why the check is skipped).

    Random-init features say nothing about labels or duplicates, so without pretrained weights there is
    no label check and the duplicate check uses pixels alone."""
    from ftui.models.backbones import backbone_info, build, head_path

    backbone, weights, note = resolve_pretrained(backbone, weights)
    if not backbone:
        return None, note
    info = backbone_info(backbone)
    try:
        model = build(backbone, num_classes, weights=weights, progress=progress)
    except ValueError as exc:  # WeightsError / BackboneError: the user picked something that cannot load
        raise DoctorError(f"cannot load {backbone} weights for the label check: {exc}") from None
    source = "ImageNet" if weights == "imagenet" else Path(weights).name
    size = embedding_size(info.input_size, info.fixed_input_size)
    fn = BackboneFeatures(model, head_path(backbone), info.mean, info.std, size)
    return fn, f"{backbone} features ({source}){note}"


def _load(source: Any, o: CheckOptions, progress: Progress):
    """A Dataset from a path (folder, zip, CSV) or the Dataset itself; loader errors become DoctorError."""
    from ftui.data.datasets import load_dataset

    if hasattr(source, "items") and hasattr(source, "classes"):
        return source
    if not source or not Path(str(source)).exists():
        raise DoctorError(f"dataset not found: {source!r} (give a folder, .zip or .csv)")
    try:
        return load_dataset(str(source), val_fraction=o.val_fraction, seed=o.seed, workdir=o.workdir,
                            progress=progress, task=o.task)
    except ValueError as exc:
        raise DoctorError(str(exc)) from None


@dataclass
class CheckOptions:
    """How `check` runs. The label check uses `feature_fn` when given, else the pretrained `backbone` with
    `weights`; `labels=False` skips it. `val_fraction`, `seed` and `workdir` apply when loading from a path."""

    labels: bool = True
    backbone: str = DEFAULT_BACKBONE
    weights: str = "imagenet"
    feature_fn: FeatureFn | None = None
    feature_name: str = "custom features"
    limits: Limits = field(default_factory=Limits)
    val_fraction: float = 0.2
    seed: int = 0
    workdir: str | None = None
    # None/"auto": a CSV's columns decide (ftui/data/tasks.py); "regression" reads numbered class folders.
    task: str | None = None


def check(source: Any, options: CheckOptions | None = None,
          progress: Callable[[float, str], None] | None = None, **overrides: Any) -> Report:
    """Run every check on a dataset (folder, .zip, CSV or a loaded Dataset) and return the Report.

    `overrides` are CheckOptions fields (`check(root, labels=False)`), applied on top of `options`.
    Multilabel and regression datasets get their own balance and label checks (ftui/doctor/tasks.py).
    """
    o = replace(options or CheckOptions(), **overrides)
    say = progress or (lambda fraction, message: None)
    start = time.perf_counter()
    timer = PhaseTimer()
    say(0.0, "loading dataset")
    with timer.phase("load"):
        dataset = _load(source, o, lambda f, m: say(0.3 * f, m))
    classes = list(dataset.classes)
    task = getattr(dataset, "task", "classification")

    label_skip, fn = "turned off", None
    if o.labels:
        with timer.phase("model"):
            if o.feature_fn is not None:
                fn, label_skip = o.feature_fn, o.feature_name
            else:
                say(0.3, f"loading {o.backbone} for the label check")
                fn, label_skip = backbone_features(o.backbone, o.weights, max(len(classes), 2))

    def timed_features(images):
        with timer.phase("features"):
            return fn(images)

    targets = None
    if task == "classification":
        entries, names = [(item.path, item.label, item.split) for item in dataset.items], classes
    else:
        entries, names, targets = task_entries(dataset)
    with timer.phase("scan"):
        records, features = scan(entries, feature_fn=timed_features if fn else None,
                                 progress=lambda f, m: say(0.3 + 0.6 * f, m),
                                 view_size=getattr(fn, "input_size", VIEW_SIZE))
    timer.exclude("scan", "features")
    say(0.92, "comparing images")
    skipped = [(s.path, s.reason) for s in getattr(dataset, "skipped", [])]
    with timer.phase("checks"):
        checks = _image_checks(records, names, targets, skipped, features if fn is not None else None, o.limits)
    if fn is None:
        checks.append(skipped_labels(label_skip))
    else:
        say(0.95, "cross-validating the label probe")
        with timer.phase("labels"):
            clean = np.nan_to_num(features)
            checks.append(check_labels(records, clean, names, feature_name=label_skip) if targets is None
                          else check_task_labels(records, clean, targets, label_skip))
    say(1.0, "done")
    return Report(source=str(getattr(dataset, "root", source)), checks=checks, classes=classes,
                  num_files=len(records) + len(skipped), seconds=time.perf_counter() - start,
                  timings=timer.wall, cpu_timings=timer.cpu, task=task)


def _image_checks(records, names: list[str], targets: TaskTargets | None, skipped: list[tuple[str, str]],
                  features: np.ndarray | None, limits: Limits | None) -> list:
    """Unreadable files, balance (classes, labels or values), duplicates and leakage, image properties.
    `names` are the classes, or a task's distinct targets (records' labels index them)."""
    limits = limits or Limits()
    duplicates = check_duplicates(records, names, features)
    if targets is None:
        balance = check_balance(records, names, limits.balance)
    else:
        balance = check_task_balance(records, targets, limits.balance)
        duplicates = retarget_duplicates(duplicates, targets.task)
    return [check_unreadable(records, names, skipped), balance, duplicates,
            check_properties(records, names, limits.properties)]
