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
