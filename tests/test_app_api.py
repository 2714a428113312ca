"""The app driven headless through its named API with gradio_client: load, train, poll, stop, predict."""

from __future__ import annotations

import json
import time

import pytest
from conftest import make_class_folder
from ftui_app_server import running_app

gradio_client = pytest.importorskip("gradio_client")

FINISHED = ("done", "stopped", "failed")
TINY = {"backbone": "mobilenet_v3_small", "weights": "none", "train_groups": "all", "recipe": "plain",
        "bn_mode": "train", "image_size": 32, "batch_size": 8, "epochs": 2, "feature_cache": False}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A live app whose --data-root holds one small class-folder dataset."""
    root = tmp_path_factory.mktemp("api")
    data_root = root / "data"
    make_class_folder(data_root / "colours", per_class=8, size=32)
    with running_app(root, data_root=data_root) as (url, ctx):
        yield url, ctx, data_root


def poll_until_finished(client, job_id: str, token: str, timeout: float = 120) -> dict:
    """Poll /poll once a second until the job is done, stopped or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot = client.predict(job=job_id, token=token, api_name="/poll")[0]
        if snapshot["status"] in FINISHED:
            return snapshot
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


@pytest.mark.slow  # trains through the API
def test_client_loads_data_trains_polls_and_predicts(app):
    url, _ctx, data_root = app
    client = gradio_client.Client(url, verbose=False)

    summary, table = client.predict(source_path="colours", val_fraction=0.25, api_name="/load_data")[:2]
    assert "3 classes" in summary
    assert sorted(row[0] for row in table["data"]) == ["blue", "green", "red"]

    job_id, error = client.predict(config=json.dumps(TINY), owner_token="client-a-0123456789abcdefghijk", api_name="/start_training")
    assert error == ""
    snapshot = poll_until_finished(client, job_id, "client-a-0123456789abcdefghijk")
    assert snapshot["status"] == "done", snapshot
    assert snapshot["run_id"]

    image = data_root / "colours" / "red" / "red_0.jpg"
    error, label = client.predict(run_id=snapshot["run_id"], files=[gradio_client.handle_file(str(image))], k=2,
                                  api_name="/predict")[:2]
    assert error == ""
    # The box comes as an update: its value (the calibrated top-k) and its title, which names the verdict when a
    # barely trained model answers "unsure" or "unknown" (issue 22) instead of one class.
    value = label["value"] if label.get("__type__") == "update" else label
    assert value["label"] in ("red", "green", "blue")
    assert len(value["confidences"]) == 2
    assert label.get("label") in (None, "Top predictions", "Top predictions (unsure)",
                                  "Closest classes (none fits: unknown)"), label
    # The predictions CSV is written inside the run's folder: the runs dir is all the app serves.
    saved = list((_ctx.settings.runs_dir / snapshot["run_id"] / "predictions").glob("predictions-*.csv"))
    assert len(saved) == 1 and "red_0.jpg" in saved[0].read_text()


def test_paths_outside_the_data_root_are_refused(app):
    url, _ctx, _data_root = app
    client = gradio_client.Client(url, verbose=False)
    result = client.predict(source_path="/etc", val_fraction=0.2, api_name="/load_data")
    assert "outside the folders this server allows" in result[-1]
    result = client.predict(source_path="../../..", val_fraction=0.2, api_name="/load_data")
    assert "outside the folders this server allows" in result[-1]


def test_second_client_cannot_stop_or_displace_the_first_clients_job(app):
    url, ctx, _data_root = app
    first, second = (gradio_client.Client(url, verbose=False) for _ in range(2))
    long_run = json.dumps({**TINY, "epochs": 200})
    job_a, _ = first.predict(config=long_run, owner_token="token-a-0123456789abcdefghijk", api_name="/start_training")
    job_b, _ = second.predict(config=json.dumps(TINY), owner_token="token-b-0123456789abcdefghijk", api_name="/start_training")
    assert job_a != job_b

    refusal = second.predict(job=job_a, owner_token="token-b-0123456789abcdefghijk", api_name="/stop")
    assert "Not yours to stop" in refusal
    queued = second.predict(job=job_b, token="token-b-0123456789abcdefghijk", api_name="/poll")[0]
    assert queued["status"] == "queued" and queued["queue_position"] == 1
    assert ctx.jobs.get(job_a).status in ("queued", "running")

    # Each owner stops their own job; the queued one never starts.
    assert second.predict(job=job_b, owner_token="token-b-0123456789abcdefghijk", api_name="/stop") == ""
    assert ctx.jobs.get(job_a).status == "running"
    assert first.predict(job=job_a, owner_token="token-a-0123456789abcdefghijk", api_name="/stop") == ""
    assert poll_until_finished(first, job_a, "token-a-0123456789abcdefghijk")["status"] == "stopped"
    assert poll_until_finished(second, job_b, "token-b-0123456789abcdefghijk")["status"] == "stopped"
    assert ctx.jobs.get(job_b).snapshot()["epoch"] == 0


def test_a_job_needs_an_owner_token_and_an_empty_token_stops_nothing(app):
    url, ctx, _data_root = app
    client = gradio_client.Client(url, verbose=False)
    job, message = client.predict(config=json.dumps(TINY), owner_token="", api_name="/start_training")
    assert "no owner token" in message and ctx.jobs.active() is None
    job, _ = client.predict(config=json.dumps({**TINY, "epochs": 200}), owner_token="token-c-0123456789abcdefghijk",
                            api_name="/start_training")
    assert "Not yours to stop" in client.predict(job=job, owner_token="", api_name="/stop")
    assert ctx.jobs.get(job).status in ("queued", "running")
    assert client.predict(job=job, owner_token="token-c-0123456789abcdefghijk", api_name="/stop") == ""
    assert poll_until_finished(client, job, "token-c-0123456789abcdefghijk")["status"] == "stopped"


@pytest.mark.slow  # trains through the API
def test_learning_rate_finder_suggests_a_rate_for_the_loaded_data(app):
    url, ctx, _data_root = app
    assert ctx.jobs.active() is None  # the finder refuses to compete with a training run
    client = gradio_client.Client(url, verbose=False)
    client.predict(source_path="colours", val_fraction=0.25, api_name="/load_data")
    message, curve, suggestion = client.predict(config=json.dumps(TINY), api_name="/find_lr")
    assert "Suggested learning rate" in message
    assert 1e-7 < suggestion < 10
    assert curve["columns"] == ["log10 lr", "loss"] and len(curve["data"]) >= 3
