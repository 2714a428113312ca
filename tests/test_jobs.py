"""Background jobs through real training: status, history, stop, failures, queueing."""

from __future__ import annotations

import json
import threading

import pytest

from ftui.config import AugConfig, TrainConfig
from ftui.jobs import Job, JobError, JobManager, run_training
from ftui.runs import RunStore, load_checkpoint
from ftui.train.callbacks import Callback


def tiny_config(data, **changes) -> TrainConfig:
    base = TrainConfig(data=str(data), backbone="mobilenet_v3_small", weights="none", image_size=32, epochs=2,
                       batch_size=8, lr=1e-2, device="cpu", aug=AugConfig.none(), train_groups="all",
                       recipe="plain", scheduler="none")
    return base.replace(**changes)


class Gate(Callback):
    """Holds the training thread at its first batch until released: a job that is surely still running."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def on_batch_end(self, info):
        self.reached.set()
        assert self.release.wait(30), "test never released the gate"


class StopJobAt(Callback):
    """Calls job.stop() at a given global step, from inside the training thread."""

    def __init__(self, step: int) -> None:
        self.step, self.job = step, None

    def on_batch_end(self, info):
        if info["step"] == self.step:
            self.job.stop()


def test_job_runs_to_done_and_writes_the_whole_run_folder(class_folder, tmp_path):
    manager = JobManager(tmp_path / "runs")
    job = manager.start(tiny_config(class_folder))
    assert job.wait(60)
    snap = job.snapshot()
    assert snap["status"] == "done", snap
    assert snap["epoch"] == 2 and snap["epochs"] == 2 and snap["best_val_acc"] is not None
    for key in ("id", "run_id", "run_dir", "backbone", "step", "steps_per_epoch", "phase", "images_per_s",
                "eta_s", "elapsed_s", "message", "error", "queue_position"):
        assert key in snap
    history = job.history()
    assert list(history["epoch"]) == [1, 2]
    assert {"step", "epoch", "loss", "lr", "images_per_s"} <= set(job.batch_history().columns)
    names = {p.name for p in (tmp_path / "runs" / snap["run_id"]).iterdir()}
    assert {"config.json", "classes.json", "status.json", "metrics.csv", "best.pt", "last.pt",
            "evaluation.json"} <= names
    runs = RunStore(tmp_path / "runs").list_runs()
    assert runs.loc[0, "status"] == "done" and runs.loc[0, "id"] == snap["run_id"]


def test_stopping_a_job_mid_epoch_keeps_metrics_and_last_checkpoint(class_folder, tmp_path):
    # 15 train images at batch 4 make 4 steps per epoch: global step 6 lies inside epoch 2.
    stopper = StopJobAt(step=6)
    job = Job(tiny_config(class_folder, epochs=5, batch_size=4), RunStore(tmp_path / "runs"),
              callbacks=[stopper])
    stopper.job = job
    job.run()
    snap = job.snapshot()
    assert snap["status"] == "stopped"
    run_dir = tmp_path / "runs" / snap["run_id"]
    assert (run_dir / "metrics.csv").read_text().count("\n") == 2  # header + epoch 1
    assert load_checkpoint(run_dir / "last.pt")["backbone"] == "mobilenet_v3_small"
    assert RunStore(tmp_path / "runs").list_runs().loc[0, "status"] == "stopped"


def test_a_missing_dataset_fails_the_job_with_a_clear_message(tmp_path):
    job = Job(tiny_config(tmp_path / "nowhere"), RunStore(tmp_path / "runs"))
    job.run()
    assert job.status == "failed"
    assert "dataset not found" in job.error


def test_second_job_queues_behind_the_running_one_then_runs(class_folder, tmp_path):
    manager = JobManager(tmp_path / "runs", max_queue=2)
    gate = Gate()
    first = manager.start(tiny_config(class_folder, epochs=1), callbacks=[gate])
    assert gate.reached.wait(60)
    second = manager.start(tiny_config(class_folder, epochs=1))
    assert manager.active() is first
    snap = second.snapshot()
    assert snap["status"] == "queued" and snap["queue_position"] == 1
    assert manager.get(second.id) is second and manager.latest() is second
    gate.release.set()
    assert first.wait(60) and second.wait(60)
    assert first.status == "done" and second.status == "done"
    assert second.snapshot()["queue_position"] is None


def test_a_full_queue_refuses_a_new_job_with_a_clear_message(class_folder, tmp_path):
    manager = JobManager(tmp_path / "runs", max_queue=0)
    gate = Gate()
    first = manager.start(tiny_config(class_folder, epochs=1), callbacks=[gate])
    assert gate.reached.wait(60)
    try:
        with pytest.raises(JobError, match="already running on cpu"):
            manager.start(tiny_config(class_folder, epochs=1))
    finally:
        gate.release.set()
    assert first.wait(60)


def test_stopping_a_queued_job_means_it_never_starts(class_folder, tmp_path):
    manager = JobManager(tmp_path / "runs", max_queue=2)
    gate = Gate()
    first = manager.start(tiny_config(class_folder, epochs=1), callbacks=[gate])
    assert gate.reached.wait(60)
    second = manager.start(tiny_config(class_folder, epochs=1))
    third = manager.start(tiny_config(class_folder, epochs=1))
    assert third.snapshot()["queue_position"] == 2
    second.stop()
    # Stopped at once, and the job behind it moves up.
    assert second.status == "stopped" and third.snapshot()["queue_position"] == 1
    gate.release.set()
    assert first.wait(60) and third.wait(60)
    assert third.status == "done"
    assert second.status == "stopped" and second.snapshot()["run_id"] is None


def test_unknown_job_id_is_a_job_error(tmp_path):
    with pytest.raises(JobError, match="no job"):
        JobManager(tmp_path / "runs").get("nope")


def test_an_invalid_config_is_refused_before_queueing(tmp_path):
    from ftui.config import ConfigError

    with pytest.raises(ConfigError, match="epochs"):
        JobManager(tmp_path / "runs").start(TrainConfig(data="x", epochs=0))


class RaisesAtFitEnd(Callback):
    """A listener that breaks after training: the run must still not be left marked as running."""

    def on_fit_end(self, info):
        raise RuntimeError("listener broke")


def test_a_listener_failing_after_fit_marks_the_run_failed_not_running(class_folder, tmp_path):
    from pathlib import Path

    job = Job(tiny_config(class_folder, epochs=1), RunStore(tmp_path / "runs"), callbacks=[RaisesAtFitEnd()])
    job.run()
    log_txt = Path(job.run_dir).resolve() / "log.txt"
    assert job.status == "failed" and job.error == f"internal error, details in {log_txt}"
    assert job.snapshot()["internal_error"] is True
    assert "RuntimeError: listener broke" in log_txt.read_text() and "Traceback" in log_txt.read_text()
    status = json.loads((Path(job.run_dir) / "status.json").read_text())
    assert status["status"] == "failed" and status["message"] == job.error


def test_a_stop_during_the_dataset_scan_creates_no_run_folder(class_folder, tmp_path):

    stop = threading.Event()
    stop.set()  # as if Stop was pressed while the dataset was being scanned
    result, folder = run_training(tiny_config(class_folder), RunStore(tmp_path / "runs"), stop)
    assert result.status == "stopped" and folder is None
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

