"""Run configuration: one validated, JSON-round-tripping object per concern.

Every part of ftui (engine, CLI, UI) passes these objects around instead of long argument lists.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftui.errors import FtuiError


class ConfigError(FtuiError):
    """A configuration value a user has to change; the message says which and why."""


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
BN_MODES = ("frozen", "train")
RECIPES = ("fine_tune", "plain")
HEAD_FITS = ("lbfgs", "sgd")
TASK_NAMES = ("auto", "classification", "multilabel", "regression")
REGRESSION_LOSSES = ("huber", "mse")

# Bounds every run must respect, whoever sends the config (API, CLI, Python): (low, high) inclusive.
INT_BOUNDS = {
    "epochs": (1, 10_000), "batch_size": (1, 4096), "step_size": (1, 10_000), "seed": (0, 2**32 - 1),
    "split_seed": (0, 2**32 - 1),
    "freeze_epochs": (0, 10_000), "feature_cache_views": (1, 64), "feature_cache_max_mb": (0, 1 << 20),
    "early_stopping_patience": (0, 10_000), "image_size": (16, 1024),
}
MAX_TEXT = 4096
MAX_CONFIG_CHARS = 100_000


def _type_error(name: str, want: str, value: Any) -> ConfigError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return ConfigError(f"{name} must be {want}, got {shown} ({type(value).__name__})")


def check_field_types(obj: Any) -> None:
    """Refuse values of the wrong type before any comparison can raise TypeError or pass by accident.

    bool fields take only true/false; int fields only whole numbers (no 1.5, no true, no NaN); float fields
    only finite numbers; str fields only text of bounded length.
    """
    for f in dataclasses.fields(obj):
        value, kind = getattr(obj, f.name), str(f.type)
        if kind == "AugConfig":
            if not isinstance(value, AugConfig):
                raise _type_error(f.name, "an object of augmentation settings", value)
            continue
        if value is None and "None" in kind:
            continue
        if kind.startswith("bool"):
            if not isinstance(value, bool):
                raise _type_error(f.name, "true or false", value)
        elif kind.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, int):
                bounds = INT_BOUNDS.get(f.name)
                want = f"a whole number in [{bounds[0]}, {bounds[1]}]" if bounds else "a whole number"
                raise _type_error(f.name, want, value)
        elif kind.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _type_error(f.name, "a finite number", value)
        elif kind.startswith("str"):
            if not isinstance(value, str):
                raise _type_error(f.name, "text", value)
            if len(value) > MAX_TEXT:
                raise ConfigError(f"{f.name} is too long ({len(value)} characters, at most {MAX_TEXT})")


def _whole_numbers(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """JSON clients may send 3.0 for an int field: accept exactly integral floats as ints, nothing else."""
    kinds = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out = dict(values)
    for name, value in values.items():
        if (kinds.get(name, "").startswith("int") and isinstance(value, float) and math.isfinite(value)
                and value.is_integer() and abs(value) < 2**53):
            out[name] = int(value)
    return out


@dataclass
class AugConfig:
    """Training-time augmentations; each has an on/off switch and its strength."""

    random_resized_crop: bool = True
    crop_scale_min: float = 0.6
    crop_scale_max: float = 1.0
    hflip: bool = True
    vflip: bool = False
    rotation: bool = False
    rotation_degrees: float = 15.0
    color_jitter: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    grayscale: bool = False
    grayscale_p: float = 0.1
    blur: bool = False
    blur_sigma_max: float = 1.5
    random_erasing: bool = False
    erasing_p: float = 0.25

    def validate(self) -> None:
        check_field_types(self)
        if not 0.0 < self.crop_scale_min <= self.crop_scale_max <= 1.0:
            raise ConfigError(
                f"crop scale must satisfy 0 < min <= max <= 1, got {self.crop_scale_min}..{self.crop_scale_max}"
            )
        if not 0.0 <= self.rotation_degrees <= 180.0:
            raise ConfigError(f"rotation_degrees must be in [0, 180], got {self.rotation_degrees}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"hue must be in [0, 0.5], got {self.hue}")
        for name in ("grayscale_p", "erasing_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.blur_sigma_max <= 0.1:
            raise ConfigError(f"blur_sigma_max must be > 0.1, got {self.blur_sigma_max}")

    @property
    def enabled(self) -> bool:
        """True when any augmentation is switched on."""
        return any(
            (self.random_resized_crop, self.hflip, self.vflip, self.rotation, self.color_jitter,
             self.grayscale, self.blur, self.random_erasing)
        )

    @classmethod
    def none(cls) -> AugConfig:
        """Every augmentation off (the `--no-augment` preset)."""
        return cls(random_resized_crop=False, hflip=False, vflip=False, rotation=False,
                   color_jitter=False, grayscale=False, blur=False, random_erasing=False)


@dataclass
class TrainConfig:
    """Everything that defines one training run."""

    data: str = ""
    backbone: str = "mobilenet_v3_small"
    # "imagenet" (torchvision's published weights), "none" (random init) or a path to a local file.
    weights: str = "imagenet"
    # "head", "all", "last:N" (the last N layer groups, head included) or a comma-separated group list.
    # Default "all": the head fitted first, then every layer (see `recipe`); "head" alone stays far below a
    # careful fine-tune on data unlike ImageNet (bench-recipes, README).
    train_groups: str = "all"
    aug: AugConfig = field(default_factory=AugConfig)
    epochs: int = 5
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "onecycle"
    step_size: int = 7
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    class_weighted_loss: bool = False
    seed: int = 0
    # The seed of a generated train/val split; None: `seed`. The app trains with the Data step's fixed split
    # seed, so the split a user saw is the one trained, evaluated and predicted on, whatever `seed` is.
    split_seed: int | None = None
    device: str = "auto"
    mixed_precision: bool = True
    val_fraction: float = 0.2
    # None: the backbone's own input size.
    image_size: int | None = None
    # "fine_tune": head first on frozen features for `freeze_epochs`, then the chosen groups at lr/10 scaled
    # per group (fastai's fine_tune / LP-FT). "plain": train the chosen groups from the first epoch.
    recipe: str = "fine_tune"
    freeze_epochs: int = 1
    # How the "fine_tune" recipe trains the head phase: "sgd" steps the optimizer per batch (fastai's
    # fine_tune); "lbfgs" fits it to convergence on the frozen features in one pass (weight decay chosen on a
    # fold of train). "sgd" is the default: after a converged head the body's first AdamW steps follow noise
    # and the run ends lower (README "Recipes": clothing at 224 px 0.830 vs 0.856; no row was worse).
    head_fit: str = "sgd"
    # At the end of an SGD head phase, also train a copy of the head alone for the epoch budget on the cached
    # features (fractions of a second) and keep it as best.pt when val prefers it: on ImageNet-like photos the
    # head alone often beats training every layer (ftui/train/headalone.py, README "Recipes").
    head_alone: bool = True
    # "frozen": every BatchNorm keeps its pretrained running statistics (right for small batches);
    # "train": BatchNorm in trainable groups updates its statistics as usual.
    bn_mode: str = "frozen"
    # Cache frozen-backbone features / frozen-prefix outputs instead of recomputing them each epoch.
    feature_cache: bool = True
    feature_cache_views: int = 1
    feature_cache_max_mb: int = 2048
    # Stop when val loss has not improved for this many epochs of a phase (0: never); best.pt keeps the best.
    early_stopping_patience: int = 3
    num_workers: int = 0
    # torch.compile the trained module (worth it on a GPU for long runs; the first steps pay for compiling).
    compile: bool = False
    runs_dir: str = "runs"
    run_name: str = ""
    # What the head predicts (ftui/data/tasks.py, ftui/train/tasks.py): "auto" (a CSV's columns decide; a
    # folder is classification), "classification", "multilabel" or "regression". A run records the task
    # it trained. Regression's loss on standardized targets: "huber" (robust to a few odd values) or "mse".
    task: str = "auto"
    regression_loss: str = "huber"

    @property
    def data_seed(self) -> int:
        """The seed that splits the dataset (load_dataset's `seed`)."""
        return self.seed if self.split_seed is None else self.split_seed

    def validate(self) -> None:
        """Raise ConfigError naming the first value that cannot work (type first, then range)."""
        check_field_types(self)
        for name, (low, high) in INT_BOUNDS.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise ConfigError(f"{name} must be in [{low}, {high}], got {value}")
        if not self.data:
            raise ConfigError("no dataset given: set `data` to a folder, .zip or .csv")
        if not self.backbone:
            raise ConfigError("no backbone given")
        # Finite is checked above; a huge rate is allowed (a diverging loss stops the run and says so).
        if not self.lr > 0:
            raise ConfigError(f"learning rate (lr) must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum <= 1:
            raise ConfigError(f"momentum must be in [0, 1], got {self.momentum}")
        if not self.gamma > 0:
            raise ConfigError(f"gamma must be > 0, got {self.gamma}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.bn_mode not in BN_MODES:
            raise ConfigError(f"bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}")
        if self.recipe not in RECIPES:
            raise ConfigError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if not 0.0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        # More loader processes than cores only thrash the machine (and every other user of it).
        cores = os.cpu_count() or 1
        if not 0 <= self.num_workers <= cores:
            raise ConfigError(f"num_workers must be in [0, {cores}] (the CPU cores here), got {self.num_workers}")
        if len(self.run_name) > 100:
            raise ConfigError(f"run_name is too long ({len(self.run_name)} characters, at most 100)")
        if self.task not in TASK_NAMES:
            raise ConfigError(f"task must be one of {TASK_NAMES}, got {self.task!r}")
        if self.regression_loss not in REGRESSION_LOSSES:
            raise ConfigError(f"regression_loss must be one of {REGRESSION_LOSSES}, got {self.regression_loss!r}")
        if self.head_fit not in HEAD_FITS:
            raise ConfigError(f"head_fit must be one of {HEAD_FITS}, got {self.head_fit!r}")
        spec = self.train_groups.strip()
        if not spec:
            raise ConfigError("train_groups is empty: use 'head', 'all', 'last:N' or group names")
        if spec.startswith("last:"):
            try:
                n = int(spec.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"train_groups {spec!r}: N in 'last:N' must be an integer") from None
            if n < 1:
                raise ConfigError(f"train_groups {spec!r}: N must be >= 1")
        self.aug.validate()

    # --- JSON round trip -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys are an error so typos don't pass silently."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        values = _whole_numbers(cls, raw)
        if "aug" in values:
            aug = values.pop("aug")
            if isinstance(aug, dict):
                aug_known = {f.name for f in dataclasses.fields(AugConfig)}
                bad = sorted(set(aug) - aug_known)
                if bad:
                    raise ConfigError(f"unknown augmentation keys: {', '.join(bad)}")
                values["aug"] = AugConfig(**_whole_numbers(AugConfig, aug))
            elif isinstance(aug, AugConfig):
                values["aug"] = aug
            else:
                raise _type_error("aug", "an object of augmentation settings", aug)
        config = cls(**values)
        check_field_types(config)
        check_field_types(config.aug)
        return config

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Parse JSON text, never a path: text from a client must not make the server read its files.

        Use `from_file` for a path the operator gave (the CLI's --config, a run folder's config.json).
        """
        if not isinstance(text, str):
            raise _type_error("config", "JSON text", text)
        if len(text) > MAX_CONFIG_CHARS:
            raise ConfigError(f"config is too long ({len(text)} characters, at most {MAX_CONFIG_CHARS})")
        if not text.lstrip().startswith("{"):
            raise ConfigError("config must be JSON text of an object ({...}), not a file name")
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError("config JSON must be an object")
        return cls.from_dict(raw)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a TrainConfig JSON file (for paths the operator chose, never for client input)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        if path.stat().st_size > MAX_CONFIG_CHARS:
            raise ConfigError(f"config file {path} is too large (at most {MAX_CONFIG_CHARS} bytes)")
        try:
            return cls.from_json(path.read_text(encoding="utf-8", errors="replace"))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
