"""The second red team's findings (issue 20) against a live app on localhost: one test per finding, each of
which failed on the app before its fix. Concurrency is in test_concurrency.py, a full disk in test_disk_full.py."""

from __future__ import annotations

import pytest
from ftui_app_server import running_app
from run_fixtures import make_quick_run

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A live app with --data-root and one finished run in its runs folder."""
    root = tmp_path_factory.mktemp("red2")
    run = make_quick_run(root, backbone="mobilenet_v3_small")
    with running_app(root, data_root=root / "colours") as (url, ctx):
        yield url, ctx, run


def client(url):
    return gradio_client.Client(url, verbose=False)


# --- 12. run ids: long or non-ASCII ones get a message, not "internal error" -------------------------------
@pytest.mark.parametrize("run_id", ["r" * 5000, "ранок-1", "run\u202e1"], ids=["5000-chars", "cyrillic", "bidi"])
def test_an_unusable_run_id_is_named_on_every_endpoint_that_takes_one(app, run_id):
    url, _ctx, run = app
    c = client(url)
    image = gradio_client.handle_file(str(run.parent.parent / "colours" / "red" / "red_0.jpg"))
    answers = {
        "evaluate": c.predict(run_id, "val", api_name="/evaluate")[0],
        "predict": c.predict(run_id=run_id, files=[image], k=2, api_name="/predict")[0],
        "predict_image": c.predict(run_id=run_id, image=image, k=2, api_name="/predict_image")[0],
        "compare_runs": c.predict(run_id, run.name, api_name="/compare_runs")[0],
        "resume_training": c.predict(run_id=run_id, owner_token="x" * 32, api_name="/resume_training")[1],
        "export_pt2": c.predict(run_id=run_id, api_name="/export_pt2")[0],
    }
    for endpoint, message in answers.items():
        assert "is not a run id" in message and "internal error" not in message, (endpoint, message)
        assert len(message) < 400, (endpoint, len(message))
