"""Run configuration: one validated, JSON-round-tripping object per concern.

Every part of ftui (engine, CLI, UI) passes these objects around instead of long argument lists.
"""

from __future__ import annotations

import dataclasses
import json
import math
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

MAX_TEXT = 4096
MAX_CONFIG_CHARS = 100_000
GROUPS = ("data", "model", "optimisation", "schedule", "augmentation", "speed", "run")
# Keys an older ftui wrote, and their names now: a run's config.json from then still loads.
RENAMED = {"step_size": "lr_step_size", "gamma": "lr_gamma"}


def spec(default: Any = dataclasses.MISSING, *, group: str, help: str, low: float | None = None,
         high: float | None = None, open_ends: str = "", choices: tuple[str, ...] | None = None,
         factory: Any = dataclasses.MISSING) -> Any:
    """A config field with what validate(), the CLI's help and the UI's hints read: its group, a help line,
    its range [low, high] (open_ends="low", "high" or "both" leaves those ends out) or its choices."""
    meta = {"group": group, "help": help, "low": low, "high": high, "open_low": open_ends in ("low", "both"),
            "open_high": open_ends in ("high", "both"), "choices": choices}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def describe_range(meta: dict[str, Any]) -> str:
    """'in [1, 10000]', 'in (0, 1)', 'one of (sgd, adam)' or '' for a field's metadata."""
    if meta.get("choices"):
        return "one of (" + ", ".join(meta["choices"]) + ")"
    if meta.get("low") is None and meta.get("high") is None:
        return ""
    if meta.get("high") is None:
        return f"{'>' if meta['open_low'] else '>='} {_number(meta['low'])}"
    low = "-inf" if meta["low"] is None else _number(meta["low"])
    high = _number(meta["high"])
    return f"in {'(' if meta['open_low'] else '['}{low}, {high}{')' if meta['open_high'] else ']'}"


def check_field_values(obj: Any) -> None:
    """Each field inside its declared range or choices (after check_field_types); ConfigError names the first."""
    for f in dataclasses.fields(obj):
        meta, value = f.metadata, getattr(obj, f.name)
        if not meta or value is None or isinstance(value, (bool, AugConfig)):
            continue
        about = f" ({meta['help']})" if meta.get("help") else ""
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{f.name} must be {describe_range(meta)}, got {value!r}{about}")
        low, high = meta.get("low"), meta.get("high")
        too_low = low is not None and (value <= low if meta["open_low"] else value < low)
        too_high = high is not None and (value >= high if meta["open_high"] else value > high)
        if too_low or too_high:
            raise ConfigError(f"{f.name} must be {describe_range(meta)}, got {value}{about}")


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
                bounds = describe_range(f.metadata) if f.metadata else ""
                raise _type_error(f.name, f"a whole number {bounds}".strip(), value)
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

    random_resized_crop: bool = spec(True, group="augmentation", help="crop a random part, resize it back")
    crop_scale_min: float = spec(0.6, group="augmentation", help="smallest crop, as a fraction of the area",
                                 low=0.0, high=1.0, open_ends="low")
    crop_scale_max: float = spec(1.0, group="augmentation", help="largest crop, as a fraction of the area",
                                 low=0.0, high=1.0, open_ends="low")
    hflip: bool = spec(True, group="augmentation", help="mirror left-right half the time")
    vflip: bool = spec(False, group="augmentation", help="mirror top-bottom half the time")
    rotation: bool = spec(False, group="augmentation", help="rotate by up to rotation_degrees")
    rotation_degrees: float = spec(15.0, group="augmentation", help="largest rotation", low=0.0, high=180.0)
    color_jitter: bool = spec(True, group="augmentation", help="vary brightness, contrast, saturation, hue")
    brightness: float = spec(0.2, group="augmentation", help="brightness jitter", low=0.0, high=1.0)
    contrast: float = spec(0.2, group="augmentation", help="contrast jitter", low=0.0, high=1.0)
    saturation: float = spec(0.2, group="augmentation", help="saturation jitter", low=0.0, high=1.0)
    hue: float = spec(0.02, group="augmentation", help="hue jitter", low=0.0, high=0.5)
    grayscale: bool = spec(False, group="augmentation", help="drop colour with probability grayscale_p")
    grayscale_p: float = spec(0.1, group="augmentation", help="probability of grey", low=0.0, high=1.0)
    blur: bool = spec(False, group="augmentation", help="Gaussian blur up to blur_sigma_max")
    blur_sigma_max: float = spec(1.5, group="augmentation", help="strongest blur", low=0.1, high=None,
                                 open_ends="low")
    random_erasing: bool = spec(False, group="augmentation", help="erase a random box with probability erasing_p")
    erasing_p: float = spec(0.25, group="augmentation", help="probability of erasing", low=0.0, high=1.0)

    def validate(self) -> None:
        check_field_types(self)
        check_field_values(self)
        if self.crop_scale_min > self.crop_scale_max:
            raise ConfigError(
                f"crop scale must satisfy 0 < min <= max <= 1, got {self.crop_scale_min}..{self.crop_scale_max}"
            )

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
    """Everything that defines one training run, in groups (GROUPS); each field declares its help and range."""

    # --- data
    data: str = spec("", group="data", help="dataset folder, .zip or .csv")
    val_fraction: float = spec(0.2, group="data", help="share of images held out for validation when the dataset "
                               "has no val split", low=0.0, high=1.0, open_ends="both")
    # The seed of a generated train/val split; None: `seed`. The app trains with the Data step's fixed split
    # seed, so the split a user saw is the one trained, evaluated and predicted on, whatever `seed` is.
    split_seed: int | None = spec(None, group="data", help="seed of a generated train/val split (default: seed)",
                                  low=0, high=2**32 - 1)
    # None: the backbone's own input size.
    image_size: int | None = spec(None, group="data", help="input size in pixels (default: the backbone's)",
                                  low=16, high=1024)
    # --- model
    backbone: str = spec("mobilenet_v3_small", group="model", help="a name from `python -m ftui backbones`")
    weights: str = spec("imagenet", group="model", help="imagenet | none | path to a weights file")
    # Default "all": the head fitted first, then every layer (see `recipe`); "head" alone stays far below a
    # careful fine-tune on data unlike ImageNet (bench-recipes, docs).
    train_groups: str = spec("all", group="model", help="head | all | last:N | comma-separated layer groups")
    bn_mode: str = spec("frozen", group="model", help="frozen: BatchNorm keeps its pretrained statistics (right "
                        "for small batches); train: they update", choices=BN_MODES)
    # --- optimisation
    optimizer: str = spec("adamw", group="optimisation", help="the optimizer", choices=OPTIMIZERS)
    lr: float = spec(1e-3, group="optimisation", help="peak learning rate", low=0.0, open_ends="low")
    weight_decay: float = spec(1e-4, group="optimisation", help="decoupled weight decay", low=0.0)
    momentum: float = spec(0.9, group="optimisation", help="SGD momentum", low=0.0, high=1.0)
    label_smoothing: float = spec(0.0, group="optimisation", help="label smoothing of the training loss",
                                  low=0.0, high=1.0, open_ends="high")
    class_weighted_loss: bool = spec(False, group="optimisation", help="weigh rare classes up in the loss")
    batch_size: int = spec(16, group="optimisation", help="images per optimizer step", low=1, high=4096)
    seed: int = spec(0, group="optimisation", help="seed of initialisation, shuffling and augmentation",
                     low=0, high=2**32 - 1)
    # --- schedule
    epochs: int = spec(5, group="schedule", help="epochs in all, head phase included", low=1, high=10_000)
    # "fine_tune": head first on frozen features for `freeze_epochs`, then the chosen groups at lr/10 scaled
    # per group (fastai's fine_tune / LP-FT). "plain": train the chosen groups from the first epoch.
    recipe: str = spec("fine_tune", group="schedule", help="fine_tune: the head first, then the chosen groups; "
                       "plain: the chosen groups from the start", choices=RECIPES)
    freeze_epochs: int = spec(1, group="schedule", help="head-only epochs of the fine_tune recipe",
                              low=0, high=10_000)
    scheduler: str = spec("onecycle", group="schedule", help="learning-rate schedule", choices=SCHEDULERS)
    lr_step_size: int = spec(7, group="schedule", help="epochs between rate drops (step schedule)",
                             low=1, high=10_000)
    lr_gamma: float = spec(0.1, group="schedule", help="factor of each rate drop (step schedule)",
                           low=0.0, open_ends="low")
    warmup_epochs: float = spec(0.0, group="schedule", help="epochs of linear warm-up (fewer than epochs)",
                                low=0.0)
    # How the "fine_tune" recipe trains the head phase: "sgd" steps the optimizer per batch (fastai's
    # fine_tune); "lbfgs" fits it to convergence on the frozen features in one pass (weight decay chosen on a
    # fold of train). "sgd" is the default: after a converged head the body's first AdamW steps follow noise
    # and the run ends lower (docs/recipes.md: clothing at 224 px 0.830 vs 0.856; no row was worse).
    head_fit: str = spec("sgd", group="schedule", help="how the head phase trains: sgd steps, or lbfgs to "
                         "convergence", choices=HEAD_FITS)
    # At the end of an SGD head phase, also train a copy of the head alone for the epoch budget on the cached
    # features (fractions of a second) and keep it as best.pt when val prefers it: on ImageNet-like photos the
    # head alone often beats training every layer (ftui/train/headalone.py, docs/recipes.md).
    head_alone: bool = spec(True, group="schedule", help="also train the head alone on cached features and "
                            "keep it when val prefers it")
    early_stopping_patience: int = spec(3, group="schedule", help="stop when val loss has not improved for "
                                        "this many epochs of a phase (0: never)", low=0, high=10_000)
    # --- augmentation
    aug: AugConfig = spec(group="augmentation", help="training-time augmentations", factory=AugConfig)  # noqa: RUF009 - spec() returns a dataclasses.field
    # --- speed
    device: str = spec("auto", group="speed", help="auto (the GPU when there is one) | cpu | cuda | mps",
                       choices=DEVICES)
    mixed_precision: bool = spec(True, group="speed", help="bfloat16/float16 autocast where the device has it")
    # Cache frozen-backbone features / frozen-prefix outputs instead of recomputing them each epoch.
    feature_cache: bool = spec(True, group="speed", help="cache the frozen layers' outputs between epochs")
    feature_cache_views: int = spec(1, group="speed", help="train-image views cached per image (1: the "
                                    "unaugmented image; more: augmented draws)", low=1, high=64)
    feature_cache_max_mb: int = spec(2048, group="speed", help="largest feature cache in MB", low=0, high=1 << 20)
    # More loader processes than cores are clamped at run time with a note (a config from a bigger machine).
    num_workers: int = spec(0, group="speed", help="image loader processes (0: threads in this process)",
                            low=0, high=256)
    # torch.compile the trained module (worth it on a GPU for long runs; the first steps pay for compiling).
    compile: bool = spec(False, group="speed", help="torch.compile the trained module (GPU, long runs)")
    # --- run
    runs_dir: str = spec("runs", group="run", help="where runs/<id>/ go")
    run_name: str = spec("", group="run", help="a name for the run (at most 100 characters)")
    # What the head predicts (ftui/data/tasks.py, ftui/train/tasks.py): "auto" (a CSV's columns decide; a
    # folder is classification), "classification", "multilabel" or "regression"; a run records the task it
    # trained. Regression's loss on standardized targets: "huber" (robust to a few odd values) or "mse".
    task: str = spec("auto", group="data", help="what the head predicts: auto (from the data), classification, "
                     "multilabel or regression", choices=TASK_NAMES)
    regression_loss: str = spec("huber", group="optimisation", help="regression loss on standardized targets",
                                choices=REGRESSION_LOSSES)

    @property
    def data_seed(self) -> int:
        """The seed that splits the dataset (load_dataset's `seed`)."""
        return self.seed if self.split_seed is None else self.split_seed

    def validate(self) -> None:
        """Raise ConfigError naming the first value that cannot work: types, then each field's declared range
        or choices (spec), then the rules that tie fields together."""
        check_field_types(self)
        check_field_values(self)
        if not self.data:
            raise ConfigError("no dataset given: set `data` to a folder, .zip or .csv")
        if not self.backbone:
            raise ConfigError("no backbone given")
        if not self.warmup_epochs < self.epochs:
            raise ConfigError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if len(self.run_name) > 100:
            raise ConfigError(f"run_name is too long ({len(self.run_name)} characters, at most 100)")
        _check_train_groups(self.train_groups)
        self.aug.validate()

    @classmethod
    def fields_by_group(cls) -> dict[str, list[dataclasses.Field]]:
        """The fields of each group in GROUPS, in declaration order (CLI help sections, UI hints)."""
        out: dict[str, list[dataclasses.Field]] = {g: [] for g in GROUPS}
        for f in dataclasses.fields(cls):
            out[f.metadata["group"]].append(f)
        return out

    @classmethod
    def hint(cls, name: str) -> str:
        """A field's help line with its range: what the UI shows beside its box."""
        meta = {f.name: f.metadata for f in dataclasses.fields(cls)}[name]
        bounds = describe_range(meta)
        return meta["help"] + (f" ({bounds})" if bounds and not meta.get("choices") else "")

    # --- JSON round trip -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys are an error so typos don't pass silently."""
        known = {f.name for f in dataclasses.fields(cls)}
        raw = {RENAMED.get(k, k) if RENAMED.get(k) not in raw else k: v for k, v in raw.items()}
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


def _check_train_groups(spec_text: str) -> None:
    spec_text = spec_text.strip()
    if not spec_text:
        raise ConfigError("train_groups is empty: use 'head', 'all', 'last:N' or group names")
    if spec_text.startswith("last:"):
        try:
            n = int(spec_text.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"train_groups {spec_text!r}: N in 'last:N' must be an integer") from None
        if n < 1:
            raise ConfigError(f"train_groups {spec_text!r}: N must be >= 1")
