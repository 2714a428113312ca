"""Crash safety (issue 9): signals on `ftui train`, kill -9 of the app and a restart, a full disk, bad weights.

These run real processes (the CLI, `python app.py`) and send them real signals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_class_folder
from ftui_app_server import start_app_process

ROOT = Path(__file__).resolve().parents[1]
LONG = ["--backbone", "mobilenet_v3_small", "--weights", "none", "--train-groups", "all", "--recipe", "plain",
        "--image-size", "32", "--batch-size", "4", "--epochs", "300"]


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ftui", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(predicate, timeout: float = 180, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def metrics_rows(run: Path) -> int:
    path = run / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]],
                         ids=["sigterm", "double-ctrl-c"])
def test_sigterm_and_a_second_ctrl_c_stop_ftui_train_as_cleanly_as_one_ctrl_c(tmp_path, signals):
    data = make_class_folder(tmp_path / "data", per_class=6, size=24)
    run = tmp_path / "run"
    proc = cli("train", data, *LONG, "--out", run)
    try:
        wait_for(lambda: metrics_rows(run) >= 1, what="the first epoch")
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.05)
        _out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "terminate called" not in err and "Traceback" not in err, err
    assert status(run)["status"] == "stopped"
    assert not list(run.glob(".*.tmp"))
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert checkpoint["classes"] == ["blue", "green", "red"]


def write_weights(tmp_path: Path) -> dict[str, Path]:
    """A foreign architecture, random bytes, a pickle that runs code, and one wrong-shape tensor."""
    import torchvision

    files = {}
    files["foreign"] = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), files["foreign"])
    files["garbage"] = tmp_path / "garbage.pth"
    files["garbage"].write_bytes(os.urandom(4096))
    files["pickle"] = tmp_path / "evil.pth"
    files["pickle"].write_bytes(
        b"\x80\x04\x95&\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x0etouch /tmp/pwn"
        b"\x94\x85\x94R\x94.")
    state = torchvision.models.mobilenet_v3_small().state_dict()
    state["features.0.0.weight"] = torch.zeros(16, 3, 5, 5)
    state["features.1.block.0.0.weight"] = torch.zeros(16, 1, 5, 5)
    files["mismatch"] = tmp_path / "mismatch.pth"
    torch.save(state, files["mismatch"])
    return files


@pytest.mark.slow
def test_unusable_weights_exit_2_every_time_and_mismatches_are_all_listed(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=4, size=24)
    files = write_weights(tmp_path)
    short = ["--backbone", "mobilenet_v3_small", "--epochs", "1", "--image-size", "32", "--runs-dir",
             tmp_path / "runs"]
    for name in ("foreign", "garbage", "pickle"):
        for _ in range(3):  # the abort (exit 134) came and went from run to run
            proc = cli("train", data, "--weights", files[name], *short)
            _out, err = proc.communicate(timeout=300)
            assert proc.returncode == 2, (name, proc.returncode, err)
            assert "error: " in err and "terminate called" not in err and "Traceback" not in err, err
    proc = cli("train", data, "--weights", files["mismatch"], *short)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "features.0.0.weight: file (16, 3, 5, 5)" in out, out
    assert "features.1.block.0.0.weight: file (16, 1, 5, 5)" in out, out


@pytest.mark.slow
def test_kill_9_of_the_app_mid_run_then_a_restart_shows_the_run_as_interrupted(tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    data_root = tmp_path / "data"
    make_class_folder(data_root / "colours", per_class=6, size=24)
    url, proc = start_app_process(tmp_path, "--data-root", str(data_root))
    try:
        client = gradio_client.Client(url, verbose=False)
        client.predict(source_path="colours", val_fraction=0.25, api_name="/load_data")
        config = {"backbone": "mobilenet_v3_small", "weights": "none", "train_groups": "all", "recipe": "plain",
                  "bn_mode": "train", "image_size": 32, "batch_size": 4, "epochs": 300, "feature_cache": False}
        job, error = client.predict(config=json.dumps(config), owner_token="victim-0123456789abcdefghijk", api_name="/start_training")
        assert error == ""
        runs = tmp_path / "runs"
        wait_for(lambda: any(metrics_rows(r) >= 1 and (r / "last.pt").is_file() for r in runs.iterdir()),
                 what="an epoch with last.pt")
        run = next(r for r in runs.iterdir() if (r / "last.pt").is_file())
        assert status(run)["status"] == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    # What a kill during a checkpoint write leaves: a temp file next to last.pt.
    (run / ".last.pt.k9x.tmp").write_bytes(b"\0" * 1024)
    url, proc = start_app_process(tmp_path, "--data-root", str(data_root))
    try:
        after = status(run)
        assert after["status"] == "interrupted", after
        assert "resume" in after["message"]
        assert not list(run.glob(".*.tmp"))
        # It is listed as interrupted in the runs table, and its checkpoint still loads.
        from ftui.runs import RunStore, load_checkpoint

        table = RunStore(runs).list_runs()
        assert table.loc[table["id"] == run.name, "status"].tolist() == ["interrupted"]
        assert load_checkpoint(run / "last.pt")["classes"] == ["blue", "green", "red"]
        # Only the client that started it may resume it; it then carries on, appending to metrics.csv.
        client = gradio_client.Client(url, verbose=False)
        job, refused = client.predict(run_id=run.name, owner_token="someone-else-0123456789abcdefghijk", api_name="/resume_training")
        assert "only the browser (or API client token) that started this run" in refused
        done_before = load_checkpoint(run / "last.pt")["resume"]["epoch"]
        job, error = client.predict(run_id=run.name, owner_token="victim-0123456789abcdefghijk", api_name="/resume_training")
        assert error == "", error
        wait_for(lambda: metrics_rows(run) >= done_before + 1 and
                 client.predict(job=job, token="victim-0123456789abcdefghijk", api_name="/poll")[0]["epoch"] > done_before + 1,
                 what="an epoch after the resume")
        assert client.predict(job=job, owner_token="victim-0123456789abcdefghijk", api_name="/stop") == ""
        wait_for(lambda: status(run)["status"] == "stopped", what="the resumed run to stop")
        epochs = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > done_before
    finally:
        proc.kill()
        proc.wait(30)


def small_disk(folder: Path, size_bytes: int):
    """Mount a tmpfs of `size_bytes` on `folder` (root only): (preexec_fn, unmount). Without root, the
    fallback is a file-size limit (RLIMIT_FSIZE) on the app process, which fails writes the same way."""
    import resource

    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)],
                                 capture_output=True, check=False)
        if mounted.returncode == 0:
            return None, lambda: subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size_bytes, size_bytes))
    return limit, lambda: None


@pytest.mark.slow
def test_a_full_disk_names_the_file_keeps_the_epochs_metrics_and_the_app_serving(tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    data_root = tmp_path / "data"
    make_class_folder(data_root / "colours", per_class=6, size=24)
    # Room for config, status and metrics, not for a 6 MB mobilenet_v3_small checkpoint.
    preexec, unmount = small_disk(tmp_path / "runs", 1024 * 1024)
    try:
        url, proc = start_app_process(tmp_path, "--data-root", str(data_root), preexec_fn=preexec)
        try:
            client = gradio_client.Client(url, verbose=False)
            client.predict(source_path="colours", val_fraction=0.25, api_name="/load_data")
            config = {"backbone": "mobilenet_v3_small", "weights": "none", "train_groups": "all",
                      "recipe": "plain", "bn_mode": "train", "image_size": 32, "batch_size": 8, "epochs": 2,
                      "feature_cache": False}
            job, error = client.predict(config=json.dumps(config), owner_token="me-0123456789abcdefghijk", api_name="/start_training")
            assert error == ""
            deadline = time.monotonic() + 180
            while (snap := client.predict(job=job, token="me-0123456789abcdefghijk", api_name="/poll")[0])["status"] not in (
                    "done", "stopped", "failed") and time.monotonic() < deadline:
                time.sleep(0.5)
            assert snap["status"] == "failed", snap
            assert "disk full while writing" in snap["error"] and "best.pt" in snap["error"], snap["error"]
            run = tmp_path / "runs" / snap["run_id"]
            assert metrics_rows(run) == 1  # the epoch's row was written before its checkpoints
            assert not list(run.glob(".*.tmp"))
            # The app keeps serving.
            outputs = client.predict(source_path="colours", val_fraction=0.25, api_name="/load_data")
            assert outputs[-1] == "" and "3 classes" in outputs[0]
        finally:
            proc.kill()
            proc.wait(30)
    finally:
        unmount()
