"""The Data step names a multilabel or regression dataset's task and captions its thumbnails with each image's
labels or value (never a class name taken from a placeholder label)."""

from __future__ import annotations

from task_builders import make_multilabel_csv, make_regression_csv

from ftui.data.datasets import load_dataset
from ftui.ui.data_step import describe, thumbnails


def test_multilabel_dataset_is_described_with_its_task_and_label_sets(tmp_path):
    csv = make_multilabel_csv(tmp_path, n=16)
    dataset = load_dataset(csv)
    text = describe(dataset, csv)
    assert "3 labels" in text and "Task: **multilabel**" in text
    captions = [caption for _, caption in thumbnails(dataset)]
    expected = {";".join(n for n, t in zip(dataset.classes, it.target) if t) or "(no label)"
                for it in dataset.items}
    assert captions and set(captions) <= expected and "(no label)" in expected


def test_regression_dataset_thumbnails_show_values(tmp_path):
    csv = make_regression_csv(tmp_path, n=16)
    dataset = load_dataset(csv)
    assert "Task: **regression**" in describe(dataset, csv)
    values = {f"{it.target[0]:g}" for it in dataset.items}
    captions = [caption for _, caption in thumbnails(dataset)]
    assert captions and set(captions) <= values


def _ctx(tmp_path, data):
    from ftui.ui.context import AppContext, AppSettings

    return AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work", data_root=data))


def test_evaluate_views_of_a_multilabel_evaluation(tmp_path):
    import json

    import numpy as np

    from ftui.results import taskmetrics as tm
    from ftui.ui import task_results

    csv = make_multilabel_csv(tmp_path / "d", n=16)
    dataset = load_dataset(csv)
    truth = np.array([it.target for it in dataset.items])
    probs = np.clip(truth * 0.7 + np.random.default_rng(0).random(truth.shape) * 0.4, 0, 1)
    cuts = tm.choose_thresholds(probs, truth)
    result = {"task": "multilabel", "split": "val", "num_items": len(truth), "classes": dataset.classes,
              **tm.multilabel_metrics(probs, truth, dataset.classes, cuts), "notes": ["optimistic"],
              "cooccurrence_errors": tm.cooccurrence_errors(probs, truth, cuts),
              "mistakes": [{"path": it.path, "true": "red", "predicted": ""} for it in dataset.items[:5]],
              "outputs": probs.tolist(), "targets": truth.tolist()}
    shown: list[str] = []
    text, table, side, pictures, plot = task_results.outputs(_ctx(tmp_path, tmp_path / "d"), result, None, shown)
    assert text.startswith(f"### mAP {result['map']:.3f}") and "⚠ optimistic" in text
    assert list(table["label"]) == dataset.classes
    assert side.count("<tr>") == 4 and "diagonal: the label missed" in side
    assert len(pictures) == 5 and pictures[0][1] == "red → (none)" and len(shown) == 5
    series = {row["series"] for row in json.loads(plot.plot)["data"]["values"]}
    assert series == {f"{n} (AP {tm.label_aps(probs, truth)[k]:.2f})" for k, n in enumerate(dataset.classes)}


def test_evaluate_views_of_a_regression_evaluation(tmp_path):
    import json

    import numpy as np

    from ftui.results import taskmetrics as tm
    from ftui.ui import task_results

    csv = make_regression_csv(tmp_path / "d", n=20)
    dataset = load_dataset(csv)
    true = np.array([it.target for it in dataset.items])
    pred = true + np.random.default_rng(0).normal(0, 5, true.shape)
    result = {"task": "regression", "split": "val", "num_items": len(true), "classes": ["value"],
              **tm.regression_metrics(pred, true, ["value"], [50.0]), "notes": [],
              "mistakes": [{"path": it.path, "true_value": 10.0, "predicted_value": 20.5} for it in dataset.items[:3]],
              "outputs": pred.tolist(), "targets": true.tolist()}
    text, table, side, pictures, plot = task_results.outputs(_ctx(tmp_path, tmp_path / "d"), result, None, [])
    assert text.startswith(f"### MAE {result['mae']:.4g}") and "predicting the train mean" in text
    assert sum(int(cell.split("</td>")[0]) for cell in side.split("px'></div></td><td>")[1:]) == len(true)
    assert [p[1] for p in pictures] == ["10 → 20.5"] * 3
    spec = json.loads(plot.plot)
    assert len(spec["layer"]) == 2 and len(spec["layer"][1]["data"]["values"]) == len(true)
    assert [row["true"] for row in spec["data"]["values"]] == [row["predicted"] for row in spec["data"]["values"]]
