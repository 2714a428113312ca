"""The app's pieces for multilabel and regression runs on real files: the Data step's task override, the live
metric plot named by the task, Predict's per-label probabilities with thresholds (or the value) with
Grad-CAM, the clicked example's truth, and the model card (numbers with intervals, no calibration block)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from run_fixtures import run_job
from task_builders import make_multilabel_csv, make_regression_csv, write_value_image

from ftui.config import AugConfig, TrainConfig
from ftui.ui.train_step import epoch_charts, metric_chart, status_markdown


def _ctx(tmp_path, data, runs=None):
    from ftui.ui.context import AppContext, AppSettings

    return AppContext(AppSettings(runs_dir=runs or tmp_path / "runs", workdir=tmp_path / "work", data_root=data))


def test_data_step_reads_numbered_folders_as_regression_when_asked(tmp_path):
    from ftui.ui.data_step import checked_task, show
    from ftui.ui.guard import InputError

    for value in (0, 5, 10):
        for i in range(4):
            write_value_image(tmp_path / "data" / str(value) / f"{i}.png", 10 + 8 * value, seed=value * 10 + i)
    ctx = _ctx(tmp_path, tmp_path / "data")
    _, text, _, _, thumbs, _ = show(ctx, tmp_path / "data", 0.25)
    assert "3 classes" in text and "Task: **classification**" in text
    _, text, _, _, thumbs, _ = show(ctx, tmp_path / "data", 0.25, task=checked_task("regression"))
    assert "1 values" in text and "Task: **regression**" in text
    assert {caption for _, caption in thumbs} <= {"0", "5", "10"}
    assert checked_task("auto") is None
    with pytest.raises(InputError, match="task must be one of"):
        checked_task("../../etc")


def test_epoch_plot_names_the_tasks_metric_and_shows_mae_in_units():
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.1, 0.6],
                            "train_acc": [-12.0, -6.0], "val_acc": [-14.0, -7.5]})
    _, chart = epoch_charts(history, "regression")
    spec = json.loads(chart.plot) if hasattr(chart, "plot") else chart
    text = json.dumps(spec)
    assert '"title": "MAE"' in text and "accuracy" not in text
    values = sorted(row["value"] for row in spec["data"]["values"])
    assert values == [6.0, 7.5, 12.0, 14.0]  # -score: the MAE a user reads, in the values' units
    _, update = metric_chart(history.assign(train_acc=[0.5, 0.7], val_acc=[0.4, 0.8]), "multilabel")
    assert update["label"] == "mAP per epoch" and '"title": "mAP"' in json.dumps(
        json.loads(update["value"].plot) if hasattr(update["value"], "plot") else update["value"])
    done = {"status": "done", "backbone": "b", "elapsed_s": 3, "run_id": "r", "best_val_acc": -7.5,
            "task": "regression", "num_val": 8}
    assert "best val MAE **7.5**" in status_markdown(done, True, None)
    assert "best val mAP **80.0%**" in status_markdown({**done, "task": "multilabel", "best_val_acc": 0.8}, True, None)


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory):
    """One tiny trained run per task (random-init mobilenet_v3_small, 32 px, 2 epochs) on real files."""
    root = tmp_path_factory.mktemp("task-runs")
    runs = {}
    for task, make in (("multilabel", make_multilabel_csv), ("regression", make_regression_csv)):
        csv = make(root / task, n=32)
        config = TrainConfig(data=str(csv), backbone="mobilenet_v3_small", weights="none", image_size=32,
                             batch_size=8, epochs=2, device="cpu", aug=AugConfig.none(),
                             runs_dir=str(root / "runs"))
        job = run_job(config, root / "runs" / task)
        assert job.status == "done", job.snapshot()
        runs[task] = root / "runs" / task
    return root, runs


@pytest.mark.slow
def test_predict_shows_every_labels_probability_with_its_threshold_and_grad_cam(task_runs, tmp_path):
    from ftui.results.predict import Predictor
    from ftui.ui.predict_step import labelled_examples, predict_example, predict_single

    root, runs = task_runs
    ctx = _ctx(tmp_path, root, runs=root / "runs")
    image = min((root / "multilabel" / "images").iterdir())
    error, label, verdict, overlay = predict_single(ctx, "multilabel", str(image), 3)
    assert error == "" and overlay is not None and overlay.size == (256, 256)
    probs = Predictor(runs["multilabel"]).outputs([str(image)])[0]
    assert label["value"] == pytest.approx({n: float(p) for n, p in zip(["blue", "green", "red"], probs)})
    assert "| in answer | label | probability | threshold |" in verdict and "where the model saw" in verdict
    assert verdict.count("\n| ") == 3 + 1  # a row per label under the header
    rows = labelled_examples(ctx, "multilabel", None)
    assert rows and all(r["kind"] == "multilabel" for r in rows)
    assert all(set(r["true"].split(";")) <= {"red", "green", "blue", "(no label)"} for r in rows)
    _, _, clicked, _ = predict_example(ctx, "multilabel", 0, 3, None)
    assert clicked.startswith(f"**True labels: {rows[0]['true']}**")

    error, label, verdict, overlay = predict_single(ctx, "regression", str(image), 3)
    value = float(Predictor(runs["regression"]).outputs([str(image)])[0, 0])
    assert error == "" and label["value"] == f"{value:.4g}" and f"**Predicted value: {value:.4g}**" in verdict
    assert overlay is not None and "pushed the predicted value up" in verdict


@pytest.mark.slow
def test_model_card_of_a_task_run_gives_numbers_with_intervals_and_no_calibration(task_runs):
    from ftui.results.modelcard import build_card, card_body

    _, runs = task_runs
    card = build_card(runs["multilabel"])
    body = card_body(card)
    evaluation = json.loads((runs["multilabel"] / "evaluation.json").read_text())
    assert card.heading == "Tags images with blue, green and red"
    assert f"mAP (macro average precision): {evaluation['map']:.3f} (95% interval" in body
    assert "exact match" in body and "Validation accuracy" not in body and "emperature" not in body
    assert all(f"<td>{name}</td>" in body for name in ("red", "green", "blue")) and len(card.samples) >= 4
    body = card_body(build_card(runs["regression"]))
    evaluation = json.loads((runs["regression"] / "evaluation.json").read_text())
    assert f"MAE: {evaluation['mae']:.4g} (95% interval" in body and "predicting the train mean" in body
    assert "Estimates value from an image" in body and "true: " in body and "predicted: " in body
