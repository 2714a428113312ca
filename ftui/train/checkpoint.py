"""best.pt and last.pt of a run folder, written as epochs end (a callback: the loop knows no files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ftui.runs import RunFolder, save_checkpoint
from ftui.train.callbacks import Callback
from ftui.train.resume import checkpoint_state, training_state


class Checkpoint(Callback):
    """best.pt when val accuracy improves; last.pt after every epoch with what a resume needs.

    It runs after the metrics logger (default_callbacks' order): an epoch's metrics row is on disk before its
    checkpoints, so a full disk or a crash while saving never leaves a best.pt whose epoch metrics.csv lacks.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.folder = RunFolder(Path(run_dir))

    def on_epoch_end(self, info: dict[str, Any]) -> None:
        trainer = info["trainer"]
        if info.get("improved"):
            self.save_best(trainer.model, self.meta(trainer, info.get("val_acc")))
        self.save_last(trainer, info.get("val_acc"))

    def on_fit_end(self, info: dict[str, Any]) -> None:
        """A stopped or failed run keeps last.pt (the weights as they are now); an existing last.pt is the end
        of the last finished epoch, with what a resume needs, and is kept as is."""
        trainer = info["trainer"]
        if trainer.data.meta is None or self.folder.last_path.exists():
            return
        try:
            save_checkpoint(self.folder.last_path, trainer.model,
                            self.meta(trainer, trainer.result.best_val_acc or 0.0))
        except Exception as exc:  # noqa: BLE001 - noted, never raised over the real error
            trainer.notes.append(f"could not save {self.folder.last_path.name}: {exc}")

    @staticmethod
    def meta(trainer, val_acc: float | None) -> dict[str, Any]:
        return {**trainer.data.meta, "epoch": trainer.epoch, "val_acc": val_acc}

    def save_best(self, model: nn.Module, meta: dict[str, Any]) -> None:
        save_checkpoint(self.folder.best_path, model, meta)

    def save_last(self, trainer, val_acc: float | None) -> None:
        # last.pt also holds what a resume needs (ftui/train/resume.py), as tensors and plain types.
        resume = checkpoint_state(training_state(trainer))
        save_checkpoint(self.folder.last_path, trainer.model, {**self.meta(trainer, val_acc), "resume": resume})
