"""Plot frames for the Train step: every series is present from the first frame on (the browser fixes colours then)."""

from __future__ import annotations

import math

import pandas as pd

from ftui.ui.charts import batch_loss_frame, epoch_frame


def test_empty_frames_name_every_series_with_blank_points():
    assert sorted(epoch_frame(None, "acc")["series"]) == ["train", "val"]
    assert sorted(batch_loss_frame(None)["series"]) == ["batch loss", "smoothed"]
    assert epoch_frame(None, "loss")["value"].isna().all()


def test_first_batches_keep_a_blank_smoothed_point_until_there_is_a_trend():
    frame = batch_loss_frame(pd.DataFrame({"step": [1, 2], "loss": [1.2, 0.9]}))
    assert frame[frame["series"] == "batch loss"]["loss"].tolist() == [1.2, 0.9]
    smoothed = frame[frame["series"] == "smoothed"]
    assert len(smoothed) == 1 and math.isnan(smoothed["loss"].iloc[0])


def test_epoch_frame_without_validation_still_names_val():
    history = pd.DataFrame({"epoch": [1, 2], "train_acc": [0.4, 0.6]})
    frame = epoch_frame(history, "acc")
    assert frame[frame["series"] == "train"]["value"].tolist() == [0.4, 0.6]
    assert frame[frame["series"] == "val"]["value"].isna().all()


def test_line_chart_spec_whole_ticks_markers_for_short_series_and_every_series_in_the_legend():
    import json

    from ftui.ui.charts import line_chart, whole_ticks

    assert whole_ticks(pd.Series([1.0, 3.0])) == [1, 2, 3]
    assert whole_ticks(pd.Series([1, 14])) == [2, 4, 6, 8, 10, 12, 14]
    assert whole_ticks(pd.Series([3, 250])) == [50, 100, 150, 200, 250]
    history = pd.DataFrame({"epoch": [1, 2], "train_acc": [0.4, 0.6]})
    spec = json.loads(line_chart(epoch_frame(history, "acc"), "epoch", "value", {"train": "#111", "val": "#222"},
                                 ("epoch", "accuracy")).plot)
    assert spec["encoding"]["x"]["axis"] == {"values": [1, 2], "format": "d"}
    assert spec["encoding"]["color"]["scale"] == {"domain": ["train", "val"], "range": ["#111", "#222"]}
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["line", "circle"]
    assert all(not math.isnan(r["value"]) for r in spec["data"]["values"])  # the blank val point is dropped
    assert spec["encoding"]["x"]["title"] == "epoch" and spec["encoding"]["y"]["title"] == "accuracy"
    steps = pd.DataFrame({"step": range(1, 200), "loss": 1.0})
    long = json.loads(line_chart(batch_loss_frame(steps), "step", "loss", {"batch loss": "#1", "smoothed": "#2"},
                                 ("step", "loss")).plot)
    assert [layer["mark"]["type"] for layer in long["layer"]] == ["line"]  # no dots on a per-step curve
