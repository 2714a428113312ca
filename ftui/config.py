"""Run configuration: one validated, JSON-round-tripping object per concern.

Every part of ftui (engine, CLI, UI) passes these objects around instead of long argument lists.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value a user has to change; the message says which and why."""


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
BN_MODES = ("frozen", "train")
RECIPES = ("fine_tune", "plain")


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
    train_groups: str = "head"
    aug: AugConfig = field(default_factory=AugConfig)
    epochs: int = 5
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "cosine"
    step_size: int = 7
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    class_weighted_loss: bool = False
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True
    val_fraction: float = 0.2
    # None: the backbone's own input size.
    image_size: int | None = None
    # "fine_tune": head first on frozen features for `freeze_epochs`, then the chosen groups at lr/10 scaled
    # per group (fastai's fine_tune / LP-FT). "plain": train the chosen groups from the first epoch.
    recipe: str = "fine_tune"
    freeze_epochs: int = 1
    # "frozen": every BatchNorm keeps its pretrained running statistics (right for small batches);
    # "train": BatchNorm in trainable groups updates its statistics as usual.
    bn_mode: str = "frozen"
    # Cache frozen-backbone features / frozen-prefix outputs instead of recomputing them each epoch.
    feature_cache: bool = True
    feature_cache_views: int = 1
    feature_cache_max_mb: int = 2048
    early_stopping_patience: int = 0
    num_workers: int = 0
    # torch.compile the trained module (worth it on a GPU for long runs; the first steps pay for compiling).
    compile: bool = False
    runs_dir: str = "runs"
    run_name: str = ""

    def validate(self) -> None:
        """Raise ConfigError naming the first value that cannot work."""
        if not self.data:
            raise ConfigError("no dataset given: set `data` to a folder, .zip or .csv")
        if not self.backbone:
            raise ConfigError("no backbone given")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
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
        if self.image_size is not None and not 16 <= self.image_size <= 1024:
            raise ConfigError(f"image_size must be in [16, 1024], got {self.image_size}")
        if self.freeze_epochs < 0:
            raise ConfigError(f"freeze_epochs must be >= 0, got {self.freeze_epochs}")
        if self.feature_cache_views < 1:
            raise ConfigError(f"feature_cache_views must be >= 1, got {self.feature_cache_views}")
        if self.step_size < 1:
            raise ConfigError(f"step_size must be >= 1, got {self.step_size}")
        if self.early_stopping_patience < 0:
            raise ConfigError("early_stopping_patience must be >= 0")
        if self.num_workers < 0:
            raise ConfigError("num_workers must be >= 0")
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
        values = dict(raw)
        aug = values.pop("aug", None)
        if isinstance(aug, dict):
            aug_known = {f.name for f in dataclasses.fields(AugConfig)}
            bad = sorted(set(aug) - aug_known)
            if bad:
                raise ConfigError(f"unknown augmentation keys: {', '.join(bad)}")
            values["aug"] = AugConfig(**aug)
        elif isinstance(aug, AugConfig):
            values["aug"] = aug
        return cls(**values)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> TrainConfig:
        """Parse JSON text, or read it from a file path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            text = path.read_text()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError("config JSON must be an object")
        return cls.from_dict(raw)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
