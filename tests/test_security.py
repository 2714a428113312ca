"""One test per attack of issue 9, against a live app on localhost through gradio_client and plain HTTP.

Each test failed on the app before the fix (see /work/notes/issue-9.md for the attack list).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import pytest
from conftest import make_class_folder
from ftui_app_server import running_app

gradio_client = pytest.importorskip("gradio_client")

FINISHED = ("done", "stopped", "failed")
TINY = {"backbone": "mobilenet_v3_small", "weights": "none", "train_groups": "all", "recipe": "plain",
        "bn_mode": "train", "image_size": 32, "batch_size": 8, "epochs": 1, "feature_cache": False}
MAX_UPLOAD = 300 * 1024
WORK_QUOTA = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A live app with --data-root, a small --max-upload and --work-quota, and a secret outside the root."""
    root = tmp_path_factory.mktemp("sec")
    data_root = root / "data"
    make_class_folder(data_root / "colours", per_class=6, size=32)
    secret = root / "secret"
    secret.mkdir()
    (secret / "settings.json").write_text(json.dumps({"optimizer": "SECRET-VALUE-42"}))
    (secret / "passwords.txt").write_text("SECRET-VALUE-42\n")
    with running_app(root, data_root=data_root, max_upload_bytes=MAX_UPLOAD,
                     work_quota_bytes=WORK_QUOTA) as (url, ctx):
        yield url, ctx, data_root, secret


def client(url):
    return gradio_client.Client(url, verbose=False)


def start(c, config: dict | str, token: str) -> tuple[str, str]:
    text = config if isinstance(config, str) else json.dumps(config)
    return c.predict(config=text, owner_token=token, api_name="/start_training")


def wait(c, job: str, token: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = c.predict(job=job, token=token, api_name="/poll")[0]
        if snap["status"] in FINISHED:
            return snap
        time.sleep(0.3)
    raise AssertionError(f"job {job} did not finish")


def http_get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# --- 1. config text is never a path -------------------------------------------------------------------
def test_config_over_the_api_is_json_text_never_a_server_file(app):
    url, ctx, _root, secret = app
    c = client(url)
    for path in (secret / "settings.json", secret / "passwords.txt"):
        _job, message = start(c, str(path), "attacker-0123456789abcdefghijk")
        assert "SECRET" not in message and "JSON text" in message, message
        message = c.predict(config=str(path), api_name="/find_lr")[0]
        assert "SECRET" not in message and "JSON text" in message, message
    assert ctx.jobs.jobs() == [] or all(j.config.optimizer != "SECRET-VALUE-42" for j in ctx.jobs.jobs())


# --- 2. preview size and draws are bounded ------------------------------------------------------------
@pytest.mark.parametrize("field, value, fragment", [
    ("size", 20000, "size must be a whole number in [16, 1024]"),
    ("size", 0, "size must be a whole number in [16, 1024]"),
    ("seed_value", -5, "seed must be"),
])
def test_preview_inputs_are_bounded_with_a_message_naming_the_field(app, field, value, fragment):
    url, *_ = app
    arguments = {"image_index": "0", "n_draws": 4, "seed_value": 0, "size": 32, "fraction": 0.2, field: value}
    _gallery, error = client(url).predict(**arguments, api_name="/preview")
    assert fragment in error, error


def test_preview_draws_beyond_the_slider_are_refused(app):
    url, *_ = app
    with pytest.raises(Exception, match="greater than maximum value 16"):
        client(url).predict(image_index="0", n_draws=10_000, seed_value=0, size=32, fraction=0.2,
                            api_name="/preview")


# --- 3. the runs folder is not served; other clients see no paths ---------------------------------------
def test_run_folders_are_not_served_and_other_clients_see_no_server_paths(app):
    url, ctx, _root, _secret = app
    owner, other = client(url), client(url)
    owner.predict(source_path="colours", val_fraction=0.25, api_name="/load_data")
    job, error = start(owner, TINY, "owner-3-0123456789abcdefghijk")
    assert error == ""
    snap = wait(owner, job, "owner-3-0123456789abcdefghijk", timeout=300)
    assert snap["status"] == "done" and snap["run_dir"]
    run_dir = ctx.settings.runs_dir / snap["run_id"]
    for name in ("config.json", "status.json", "best.pt", "metrics.csv"):
        assert (run_dir / name).is_file()
        assert http_get(f"{url}gradio_api/file={run_dir / name}") == 403, name
    seen = other.predict(job=job, token="someone-else-0123456789abcdefghijk", api_name="/poll")[0]
    assert seen["run_dir"] is None and seen["notes"] == []
    assert str(ctx.settings.runs_dir) not in json.dumps(seen)
    # The download a client gets is its own copy, outside the runs folder.
    image = _root / "colours" / "red" / "red_0.jpg"
    result = owner.predict(run_id=snap["run_id"], files=[gradio_client.handle_file(str(image))], k=2,
                           api_name="/predict")
    assert result[0] == ""
    downloads = [result[4], result[5]]
    for path in downloads:
        assert path and str(ctx.settings.runs_dir) not in str(path)


# --- 4. one client's uploads are not loadable by another -------------------------------------------------
def small_zip(tmp_path) -> str:
    folder = make_class_folder(tmp_path / "zipped", per_class=4, size=24)
    target = tmp_path / "mine.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*.jpg")):
            archive.write(path, path.relative_to(folder).as_posix())
    return str(target)


def test_an_upload_is_loadable_only_by_the_session_that_uploaded_it(app, tmp_path):
    url, ctx, _root, _secret = app
    owner, other = client(url), client(url)
    outputs = owner.predict(files=[gradio_client.handle_file(small_zip(tmp_path))], val_fraction=0.25,
                            api_name="/upload_data")
    assert outputs[-1] == "" and "3 classes" in outputs[0]
    uploads = [p for p in (ctx.uploads_dir / "unzipped").iterdir() if not p.name.startswith(".")]
    assert uploads
    for path in uploads + [p for p in ctx.uploads_dir.iterdir() if p.name != "unzipped"]:
        refused = other.predict(source_path=str(path), val_fraction=0.2, api_name="/load_data")[-1]
        assert "outside the folders this server allows" in refused, refused
    # Weights another session uploaded (their path in Gradio's upload folder) are refused too.
    from gradio.utils import get_upload_folder

    foreign = os.path.join(get_upload_folder(), "0" * 64, "weights.pth")
    os.makedirs(os.path.dirname(foreign), exist_ok=True)
    with open(foreign, "wb") as handle:
        handle.write(b"not really weights")
    _job, message = start(other, {**TINY, "weights": foreign}, "other-4-0123456789abcdefghijk")
    assert "a file this session uploaded" in message, message


# --- 5. wrong types and out-of-range values are named ---------------------------------------------------
@pytest.mark.parametrize("change, fragment", [
    ({"lr": "abc"}, "lr must be a finite number"),
    ({"epochs": 1.5}, "epochs must be a whole number in [1, 10000]"),
    ({"batch_size": "NaN"}, "batch_size must be a whole number"),
    ({"seed": 2**70}, "seed must be in [0, 4294967295]"),
    ({"aug": "x"}, "aug must be an object of augmentation settings"),
    ({"num_workers": 1000}, "num_workers must be in [0, 256]"),  # up to 256 loads; the run clamps to the cores
    ({"epochs": 10**6}, "epochs must be in [1, 10000]"),
    ({"image_size": 5000}, "image_size must be in [16, 1024]"),
])
def test_wrong_types_and_ranges_are_refused_naming_the_field(app, change, fragment):
    url, _ctx, *_ = app
    text = json.dumps({**TINY, **change}).replace('"NaN"', "NaN")
    _job, message = start(client(url), text, "types-0123456789abcdefghijk")
    assert fragment in message, message


def test_an_owner_gets_one_running_and_one_waiting_job_at_most(app):
    url, _ctx, *_ = app
    c = client(url)
    long_run = {**TINY, "epochs": 500}
    jobs = []
    try:
        for _ in range(2):
            job, error = start(c, long_run, "greedy-0123456789abcdefghijk")
            assert error == ""
            jobs.append(job)
        job, error = start(c, long_run, "greedy-0123456789abcdefghijk")
        assert "at most one running and one waiting per owner" in error, error
    finally:
        for job in jobs:
            c.predict(job=job, owner_token="greedy-0123456789abcdefghijk", api_name="/stop")
        for job in jobs:
            wait(c, job, "greedy-0123456789abcdefghijk")


# --- 6. links under --data-root ---------------------------------------------------------------------------
def test_a_link_under_the_data_root_is_not_followed_out_of_it(app):
    url, _ctx, data_root, secret = app
    linked = data_root / "linked"
    if not linked.exists():
        make_class_folder(linked, per_class=4, size=24, classes=["red", "green"])
        (linked / "outside").symlink_to(secret)
        (linked / "red" / "leak.jpg").symlink_to(secret / "passwords.txt")
    outputs = client(url).predict(source_path="linked", val_fraction=0.25, api_name="/load_data")
    assert outputs[-1] == "" and "2 classes" in outputs[0], outputs
    text = json.dumps(outputs[-2])
    assert "passwords" not in text and "settings.json" not in text
    assert "link to outside the allowed folder" in text
    refused = client(url).predict(source_path="linked/outside", val_fraction=0.2, api_name="/load_data")[-1]
    assert "outside the folders" in refused


# --- 7. uploads: size limit, zip bombs, quota, no leftovers -----------------------------------------------
def test_an_upload_over_max_upload_is_refused(app, tmp_path):
    url, _ctx, *_ = app
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(MAX_UPLOAD + 1024))
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client(url).predict(files=[gradio_client.handle_file(str(big))], val_fraction=0.2, api_name="/upload_data")


def bomb(tmp_path, size: int) -> str:
    """A zip of one image folder plus a huge run of zeros: a few KB that unpack to `size` bytes."""
    folder = make_class_folder(tmp_path / "b", per_class=2, size=16, classes=["red", "green"])
    target = tmp_path / "bomb.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*.jpg")):
            archive.write(path, path.relative_to(folder).as_posix())
        with archive.open("red/zeros.jpg", "w", force_zip64=True) as handle:
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                handle.write(chunk)
    return str(target)


def test_a_zip_bomb_upload_stops_at_the_work_quota_and_leaves_nothing(app, tmp_path):
    url, ctx, *_ = app
    path = bomb(tmp_path, 40 << 20)
    assert os.path.getsize(path) < MAX_UPLOAD
    before = sorted(p.name for p in ctx.uploads_dir.iterdir()) if ctx.uploads_dir.is_dir() else []
    message = client(url).predict(files=[gradio_client.handle_file(path)], val_fraction=0.2,
                                  api_name="/upload_data")[-1]
    assert "more than the limit" in message, message
    after = sorted(p.name for p in ctx.uploads_dir.iterdir())
    assert set(after) - set(before) <= {"unzipped"}
    assert [p for p in (ctx.uploads_dir / "unzipped").iterdir() if p.name.startswith(".")] == []


def test_a_zip_bomb_is_refused_far_below_the_total_cap(tmp_path):
    from ftui.data.datasets import DatasetError, safe_extract_zip

    path = bomb(tmp_path, 96 << 20)  # ~100 KB in, 96 MB out: well under the 4 GiB cap, far over 100x
    with pytest.raises(DatasetError, match="more than the limit"):
        safe_extract_zip(path, tmp_path / "out")
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written <= 65 << 20


def test_zip_extraction_counts_the_bytes_written_not_the_declared_sizes(tmp_path):
    """A zip whose headers understate an entry's size gets no more bytes out than it declared."""
    from ftui.data.datasets import safe_extract_zip

    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("red/a.jpg", b"x")
        archive.writestr("red/zeros.jpg", bytes(32 << 20))
    raw = bytearray(path.read_bytes())
    name = b"red/zeros.jpg"
    for signature, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := raw.find(signature, start)) != -1:
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if raw[name_at:name_at + len(name)] == name:
                raw[start + size_at:start + size_at + 4] = (1000).to_bytes(4, "little")
            start += 4
    path.write_bytes(bytes(raw))
    skipped = []
    safe_extract_zip(path, tmp_path / "out", max_bytes=10_000, skipped=skipped)
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written <= 10_000
    assert [s.reason for s in skipped] == ["damaged zip entry, not extracted"]


# --- 11. login throttling -----------------------------------------------------------------------------------
def test_failed_logins_from_one_address_are_throttled(tmp_path):
    with running_app(tmp_path, auth=("admin", "right-password")) as (url, _ctx):
        codes = []
        for attempt in range(12):
            data = urllib.parse.urlencode({"username": "admin", "password": f"wrong-{attempt}"}).encode()
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{url}login", data=data), timeout=10) as r:
                    codes.append(r.status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
        assert codes[:10] == [400] * 10 and codes[10:] == [429, 429], codes
        data = urllib.parse.urlencode({"username": "admin", "password": "right-password"}).encode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"{url}login", data=data), timeout=10)
        assert refused.value.code == 429


# --- 9. weights reports list every mismatch -------------------------------------------------------------------
def test_the_weights_report_lists_every_mismatched_and_unexpected_tensor():
    import torch
    import torchvision

    from ftui.models.weights import load_state

    model = torchvision.models.resnet18()
    state = model.state_dict()
    wrong = [k for k in state if k.endswith("conv1.weight")]
    assert len(wrong) >= 7
    for key in wrong:
        state[key] = torch.zeros(1, 1, 1, 1)
    extra = {f"extra.{i}": torch.zeros(1) for i in range(8)}
    report = load_state(model, "resnet18", {**state, **extra}, "file.pth")
    for key in wrong:
        assert f"{key}: file (1, 1, 1, 1)" in report.message
    for key in extra:
        assert key in report.message
    assert "more)" not in report.message
