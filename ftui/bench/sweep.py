"""Hyperparameter sweeps with Optuna: `python -m ftui sweep DATA --trials N --budget-minutes M [train flags]`.

Each trial is an ordinary run (its own run folder under the runs folder, named `sweep-<id>-t<n>`) of the
base config (the train flags given, else ftui's defaults) with five settings drawn by Optuna's TPE sampler:
lr (log scale around the base), epochs, which layer groups train (head / last 2 / last 3 / all), the image
size (0.75x, 1x, 1.25x the base) and augmentation strength (0 = none, 1 = twice the defaults' jitter and a
tighter crop). Trial 0 is always the base config itself, so the sweep's best is never worse on val than
what a user gets without it. The objective is the run's best val accuracy (ties: lower val loss).

Pruning: every epoch reports the val loss (negated: the study maximises) through a callback; Optuna's
median pruner stops a trial whose val loss is worse than the median of earlier trials at the same epoch
(after 2 complete trials and from epoch 2 on). The budget is a wall-clock bound: no trial starts after it,
and a running trial is stopped at its next batch once it passes (that trial counts as pruned).

The sweep's record is `<runs>/sweeps/<id>.json` (every trial: run id, params, value, state; the best one
marked), written after each trial; the best trial's status.json also gets `sweep_best: true`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftui.config import AugConfig, TrainConfig
from ftui.errors import FtuiError
from ftui.runs import RunStore, write_json_atomic
from ftui.train.callbacks import Callback

GROUP_CHOICES = ("head", "last:2", "last:3", "all")
MAX_TRIALS = 200
MAX_BUDGET_MINUTES = 24 * 60
log = logging.getLogger(__name__)


class SweepError(FtuiError):
    """A sweep that cannot start: bad trial count or budget, or optuna missing."""


@dataclass
class SweepSettings:
    """One sweep: the base run config, how many trials, the wall-clock budget and the sampler's seed."""

    base: TrainConfig
    trials: int = 10
    budget_minutes: float = 30.0
    seed: int = 0
    sweep_id: str = field(default_factory=lambda: f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")

    def validate(self) -> None:
        self.base.validate()
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or not 1 <= self.trials <= MAX_TRIALS:
            raise SweepError(f"trials must be a whole number in [1, {MAX_TRIALS}], got {self.trials!r}")
        if not 0 < float(self.budget_minutes) <= MAX_BUDGET_MINUTES:
            raise SweepError(f"budget-minutes must be in (0, {MAX_BUDGET_MINUTES}], got {self.budget_minutes!r}")

    @property
    def record_path(self) -> Path:
        return Path(self.base.runs_dir) / "sweeps" / f"{self.sweep_id}.json"


def scaled_aug(strength: float) -> AugConfig:
    """Augmentation at `strength` (0: none; 0.5: ftui's defaults; 1: twice their jitter, crop down to 20%)."""
    if strength <= 0.0:
        return AugConfig.none()
    s = min(float(strength), 1.0)
    return AugConfig(crop_scale_min=round(1.0 - 0.8 * s, 3), brightness=round(0.4 * s, 3),
                     contrast=round(0.4 * s, 3), saturation=round(0.4 * s, 3), hue=round(0.04 * s, 3))


def _base_size(base: TrainConfig) -> tuple[int, bool, int]:
    """(the base image size, whether the backbone only takes that size, its smallest input)."""
    from ftui.models.backbones import backbone_info

    info = backbone_info(base.backbone)
    return base.image_size or info.input_size, info.fixed_input_size, info.min_input_size


def size_choices(base: TrainConfig) -> list[int]:
    size, fixed, smallest = _base_size(base)
    if fixed:
        return [size]
    return sorted({max(smallest, min(1024, round(size * f / 8) * 8)) for f in (0.75, 1.0, 1.25)})


def base_params(base: TrainConfig) -> dict[str, Any]:
    """The base config as a point of the search space (trial 0)."""
    groups = base.train_groups if base.train_groups in GROUP_CHOICES else "all"
    return {"lr": base.lr, "epochs": base.epochs, "train_groups": groups,
            "image_size": _base_size(base)[0], "aug_strength": 0.5 if base.aug.enabled else 0.0}


def trial_config(base: TrainConfig, params: dict[str, Any], name: str) -> TrainConfig:
    """The base config with a trial's params; the base's own augmentation at the base's strength (trial 0)."""
    own = 0.5 if base.aug.enabled else 0.0
    strength = float(params["aug_strength"])
    aug = base.aug if abs(strength - own) < 1e-9 else scaled_aug(strength)
    return base.replace(lr=float(params["lr"]), epochs=int(params["epochs"]), train_groups=params["train_groups"],
                        image_size=int(params["image_size"]), aug=aug, run_name=name)


def suggest(trial, base: TrainConfig) -> dict[str, Any]:
    """Draw one point of the search space from Optuna's trial."""
    max_epochs = max(2, 2 * base.epochs)
    return {
        "lr": trial.suggest_float("lr", base.lr / 10, base.lr * 10, log=True),
        "epochs": trial.suggest_int("epochs", 2, max_epochs),
        "train_groups": trial.suggest_categorical("train_groups", list(GROUP_CHOICES)),
        "image_size": trial.suggest_categorical("image_size", size_choices(base)),
        "aug_strength": trial.suggest_float("aug_strength", 0.0, 1.0),
    }


class PruneOnValLoss(Callback):
    """Reports each epoch's val loss to the Optuna trial and stops the run when the pruner or the budget says
    so (the run then ends as stopped; the sweep records the trial as pruned)."""

    def __init__(self, trial, deadline: float, stop_event: threading.Event) -> None:
        self.trial, self.deadline, self.stop_event = trial, deadline, stop_event
        self.pruned_at: int | None = None
        self.reason = ""

    def on_batch_end(self, info: dict[str, Any]) -> None:
        if time.time() > self.deadline or self.stop_event.is_set():
            self.reason = self.reason or ("budget reached" if time.time() > self.deadline else "sweep stopped")
            info["control"].request_stop(f"sweep: {self.reason}")

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        if info.get("val_loss") is None:
            return
        self.trial.report(-float(info["val_loss"]), step=int(info["epoch"]))
        if self.trial.should_prune() and int(info["epoch"]) < int(info["epochs"]):
            self.pruned_at = int(info["epoch"])
            self.reason = f"pruned after epoch {self.pruned_at} (val loss above the median of earlier trials)"
            info["control"].request_stop(f"sweep: {self.reason}")


@dataclass
class TrialRecord:
    number: int
    params: dict[str, Any]
    state: str = "running"  # running, complete, pruned, failed
    run_id: str = ""
    best_val_acc: float | None = None
    best_val_loss: float | None = None
    seconds: float = 0.0
    note: str = ""
    best: bool = False


class Sweep:
    """Runs the study; `records` and `status` can be read from another thread (the app's panel)."""

    def __init__(self, settings: SweepSettings, stop_event: threading.Event | None = None,
                 on_change: Callable[[Sweep], None] = lambda sweep: None) -> None:
        self.settings = settings
        self.stop_event = stop_event or threading.Event()
        self.on_change = on_change
        self.records: list[TrialRecord] = []
        self.status = "created"
        self.message = ""
        self._lock = threading.Lock()

    def run(self) -> list[TrialRecord]:
        try:
            import optuna
        except ImportError:
            raise SweepError("sweeps need optuna: pip install optuna") from None
        self.settings.validate()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=self.settings.seed)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
        study.enqueue_trial(base_params(self.settings.base))
        deadline = time.time() + 60 * float(self.settings.budget_minutes)
        self._set(status="running")
        for _ in range(self.settings.trials):
            if time.time() > deadline or self.stop_event.is_set():
                break
            trial = study.ask()
            state, value = self._run_trial(trial, deadline)
            study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        reason = "stopped" if self.stop_event.is_set() else "budget reached" if time.time() > deadline else "done"
        self._finish(reason)
        return self.records

    def _run_trial(self, trial, deadline: float):
        import optuna

        from ftui.jobs import run_training

        params = suggest(trial, self.settings.base)
        record = TrialRecord(number=trial.number, params=params)
        self._set(append=record)
        pruner = PruneOnValLoss(trial, deadline, self.stop_event)
        name = f"sweep-{self.settings.sweep_id}-t{trial.number}"
        started = time.time()
        config = trial_config(self.settings.base, params, name)
        try:
            result, folder = run_training(config, RunStore(config.runs_dir), threading.Event(), callbacks=[pruner])
        except Exception as exc:
            log.exception("sweep trial %s failed", trial.number)
            self._update(record, state="failed", note=str(exc)[:300], seconds=round(time.time() - started, 1))
            return optuna.trial.TrialState.FAIL, None
        if folder is not None:
            folder.update_status(sweep=self.settings.sweep_id, sweep_trial=trial.number)
        metrics = folder.metrics() if folder is not None else None
        losses = [float(v) for v in (metrics["val_loss"].dropna() if metrics is not None else [])]
        fields = {"run_id": folder.id if folder else "", "best_val_acc": result.best_val_acc,
                  "best_val_loss": min(losses) if losses else None, "seconds": round(time.time() - started, 1)}
        if result.status == "done" and not pruner.reason and result.best_val_acc is not None:
            self._update(record, state="complete", **fields)
            # Ties on accuracy (common on small val sets) go to the lower val loss.
            return optuna.trial.TrialState.COMPLETE, result.best_val_acc - 1e-6 * (fields["best_val_loss"] or 0)
        note = pruner.reason or result.message
        self._update(record, state="pruned" if result.status != "failed" else "failed", note=note, **fields)
        if folder is not None:
            folder.update_status(sweep_note=note)
        return (optuna.trial.TrialState.PRUNED if result.status != "failed" else optuna.trial.TrialState.FAIL), None

    def best(self) -> TrialRecord | None:
        complete = [r for r in self.records if r.state == "complete" and r.best_val_acc is not None]
        return max(complete, key=lambda r: (r.best_val_acc, -(r.best_val_loss or 0.0)), default=None)

    def _finish(self, reason: str) -> None:
        best = self.best()
        if best is not None:
            best.best = True
            RunStore(self.settings.base.runs_dir).folder(best.run_id).update_status(sweep_best=True)
        self._set(status="done", message=f"{reason}: {len(self.records)} trial(s)"
                  + (f", best trial {best.number} val acc {best.best_val_acc:.4f} ({best.run_id})" if best else ""))

    def _set(self, status: str | None = None, message: str | None = None, append: TrialRecord | None = None):
        with self._lock:
            if status is not None:
                self.status = status
            if message is not None:
                self.message = message
            if append is not None:
                self.records.append(append)
        self._save()

    def _update(self, record: TrialRecord, **fields: Any) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(record, key, value)
        self._save()

    def snapshot(self) -> dict[str, Any]:
        """Plain data: id, status, message, trials (each a dict)."""
        with self._lock:
            return {"sweep": self.settings.sweep_id, "status": self.status, "message": self.message,
                    "base": self.settings.base.to_dict(), "trials": [dataclasses.asdict(r) for r in self.records]}

    def _save(self) -> None:
        write_json_atomic(self.settings.record_path, self.snapshot())
        self.on_change(self)


def trials_table(snapshot: dict[str, Any]):
    """One row per trial: number, state, best val acc, params, run id, best marked."""
    import pandas as pd

    rows = [{"trial": t["number"], "best": "★" if t["best"] else "", "state": t["state"],
             "val_acc": t["best_val_acc"], "val_loss": t["best_val_loss"], **t["params"], "seconds": t["seconds"],
             "run": t["run_id"], "note": t["note"]} for t in snapshot["trials"]]
    columns = ["trial", "best", "state", "val_acc", "val_loss", "lr", "epochs", "train_groups", "image_size",
               "aug_strength", "seconds", "run", "note"]
    return pd.DataFrame(rows, columns=columns)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """`ftui sweep DATA --trials N --budget-minutes M [--backbone ... --weights ... --image-size ...]`."""
    parser.add_argument("data")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--budget-minutes", dest="budget_minutes", type=float, default=30.0)
    parser.add_argument("--sweep-seed", dest="sweep_seed", type=int, default=0, help="the sampler's seed")
    for flag, kind in (("--backbone", str), ("--weights", str), ("--image-size", int), ("--epochs", int),
                       ("--lr", float), ("--batch-size", int), ("--seed", int), ("--device", str),
                       ("--runs-dir", str), ("--config", str)):
        parser.add_argument(flag, type=kind, dest=flag[2:].replace("-", "_"))


def run_cli(args: argparse.Namespace) -> int:
    base = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    changes = {k: getattr(args, k) for k in ("backbone", "weights", "image_size", "epochs", "lr", "batch_size",
                                              "seed", "device", "runs_dir") if getattr(args, k) is not None}
    settings = SweepSettings(base=base.replace(data=args.data, **changes), trials=args.trials,
                             budget_minutes=args.budget_minutes, seed=args.sweep_seed)
    printed: set[tuple[int, str]] = set()

    def show(sweep: Sweep) -> None:
        for record in sweep.records:
            if record.state != "running" and (record.number, record.state) not in printed:
                printed.add((record.number, record.state))
                acc = "-" if record.best_val_acc is None else f"{record.best_val_acc:.4f}"
                print(f"trial {record.number} {record.state}: val_acc {acc} {record.params} "
                      f"{record.seconds:.0f}s {record.run_id} {record.note}", flush=True)

    sweep = Sweep(settings, on_change=show)
    sweep.run()
    print(trials_table(sweep.snapshot()).drop(columns=["note"]).to_string(index=False))
    print(f"{sweep.message}\nsweep record: {settings.record_path}")
    return 0
