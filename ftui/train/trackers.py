"""Run trackers, off by default and needing no server: TensorBoard event files and a local MLflow store.

`--log tensorboard` writes event files into `<run>/tensorboard/` (per-step loss and lr, per-epoch losses,
accuracies and lr, the config as text, and the val confusion matrix as an image once the run is
evaluated): `tensorboard --logdir runs` shows every run. `--log mlflow` logs the config as params, the
epoch metrics, and the model (best.pt, config.json, classes.json) as artifacts to an MLflow store: by
default SQLite at `<runs>/mlflow.db` with artifacts under `<runs>/mlartifacts` (`mlflow ui
--backend-store-uri sqlite:///runs/mlflow.db` shows them); `--tracking-uri` sends them elsewhere.

The run folder stays the record: a tracker that fails (disk, a locked database) writes a note and the
traceback to the run's log and is switched off; training goes on. Both are callbacks
(ftui/train/callbacks.py); the job calls `on_evaluation(evaluation)` after it evaluates the best weights.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ftui.errors import FtuiError, log_failure
from ftui.train.callbacks import Callback

TRACKERS = ("tensorboard", "mlflow")
EXPERIMENT = "ftui"
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
log = logging.getLogger(__name__)


class TrackerError(FtuiError):
    """An unknown tracker name or a tracker package that is not installed."""


def parse_trackers(text: str | None) -> list[str]:
    """'tensorboard,mlflow' -> ['tensorboard', 'mlflow']; '' or None -> []."""
    names = [part.strip() for part in (text or "").split(",") if part.strip()]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise TrackerError(f"unknown tracker {', '.join(unknown)}: choose from {', '.join(TRACKERS)}")
    return list(dict.fromkeys(names))


def make_trackers(names: list[str], runs_dir: str | Path, tracking_uri: str = "") -> list[Callback]:
    """One callback per tracker name."""
    out: list[Callback] = []
    for name in names:
        out.append(TensorBoardLogger() if name == "tensorboard" else MLflowLogger(runs_dir, tracking_uri))
    return out


def confusion_image(classes: list[str], confusion: list[list[int]], cell: int = 40) -> np.ndarray:
    """The confusion matrix as an RGB uint8 image (H, W, 3): rows true, columns predicted, darker = more."""
    from PIL import Image, ImageDraw

    n = len(classes)
    label_w = min(160, 8 + 7 * max(len(c) for c in classes))
    image = Image.new("RGB", (label_w + n * cell, 20 + n * cell), "white")
    draw = ImageDraw.Draw(image)
    counts = np.asarray(confusion, dtype=float)
    row_sums = counts.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(n):
        draw.text((4, 20 + i * cell + cell // 3), classes[i][:20], fill="black")
        for j in range(n):
            share = counts[i, j] / row_sums[i, 0]
            shade = int(255 * (1 - share))
            box = (label_w + j * cell, 20 + i * cell, label_w + (j + 1) * cell - 1, 20 + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text((box[0] + 4, box[1] + cell // 3), str(int(counts[i, j])),
                      fill="white" if share > 0.5 else "black")
    draw.text((label_w, 4), "predicted ->  (rows: true class)", fill="black")
    return np.asarray(image)


class _SafeTracker(Callback):
    """Calls `self._handle(event, info)`; the first failure is noted and logged and switches it off."""

    name = "tracker"

    def __init__(self) -> None:
        self.broken = False
        self.tracker_notes: list[str] = []

    def _safely(self, event: str, info: Any) -> None:
        if self.broken:
            return
        try:
            self._handle(event, info)
        except Exception as exc:  # noqa: BLE001 - a tracker must never fail the training run
            self.broken = True
            log_failure(log, exc, f"{self.name} tracker failed at {event}; switched off")
            self.tracker_notes.append(f"{self.name}: switched off after an error ({type(exc).__name__}: {exc})")

    def _handle(self, event: str, info: Any) -> None:
        raise NotImplementedError

    def on_fit_start(self, info: dict[str, Any]) -> None:
        self._safely("fit_start", info)

    def on_batch_end(self, info: dict[str, Any]) -> None:
        self._safely("batch_end", info)

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        self._safely("epoch_end", info)

    def on_fit_end(self, info: dict[str, Any]) -> None:
        self._safely("fit_end", info)

    def on_evaluation(self, evaluation: Any) -> None:
        """After a finished run's evaluation on val (an ftui.results.evaluate.Evaluation, or None when it
        failed): the last event of a run that ended "done"."""
        self._safely("evaluation", evaluation)


def _run_folder(info: dict[str, Any]) -> Path | None:
    """The run folder of the trainer sending the event (None for one that writes none)."""
    run_dir = getattr(info.get("trainer"), "run_dir", None)
    return Path(run_dir) if run_dir is not None else None


class TensorBoardLogger(_SafeTracker):
    """Event files in `<run>/tensorboard/` (torch.utils.tensorboard; the tensorboard package writes them)."""

    name = "tensorboard"

    def __init__(self) -> None:
        super().__init__()
        self.writer = None

    def _handle(self, event: str, info: Any) -> None:
        if event == "fit_start":
            from torch.utils.tensorboard import SummaryWriter

            folder = _run_folder(info)
            if folder is None:
                raise TrackerError("no run folder to write event files into")
            self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
            self.writer.add_text("config", "```\n" + json.dumps(info.get("config", {}), indent=1) + "\n```")
            return
        if self.writer is None:
            return
        if event == "batch_end":
            self.writer.add_scalar("step/loss", float(info["loss"]), int(info["step"]))
            self.writer.add_scalar("step/lr", float(info["lr"]), int(info["step"]))
        elif event == "epoch_end":
            for key in EPOCH_METRICS:
                if info.get(key) is not None:
                    self.writer.add_scalar(f"epoch/{key}", float(info[key]), int(info["epoch"]))
            self.writer.flush()
        elif event == "evaluation":
            if info is not None:
                image = confusion_image(list(info.classes), info.confusion)
                self.writer.add_image("val/confusion_matrix", image, dataformats="HWC")
                self.writer.add_scalar("val/accuracy_best", float(info.accuracy))
            self.writer.close()
        elif event == "fit_end":
            self.writer.flush()
            if info.get("status") != "done":  # no evaluation follows
                self.writer.close()


def default_tracking_uri(runs_dir: str | Path) -> str:
    """SQLite in the runs folder."""
    return f"sqlite:///{(Path(runs_dir) / 'mlflow.db').resolve()}"


class MLflowLogger(_SafeTracker):
    """Params, epoch metrics and the model's files in an MLflow store, through MlflowClient (no global state:
    several jobs in one server each keep their own run)."""

    name = "mlflow"

    def __init__(self, runs_dir: str | Path, tracking_uri: str = "") -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.tracking_uri = tracking_uri or default_tracking_uri(runs_dir)
        self.client = None
        self.run_id = ""
        self.folder: Path | None = None

    def _handle(self, event: str, info: Any) -> None:
        if event == "fit_start":
            self._start(info)
        elif self.client is None:
            return
        elif event == "epoch_end":
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            metrics = [Metric(key, float(info[key]), stamp, int(info["epoch"]))
                       for key in EPOCH_METRICS if info.get(key) is not None]
            self.client.log_batch(self.run_id, metrics=metrics)
        elif event == "evaluation":
            if info is not None:
                self.client.log_metric(self.run_id, "val_acc_best_weights", float(info.accuracy))
                self.client.log_dict(self.run_id, {"classes": list(info.classes), "confusion": info.confusion},
                                     "evaluation/confusion.json")
            self.client.set_terminated(self.run_id, status="FINISHED")
        elif event == "fit_end":
            self._finish(info)

    def _start(self, info: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.folder = _run_folder(info)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            artifacts = (self.runs_dir / "mlartifacts").resolve().as_uri()
            experiment_id = self.client.create_experiment(EXPERIMENT, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
        name = self.folder.name if self.folder is not None else "ftui run"
        run = self.client.create_run(experiment_id, run_name=name, tags={"ftui.run_folder": str(self.folder)})
        self.run_id = run.info.run_id
        params = [Param(key, str(value)[:6000]) for key, value in _flat(info.get("config", {})).items()]
        params.append(Param("classes", ",".join(info.get("classes", []))[:6000]))
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def _finish(self, info: dict[str, Any]) -> None:
        if self.folder is not None:
            for file in ("best.pt", "config.json", "classes.json"):
                if (self.folder / file).is_file():
                    self.client.log_artifact(self.run_id, str(self.folder / file), "model")
        if info.get("best_val_acc") is not None:
            self.client.log_metric(self.run_id, "best_val_acc", float(info["best_val_acc"]))
        if info.get("status") != "done":  # no evaluation follows
            status = "KILLED" if info.get("status") == "stopped" else "FAILED"
            self.client.set_terminated(self.run_id, status=status)


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'aug': {'hflip': True}} -> {'aug.hflip': True}."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
