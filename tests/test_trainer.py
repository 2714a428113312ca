"""The Trainer's events, cancels and resume on a tiny synthetic model (no backbone): each test runs in ms."""

from __future__ import annotations

import threading

import torch
from torch import nn

from ftui.config import TrainConfig
from ftui.models.backbones import LayerGroup
from ftui.train.batches import TensorData
from ftui.train.callbacks import Callback, CancelBatch, CancelEpoch, CancelFit, CancelValidate
from ftui.train.trainer import Trainer

EVENTS = ["on_fit_start", "on_phase_start", "on_epoch_start", "on_batch_start", "on_batch_end",
          "on_validate_start", "on_validate_end", "on_epoch_end", "on_error", "on_fit_end"]


class Recorder(Callback):
    """Records (event, info) for every event; `raises` maps an event name to an exception to raise there."""

    def __init__(self, raises: dict[str, Exception] | None = None) -> None:
        self.events: list[tuple[str, dict]] = []
        self.raises = raises or {}

    def __getattribute__(self, name):
        if name in EVENTS:
            def record(info):
                self.events.append((name, info))
                if name in self.raises:
                    raise self.raises[name]
            return record
        return super().__getattribute__(name)

    def names(self, *only: str) -> list[str]:
        return [n for n, _ in self.events if not only or n in only]


def tiny_trainer(callbacks=(), **changes) -> Trainer:
    """Two layer groups (body, head) on 12 train / 6 val rows of 4 features, batches of 4: 3 steps an epoch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    groups = [LayerGroup("body", [model[0]], 40), LayerGroup("head", [model[2]], 18)]
    x = torch.randn(18, 4)
    y = (x[:, 0] > 0).long()
    config = TrainConfig(data="synthetic", backbone="synthetic", device="cpu", epochs=3, freeze_epochs=1,
                         train_groups="all", batch_size=4, lr=1e-2).replace(**changes)
    data = TensorData((x[:12], y[:12]), (x[12:], y[12:]), ["neg", "pos"])
    return Trainer(config, model, groups, data, callbacks)


class StateMatchesEvents(Callback):
    """The trainer's attributes say where the loop is when each batch ends."""

    def on_batch_end(self, info):
        trainer = info["trainer"]
        assert (trainer.epoch, trainer.batch, trainer.global_step) == (info["epoch"], info["batch"], info["step"])
        assert trainer.phase.name == info["phase"] and trainer.loss == info["loss"]


def test_events_arrive_in_order_for_each_phase_epoch_and_batch():
    rec = Recorder()
    result = tiny_trainer([rec, StateMatchesEvents()]).fit()
    assert result.status == "done" and result.epochs_done == 3
    batch = ["on_batch_start", "on_batch_end"] * 3
    epoch = ["on_epoch_start", *batch, "on_validate_start", "on_validate_end", "on_epoch_end"]
    # fine_tune: a head phase of 1 epoch, then both groups for 2.
    assert rec.names() == ["on_fit_start", "on_phase_start", *epoch, "on_phase_start", *epoch, *epoch,
                           "on_fit_end"]
    phases = [info for name, info in rec.events if name == "on_phase_start"]
    assert [(p["phase"], p["first_epoch"], p["last_epoch"]) for p in phases] == [("head", 1, 1),
                                                                                 ("fine_tune", 2, 3)]
    ends = [info for name, info in rec.events if name == "on_batch_end"]
    assert [e["step"] for e in ends] == list(range(1, 10))


def test_cancel_batch_skips_the_step():
    class SkipSecond(Callback):
        def on_batch_start(self, info):
            if info["batch"] == 2:
                raise CancelBatch()

    rec = Recorder()
    trainer = tiny_trainer([SkipSecond(), rec], recipe="plain", epochs=2)
    assert trainer.fit().status == "done"
    assert [i["batch"] for n, i in rec.events if n == "on_batch_end"] == [1, 3, 1, 3]
    assert trainer.global_step == 4


def test_cancel_epoch_ends_training_but_the_epoch_is_still_validated():
    rec = Recorder({"on_batch_end": CancelEpoch()})
    result = tiny_trainer([rec], recipe="plain", epochs=2).fit()
    assert result.status == "done" and result.epochs_done == 2
    assert rec.names("on_batch_end", "on_validate_end", "on_epoch_end") == [
        "on_batch_end", "on_validate_end", "on_epoch_end"] * 2


def test_cancel_validate_reports_no_val_metrics_and_keeps_no_best():
    rec = Recorder({"on_validate_start": CancelValidate()})
    result = tiny_trainer([rec], recipe="plain", epochs=1).fit()
    assert result.status == "done" and result.best_val_acc is None
    end = next(i for n, i in rec.events if n == "on_epoch_end")
    assert end["val_acc"] is None and end["train_loss"] > 0
    assert "on_validate_end" not in rec.names()


def test_cancel_fit_ends_the_run_as_done_with_its_message():
    class CancelAfterFirstEpoch(Callback):
        def on_epoch_end(self, info):
            raise CancelFit("enough for today")

    rec = Recorder()
    result = tiny_trainer([CancelAfterFirstEpoch(), rec]).fit()
    assert (result.status, result.message, result.epochs_done) == ("done", "enough for today", 1)
    assert rec.names()[-1] == "on_fit_end" and "on_error" not in rec.names()


def test_request_stop_ends_the_epoch_after_this_batch_then_validates_and_stops():
    """request_stop skips the epoch's remaining batches (1 of 3 runs), but the epoch is still validated and
    ended, so its metrics row and checkpoint exist."""
    class StopInFirstEpoch(Callback):
        def on_batch_end(self, info):
            info["control"].request_stop("listener asked")

    rec = Recorder()
    result = tiny_trainer([StopInFirstEpoch(), rec], recipe="plain").fit()
    assert (result.status, result.message, result.epochs_done) == ("done", "listener asked", 1)
    assert rec.names("on_batch_end", "on_validate_end", "on_epoch_end") == [
        "on_batch_end", "on_validate_end", "on_epoch_end"]
    end = next(i for n, i in rec.events if n == "on_epoch_end")
    assert end["val_acc"] is not None and result.best_val_acc == end["val_acc"]


def test_stop_event_gives_stopped_and_a_listener_error_gives_failed_with_on_error():
    stop = threading.Event()

    class PressStop(Callback):
        def on_batch_end(self, info):
            stop.set()

    trainer = tiny_trainer([PressStop()])
    trainer.stop_event = stop
    result = trainer.fit()
    assert result.status == "stopped" and result.message == "stopped by user at epoch 1 step 1"
    rec = Recorder({"on_epoch_start": KeyError("boom")})
    result = tiny_trainer([rec]).fit()
    assert result.status == "failed" and "boom" in result.error
    assert rec.names()[-2:] == ["on_error", "on_fit_end"]


def test_resume_skips_finished_epochs_and_carries_optimizer_and_best():
    first = tiny_trainer(epochs=2, recipe="plain")
    first.fit()
    state = first.state_dict()
    assert state["epoch"] == 2 and state["optimizer"]["state"]
    rec = Recorder()
    resumed = tiny_trainer([rec], epochs=3, recipe="plain")
    resumed.load_state_dict(state)
    result = resumed.fit()
    assert result.status == "done" and result.epochs_done == 3
    assert [i["epoch"] for n, i in rec.events if n == "on_epoch_start"] == [3]
    assert [i["step"] for n, i in rec.events if n == "on_batch_end"] == [7, 8, 9]
    # AdamW's step count went on from the saved optimizer state (6 steps before, 3 after).
    steps = {int(s["step"]) for s in resumed.optimizer.state_dict()["state"].values()}
    assert steps == {9}
    # The best so far came along: epoch 3 replaces it only by beating it.
    epoch3 = next(i["val_acc"] for n, i in rec.events if n == "on_epoch_end")
    if epoch3 > state["best_val_acc"]:
        assert (result.best_val_acc, result.best_epoch) == (epoch3, 3)
    else:
        assert (result.best_val_acc, result.best_epoch) == (state["best_val_acc"], state["best_epoch"])
