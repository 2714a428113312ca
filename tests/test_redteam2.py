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


# --- 3. a fix from the app never edits the operator's --data-root folder ---------------------------------------
def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _classes(answer: list) -> str:
    """The Data step's status line ("Dataset ready: N classes") from a load or fix answer."""
    return next(str(a) for a in answer if isinstance(a, str) and "Dataset ready" in a).split("\n")[0]


def _merge(user, source: str, target: str) -> list:
    """The fix panel's "Merge classes", as the page does it: the class boxes get their choices when focused,
    then the button (it has no API name) fires with the picked classes."""
    for box in ("merge-from", "merge-into"):
        user.call(f"ftui-doctor-fix-{box}.focus", [None, 0.2])
    return user.call("ftui-doctor-fix-merge.click", [None, source, target, 0.2, None])


def test_a_merge_from_the_app_on_a_data_root_dataset_goes_to_a_copy_of_that_session_only(app):
    from ftui.bench.gradio_http import GradioHTTP

    url, ctx, _run = app
    data = ctx.settings.data_root
    before = _files(data)
    mine, theirs = GradioHTTP(url), GradioHTTP(url)
    try:
        assert "3 classes" in _classes(mine.call("load_data", [str(data), 0.2, "auto"]))
        answer = _merge(mine, "blue", "green")
        assert "merge: 6 files moved" in answer[0] and "2 classes" in _classes(answer), answer[0]
        assert _files(data) == before  # the operator's folder: byte for byte as it was, no journal in it
        assert "2 classes" in _classes(mine.call("load_data", [str(data), 0.2, "auto"]))  # my later loads: my copy
        assert "3 classes" in _classes(theirs.call("load_data", [str(data), 0.2, "auto"]))  # another session: original
        answer = theirs.call("ftui-doctor-fix-undo.click", [None, None, None, 0.2, None])
        assert "nothing to undo" in answer[0]  # my journal is not theirs
        answer = mine.call("ftui-doctor-fix-undo.click", [None, None, None, 0.2, None])
        assert "undo: 6 files moved" in answer[0] and "3 classes" in _classes(answer), answer[0]
        assert _files(data) == before
    finally:
        mine.close()
        theirs.close()


def test_a_copy_for_fixes_counts_against_the_work_quota_and_the_operator_flag_edits_in_place(app):
    from ftui.bench.gradio_http import GradioHTTP

    url, ctx, _run = app
    data = ctx.settings.data_root
    before = _files(data)
    user = GradioHTTP(url)
    quota = ctx.settings.work_quota_bytes
    try:
        user.call("load_data", [str(data), 0.2, "auto"])
        ctx.settings.work_quota_bytes = 1000  # less than the dataset: its copy may not be made
        answer = _merge(user, "blue", "green")
        assert "work quota (--work-quota)" in answer[0] and _files(data) == before, answer[0]
        ctx.settings.work_quota_bytes = quota
        ctx.settings.allow_data_root_edits = True  # what --allow-data-root-edits sets
        answer = _merge(user, "blue", "green")
        assert "merge: 6 files moved" in answer[0] and not (data / "blue").exists(), answer[0]
        assert "undo: 6 files moved" in user.call("ftui-doctor-fix-undo.click", [None, None, None, 0.2, None])[0]
    finally:
        ctx.settings.work_quota_bytes = quota
        ctx.settings.allow_data_root_edits = False
        user.close()
        (data / ".ftui-journal.jsonl").unlink(missing_ok=True)
    assert _files(data) == before


# --- 9. one client (many tokens, many sessions, one address) cannot fill the machine's queue --------------------
def _stop(c, jobs_tokens, ctx):
    for job, owner in jobs_tokens:
        c.predict(job=job, owner_token=owner, api_name="/stop")
    for job, _owner in jobs_tokens:
        assert ctx.jobs.get(job).wait(120)


def test_parallel_starts_from_one_address_are_capped_per_address(app):
    from concurrent.futures import ThreadPoolExecutor

    url, ctx, _run = app
    config = json.dumps({**TINY, "epochs": 2000})
    clients = [client(url) for _ in range(5)]  # five sessions, five server-issued tokens, one address
    for c in clients:
        c.predict(source_path=str(ctx.settings.data_root), val_fraction=0.2, api_name="/load_data")
    tokens = [c.predict(api_name="/new_token") for c in clients]
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda pair: pair[0].predict(config=config, owner_token=pair[1],
                                                             api_name="/start_training"), zip(clients, tokens)))
    started = [(job, owner) for (job, error), owner in zip(answers, tokens) if not error]
    try:
        refused = [error for _job, error in answers if error]
        assert len(started) == 3 and len(refused) == 2, answers
        assert all("3 per address, --max-jobs-per-address" in e for e in refused), refused
    finally:
        _stop(clients[0], started, ctx)


def test_one_session_with_several_tokens_is_capped_and_a_job_too_big_is_refused(app):
    url, ctx, _run = app
    c = client(url)
    c.predict(source_path=str(ctx.settings.data_root), val_fraction=0.2, api_name="/load_data")
    tokens = [c.predict(api_name="/new_token") for _ in range(3)]
    started = []
    try:
        for owner in tokens[:2]:
            job, error = c.predict(config=json.dumps({**TINY, "epochs": 2000}), owner_token=owner,
                                   api_name="/start_training")
            assert error == "", error
            started.append((job, owner))
        _job, error = c.predict(config=json.dumps({**TINY, "epochs": 2000}), owner_token=tokens[2],
                                api_name="/start_training")
        assert "2 per session, --max-jobs-per-session" in error, error
    finally:
        _stop(c, started, ctx)
    images = int(ctx.settings.max_job_images)
    try:
        ctx.settings.max_job_images = 1000  # what --max-job-images 1000 sets; the data has 15 training images
        _job, error = c.predict(config=json.dumps({**TINY, "epochs": 100}), owner_token=tokens[2],
                                api_name="/start_training")
    finally:
        ctx.settings.max_job_images = images
    assert "100 epochs x 15 training images = 1,500 image passes" in error, error
    assert "at most 1,000 per job (--max-job-images): use at most 66 epochs" in error, error


# --- 8. a refused zip's message names the upload, never the server's folders ---------------------------------
@pytest.mark.parametrize("entries", [{"notes/readme.txt": b"no images here"},  # no image files found in ...
                                     {"train/a/x.txt": b"x", "val/a/y.txt": b"y", "valid/a/z.txt": b"z"}],
                         ids=["no-images", "two-val-folders"])
def test_a_refused_zip_upload_names_the_upload_not_the_server_path(app, tmp_path, entries):
    import tempfile
    import zipfile

    url, ctx, _run = app
    target = tmp_path / "holiday-photos.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    message = client(url).predict(files=[gradio_client.handle_file(str(target))], val_fraction=0.25,
                                  api_name="/upload_data")[-1]
    assert message.startswith("**Could not load the data:**") and "holiday-photos.zip" in message, message
    for server in (str(ctx.settings.workdir), tempfile.gettempdir(), "unzipped", "uploads"):
        assert server not in message, message


# --- 12. /preview's augmentation settings: a message, no traceback per call ---------------------------------
@pytest.mark.parametrize("settings, fragment", [
    ("not json at all", "aug_settings is not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"nope": 1}', "unknown augmentation keys: nope"),
    ('{"hflip": "yes"}', "hflip"),
    ('{"crop_scale_min": 5}', "crop_scale_min"),
])
def test_preview_with_unusable_augmentation_settings_names_the_problem(app, caplog, settings, fragment):
    import logging

    url, _ctx, _run = app
    with caplog.at_level(logging.INFO, logger="ftui"):
        answer = client(url).predict(aug_settings=settings, image_index="0", n_draws=4, seed_value=0, size=64,
                                     fraction=0.2, api_name="/preview")
    message = answer[-1]
    assert message.startswith("**Cannot preview:**") and fragment in message, message
    assert "internal error" not in message
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged for a user's input"


# --- 12. a run whose best.pt is a link: a message, and nothing read through the link ---------------------------
def test_a_run_whose_checkpoint_is_a_link_is_refused_with_a_message(app, tmp_path):
    import shutil

    url, _ctx, run = app
    linked = run.parent / "linked-run"
    shutil.copytree(run, linked)
    elsewhere = tmp_path / "elsewhere.pt"
    shutil.move(linked / "best.pt", elsewhere)
    (linked / "best.pt").symlink_to(elsewhere)
    c = client(url)
    image = gradio_client.handle_file(str(run.parent.parent / "colours" / "red" / "red_0.jpg"))
    answers = {
        "export_pt2": c.predict(run_id="linked-run", api_name="/export_pt2")[0],
        "evaluate": c.predict("linked-run", "val", api_name="/evaluate")[0],
        "predict_image": c.predict(run_id="linked-run", image=image, k=2, api_name="/predict_image")[0],
    }
    for endpoint, message in answers.items():
        assert "best.pt in linked-run is a link" in message and "internal error" not in message, (endpoint, message)
