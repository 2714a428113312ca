"""The Predict step's test-time augmentation switch, through the running app and gradio_client: with it on,
the app's answers are the TTA predictor's (image, mirror, 4 corner crops averaged); off, the plain ones."""

from __future__ import annotations

import pytest
from ftui_app_server import running_app
from run_fixtures import make_quick_run

from ftui.results.calibrate import calibrate_and_evaluate
from ftui.results.predict import Predictor

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.slow


def _confidences(label: dict) -> dict:
    label = label.get("value", label)  # a plain label, or the update that also retitles the box
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def _column(table: dict, name: str) -> list:
    return [row[table["headers"].index(name)] for row in table["data"]]


def test_the_tta_switch_changes_the_apps_answers_to_the_averaged_views(tmp_path):
    run_dir = make_quick_run(tmp_path, per_class=10)
    calibrate_and_evaluate(run_dir)
    images = [str(p) for p in sorted((tmp_path / "colours" / "red").iterdir())[:2]]
    plain, tta = Predictor(run_dir), Predictor(run_dir, tta=True)
    want = {False: plain.predictions_table(images), True: tta.predictions_table(images)}
    assert list(want[False]["ood_score"]) != list(want[True]["ood_score"])  # the switch must matter here
    with running_app(tmp_path, data_root=tmp_path / "colours") as (url, _ctx):
        client = gradio_client.Client(url, verbose=False)
        for on in (False, True):
            out = client.predict(run_dir.name, [gradio_client.handle_file(p) for p in images], 3, on,
                                 api_name="/predict")
            assert out[0] == "", out[0]
            table = out[5]
            assert _column(table, "ood_score") == pytest.approx(list(want[on]["ood_score"]), abs=1e-3)
            assert _column(table, "probability") == pytest.approx(list(want[on]["probability"]), abs=1e-4)
            error, label, _verdict, _overlay = client.predict(run_dir.name, gradio_client.handle_file(images[0]),
                                                              3, on, api_name="/predict_image")
            assert error == "", error
            confidences = _confidences(label)
            top = want[on].iloc[0]
            assert confidences[top["label"]] == pytest.approx(top["probability"], abs=1e-4)
        # Older clients that do not send the switch get the plain answer.
        error, label, _v, _o = client.predict(run_dir.name, gradio_client.handle_file(images[0]), 3,
                                              api_name="/predict_image")
        assert error == "" and _confidences(label)[want[False].iloc[0]["label"]] == pytest.approx(want[False].iloc[0]["probability"], abs=1e-4)
