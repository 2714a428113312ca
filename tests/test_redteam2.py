"""The second red team's findings (issue 20) against a live app on localhost: one test per finding, each of
which failed on the app before its fix. Concurrency is in test_concurrency.py, a full disk in test_disk_full.py."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

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
@pytest.mark.parametrize("run_id", ["r" * 5000, "ранок-1"], ids=["5000-chars", "cyrillic"])
def test_an_unusable_run_id_is_named_on_every_endpoint_that_takes_one(app, run_id):
    url, _ctx, run = app
    c = client(url)
    image = gradio_client.handle_file(str(run.parent.parent / "colours" / "red" / "red_0.jpg"))
    answers = {
        "evaluate": c.predict(run_id, "val", api_name="/evaluate")[0],
        "predict": c.predict(run_id=run_id, files=[image], k=2, api_name="/predict")[0],
        "predict_image": c.predict(run_id=run_id, image=image, k=2, api_name="/predict_image")[0],
        "compare_runs": c.predict(run_id, run.name, api_name="/compare_runs")[0],
        "resume_training": c.predict(run_id=run_id, owner_token=secrets.token_urlsafe(16), api_name="/resume_training")[1],
        "export_pt2": c.predict(run_id=run_id, api_name="/export_pt2")[0],
    }
    for endpoint, message in answers.items():
        assert "is not a run id" in message and "internal error" not in message, (endpoint, message)
        assert len(message) < 400, (endpoint, len(message))


# --- 10 and 12. every transform value read from a run is range-checked ---------------------------------------
@pytest.mark.parametrize("field, value, fragment", [
    ("image_size", 100_000, "image_size 100000"),
    ("resize_size", 10**9, "resize_size 1000000000"),
    ("std", [0.0, 0.0, 0.0], "std"),
    ("mean", [float("nan")] * 3, "mean"),
    ("image_size", "224", "image_size 224"),
])
def test_a_checkpoint_with_an_out_of_range_transform_is_refused_before_anything_is_allocated(
        tmp_path, field, value, fragment):
    import subprocess
    import sys

    import torch

    from ftui.results.loading import load_run
    from ftui.runs import RunError

    run = make_quick_run(tmp_path, backbone="mobilenet_v3_small")
    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt[field] = value
    torch.save(ckpt, run / "best.pt")  # what an edited or damaged file holds
    with pytest.raises(RunError, match=f"best.pt holds an unusable {fragment}"):
        load_run(run)
    proc = subprocess.run([sys.executable, "-m", "ftui", "export", str(run), "--format", "pt2"], check=False,
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2 and "holds an unusable" in proc.stderr, proc.stderr[-1000:]
    assert not (run / "export" / f"{run.name}.pt2").exists()


# --- 4. owner tokens: issued by the server, short ones refused ---------------------------------------------
TINY = {"backbone": "mobilenet_v3_small", "weights": "none", "train_groups": "all", "recipe": "plain",
        "bn_mode": "train", "image_size": 32, "batch_size": 8, "epochs": 1, "feature_cache": False}


@pytest.mark.parametrize("guess", ["me", "victim", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "0123456789abcdef"])
def test_a_guessable_owner_token_is_refused_and_the_server_issues_128_bit_ones(app, guess):
    url, ctx, _run = app
    c = client(url)
    _job, message = c.predict(config=json.dumps(TINY), owner_token=guess, api_name="/start_training")
    assert "too short to be secret" in message and "/new_token" in message, message
    issued = {c.predict(api_name="/new_token") for _ in range(3)}
    assert len(issued) == 3 and all(len(t) >= 22 for t in issued)
    resumed = c.predict(run_id=_run.name, owner_token=guess, api_name="/resume_training")[1]
    assert "too short to be secret" in resumed, resumed
    assert all(owner != guess for owner in ctx.owners.values())


# --- 7. the login throttle counts the TCP peer; a forged X-Forwarded-For does not dodge it --------------------
def test_a_new_x_forwarded_for_per_request_does_not_reset_the_login_throttle(tmp_path):
    import urllib.error
    import urllib.parse
    import urllib.request

    with running_app(tmp_path, auth=("admin", "right-password")) as (url, _ctx):
        codes = []
        for attempt in range(12):
            data = urllib.parse.urlencode({"username": "admin", "password": f"wrong-{attempt}"}).encode()
            request = urllib.request.Request(f"{url}login", data=data,
                                             headers={"X-Forwarded-For": f"203.0.113.{attempt + 1}"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    codes.append(response.status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
        assert codes[:10] == [400] * 10 and codes[10:] == [429, 429], codes


# --- 8. a zip that extracts but is refused leaves nothing behind ---------------------------------------------
def test_a_refused_zip_upload_leaves_no_extraction_counting_against_the_quota(app, tmp_path):
    import zipfile

    from conftest import make_class_folder

    url, ctx, _run = app
    folder = make_class_folder(tmp_path / "one", per_class=4, size=24, classes=["red"])
    target = tmp_path / "one-class.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*.jpg")):
            archive.write(path, path.relative_to(folder).as_posix())
        archive.writestr("red/padding.bin", bytes(2 << 20))
    unzipped = ctx.uploads_dir / "unzipped"
    before = sorted(unzipped.iterdir()) if unzipped.is_dir() else []
    message = client(url).predict(files=[gradio_client.handle_file(str(target))], val_fraction=0.25,
                                  api_name="/upload_data")[-1]
    assert message.startswith("**Could not load the data:**"), message
    after = sorted(unzipped.iterdir()) if unzipped.is_dir() else []
    assert after == before
