"""User errors show their message; anything else is an internal error whose traceback lands in the run's log.txt."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from ftui import cli
from ftui.config import AugConfig, ConfigError, TrainConfig
from ftui.data.datasets import DatasetError
from ftui.errors import LOG_NAME, FtuiError, run_log
from ftui.jobs import Job
from ftui.runs import RunStore
from ftui.train.callbacks import Callback
from ftui.train.trainer import describe_exception


def tiny_config(data, **changes) -> TrainConfig:
    base = TrainConfig(data=str(data), backbone="mobilenet_v3_small", weights="none", image_size=32, epochs=1,
                       batch_size=8, lr=1e-2, device="cpu", aug=AugConfig.none(), train_groups="head",
                       recipe="plain", scheduler="none")
    return base.replace(**changes)


def deep_pandas_bug() -> None:
    """A plain ValueError from deep inside a library, as a bug in ftui's own code would raise it."""
    pd.DataFrame({"a": [1, 2]}).astype({"a": "not-a-dtype"})


class BreaksAtFirstBatch(Callback):
    def __init__(self, fail) -> None:
        self.fail = fail

    def on_batch_end(self, info):
        self.fail()


def run_job(class_folder, tmp_path, fail) -> tuple[Job, dict, str]:
    job = Job(tiny_config(class_folder), RunStore(tmp_path / "runs"), callbacks=[BreaksAtFirstBatch(fail)])
    job.run()
    status = json.loads((Path(job.run_dir) / "status.json").read_text())
    log_file = Path(job.run_dir) / LOG_NAME
    return job, status, log_file.read_text() if log_file.exists() else ""


def test_a_plain_valueerror_deep_in_training_is_an_internal_error_with_its_traceback_in_log_txt(
        class_folder, tmp_path):
    job, status, log_text = run_job(class_folder, tmp_path, deep_pandas_bug)
    expected = f"internal error, details in {Path(job.run_dir).resolve() / LOG_NAME}"
    assert status["status"] == "failed" and status["message"] == expected
    assert job.status == "failed" and job.error == expected and job.snapshot()["message"] == expected
    assert "Traceback (most recent call last)" in log_text
    assert "deep_pandas_bug" in log_text and "astype" in log_text  # the frames that raised it
    assert "not-a-dtype" not in status["message"]  # the library's words are not passed off as advice


def test_a_ftui_error_in_training_shows_its_own_message_without_a_traceback(class_folder, tmp_path):
    def moved():
        raise DatasetError("the dataset folder was moved during training: load it again")

    job, status, log_text = run_job(class_folder, tmp_path, moved)
    assert status["message"] == job.error == "the dataset folder was moved during training: load it again"
    assert "Traceback" not in log_text


def test_describe_exception_keeps_user_messages_and_hides_everything_else():
    config = TrainConfig()
    assert describe_exception(ConfigError("epochs must be >= 1"), config) == "epochs must be >= 1"
    assert issubclass(DatasetError, FtuiError) and issubclass(ConfigError, ValueError)
    for exc in (ValueError("could not convert string to float: 'x'"), KeyError("head"), RuntimeError("boom")):
        assert describe_exception(exc, config, "/runs/r1/log.txt") == "internal error, details in /runs/r1/log.txt"
    assert describe_exception(RuntimeError("boom"), config) == ("internal error (RuntimeError: boom), details in "
                                                                 "the server log")


def test_a_run_log_takes_only_its_own_threads_lines_and_nesting_writes_once(tmp_path):
    import threading

    logger = logging.getLogger("ftui.test_errors")
    with run_log(tmp_path) as path, run_log(tmp_path):
        logger.warning("mine")
        other = threading.Thread(target=lambda: logger.warning("another job's line"))
        other.start()
        other.join()
    logger.warning("after the run")
    text = path.read_text()
    assert text.count("mine") == 1
    assert "another job's line" not in text and "after the run" not in text


def test_cli_exit_codes_user_error_2_internal_error_1(tmp_path, capsys, monkeypatch):
    assert cli.main(["summary", str(tmp_path / "missing")]) == 2
    assert "Traceback" not in capsys.readouterr().err

    # A bug in a subcommand (simulated: a real one cannot be produced on purpose) exits 1 with its traceback logged.
    def broken(args):
        deep_pandas_bug()

    monkeypatch.setattr(cli, "_cmd_backbones", broken)
    assert cli.main(["backbones"]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback (most recent call last)" in err and "deep_pandas_bug" in err


def test_cli_train_failing_on_a_bug_before_training_exits_1_not_2(class_folder, tmp_path, capsys, monkeypatch):
    import ftui.data.datasets

    # A bug before the run folder exists (simulated: a plain ValueError where the dataset's class sizes are
    # checked) is not the user's to fix: exit 1 and an internal-error message, where a DatasetError gave 2.
    monkeypatch.setattr(ftui.data.datasets, "class_size_warnings", lambda dataset: deep_pandas_bug())
    args = ["train", str(class_folder), "--backbone", "mobilenet_v3_small", "--weights", "none", "--epochs", "1",
            "--image-size", "32", "--runs-dir", str(tmp_path / "runs")]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "error: internal error" in err and "Traceback (most recent call last)" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

    def too_small(dataset):
        raise DatasetError("class 'red' has 1 image: add at least one more")

    monkeypatch.setattr(ftui.data.datasets, "class_size_warnings", too_small)
    assert cli.main(args) == 2
    assert "error: class 'red' has 1 image" in capsys.readouterr().err


def test_predict_step_shows_user_errors_and_hides_bugs_behind_internal_error(tmp_path, monkeypatch, caplog):
    from run_fixtures import make_quick_run

    import ftui.results.predict
    from ftui.ui import AppContext, AppSettings
    from ftui.ui.predict_step import predict_single

    run_dir = make_quick_run(tmp_path)
    ctx = AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work"))
    image = next((tmp_path / "colours" / "red").iterdir())
    error, labels, _verdict, _overlay = predict_single(ctx, run_dir.name, str(image), 0)  # k out of range
    assert error.startswith("**Could not predict:** k ") and labels is None

    def bug(self, images, top_k=5):
        deep_pandas_bug()

    monkeypatch.setattr(ftui.results.predict.Predictor, "verdicts", bug)
    with caplog.at_level(logging.ERROR, logger="ftui"):
        error, labels, _verdict, _overlay = predict_single(ctx, run_dir.name, str(image), 3)
    assert error == "**Could not predict:** internal error, details in the server log" and labels is None
    assert any(r.exc_info and "astype" in caplog.text for r in caplog.records)


def test_app_handlers_show_user_messages_and_log_bugs_as_internal_errors(caplog):
    from ftui.ui.data_step import _finish

    def user_error():
        raise DatasetError("no images found under /data/x")

    def bug():
        deep_pandas_bug()

    assert _finish(user_error, 2)[-1] == "**Could not load the data:** no images found under /data/x"
    with caplog.at_level(logging.ERROR, logger="ftui"):
        outputs = _finish(bug, 2)
    assert outputs[-1] == "**Could not load the data:** internal error, details in the server log"
    # pandas' own words stay in the log, with the traceback that says where it came from.
    assert "not-a-dtype" not in outputs[-1] and "astype" in caplog.text
    assert any(r.exc_info for r in caplog.records)
