"""A real run folder in a second, without training: a seeded random-init torchvision model saved the way the
engine saves one (config.json, classes.json, status.json, best.pt), over a real image folder. And a real
training job run to its end in a thread, with a user's Stop press at a chosen epoch."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from ftui.config import AugConfig, TrainConfig
from ftui.jobs import Job
from ftui.runs import RunStore, save_checkpoint
from ftui.train.callbacks import Callback
from tests.conftest import make_class_folder


def make_quick_run(root: Path, backbone: str = "resnet18", image_size: int = 32, per_class: int = 6,
                   classes: list[str] | None = None, seed: int = 0) -> Path:
    """root/colours (3 classes, or `classes`) and root/runs/<id>/ with an untrained but real checkpoint;
    returns the run dir."""
    from ftui.models.backbones import backbone_info, build

    data = make_class_folder(root / "colours", per_class=per_class, classes=classes)
    config = TrainConfig(data=str(data), backbone=backbone, weights="none", image_size=image_size, epochs=1,
                         batch_size=4, device="cpu", aug=AugConfig.none(), train_groups="all", recipe="plain")
    folder = RunStore(root / "runs").create(config)
    classes = sorted(p.name for p in data.iterdir())
    folder.write_classes(classes)
    torch.manual_seed(seed)
    model = build(backbone, len(classes), weights="none").eval()
    info = backbone_info(backbone)
    meta = {"classes": classes, "backbone": backbone, "num_classes": len(classes), "image_size": image_size,
            "resize_size": image_size, "mean": list(info.mean), "std": list(info.std), "epoch": 1, "val_acc": 0.5}
    save_checkpoint(folder.best_path, model, meta)
    folder.update_status(status="done", best_val_acc=0.5, epochs_done=1, seconds=1.0)
    return folder.path


class PressStop(Callback):
    """Presses the job's Stop as a user would, when epoch `epoch` ends (at="end") or starts (at="start")."""

    def __init__(self, epoch: int, at: str = "end") -> None:
        self.epoch, self.at, self.job = epoch, at, None

    def on_epoch_start(self, info) -> None:
        if self.at == "start" and info["epoch"] == self.epoch:
            self.job.stop()

    def on_epoch_end(self, info) -> None:
        if self.at == "end" and info["epoch"] == self.epoch:
            self.job.stop()


def run_job(config: TrainConfig, run_dir: Path, callbacks=(), resume: bool = False) -> Job:
    """A training Job in `run_dir` run in a thread until it ends; PressStop callbacks get the job."""
    job = Job(config, RunStore(config.runs_dir), run_dir=run_dir, callbacks=callbacks, resume=resume)
    for cb in callbacks:
        cb.job = job
    thread = threading.Thread(target=job.run)
    thread.start()
    thread.join(600)
    return job
