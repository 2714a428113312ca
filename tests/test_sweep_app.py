"""The app's sweep panel through its API (gradio_client on a live localhost app): start a 2-trial sweep with
the form's settings, see its trials and their runs, and only the starting browser may stop a sweep."""

from __future__ import annotations

import json
import time

import pytest
from conftest import make_class_folder
from ftui_app_server import running_app

gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("optuna")

TINY = {"backbone": "resnet18", "weights": "none", "train_groups": "all", "recipe": "plain", "image_size": 32,
        "batch_size": 8, "epochs": 2, "feature_cache": False}


@pytest.mark.slow  # two training runs through the API
def test_a_sweep_started_from_the_app_lists_its_trials_and_runs(tmp_path):
    data_root = tmp_path / "data"
    make_class_folder(data_root / "colours", per_class=8, size=32)
    with running_app(tmp_path, data_root=data_root) as (url, ctx):
        client = gradio_client.Client(url, verbose=False)
        client.predict(source_path="colours", val_fraction=0.25, api_name="/load_data")
        from ftui.ui.guard import new_owner_token

        sweeper, other = new_owner_token(), new_owner_token()  # tokens as the server issues them (/new_token)
        message = client.predict(config_json=json.dumps(TINY), owner_token="", n=2, minutes=5,
                                 api_name="/start_sweep")
        assert "owner token" in message or "owner_token" in message, message
        message = client.predict(config_json=json.dumps(TINY), owner_token=sweeper, n=2, minutes=5,
                                 api_name="/start_sweep")
        assert message.startswith("Sweep ") and "started" in message, message
        assert "already running" in client.predict(config_json=json.dumps(TINY), owner_token=other, n=2,
                                                   minutes=5, api_name="/start_sweep")
        assert "Not yours to stop" in client.predict(owner_token=other, api_name="/stop_sweep")
        deadline = time.monotonic() + 400
        status = ""
        while time.monotonic() < deadline and "done" not in status:
            status, table, plot, runs = client.predict(api_name="/poll_sweep")
            time.sleep(1)
        assert "done" in status, status
        rows = [dict(zip(table["headers"], row)) for row in table["data"]]
        assert [r["trial"] for r in rows] == [0, 1] and [r["best"] for r in rows].count("★") == 1
        run_ids = {r["run"] for r in rows}
        assert run_ids <= {row[0] for row in runs["data"]}  # every trial is a run in the runs table
        assert all(ctx.store.folder(rid).read_status()["sweep"] for rid in run_ids)
        # The scatter: one point per trial with a val accuracy (log10 lr on x).
        assert plot["columns"][:2] == ["log10_lr", "val_acc"] and len(plot["data"]) >= 1
