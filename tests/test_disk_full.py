"""A full disk while ftui writes a file (issue 20, finding 1): a user error naming the file, nothing partial at
the final path, and the app serving on.

The disk is "full" through a file-size limit (RLIMIT_FSIZE) on a real subprocess: writes past the limit fail
with EFBIG exactly where ENOSPC would, without root or a mount. Python ignores SIGXFSZ, so the write fails
instead of killing the process; whatever then kills it (a C++ abort) is what these tests catch.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from ftui_app_server import start_app_process
from run_fixtures import make_quick_run

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 512 * 1024  # far below a mobilenet_v3_small export (~6 MB), above config/status/log files


def file_size_limit() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".part")))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_cli_export_on_a_full_disk_exits_2_naming_the_file_and_leaves_no_partial_file(tmp_path, fmt):
    run = make_quick_run(tmp_path, backbone="mobilenet_v3_small")
    out = run / "export" / f"{run.name}.{fmt}"
    proc = subprocess.run([sys.executable, "-m", "ftui", "export", str(run), "--format", fmt], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, preexec_fn=file_size_limit, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert f"disk full while writing {out}" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()
    assert leftovers(run) == []


@pytest.mark.slow
def test_app_export_on_a_full_disk_answers_disk_full_and_keeps_serving(tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    run = make_quick_run(tmp_path, backbone="mobilenet_v3_small")
    url, proc = start_app_process(tmp_path, "--data-root", str(tmp_path / "colours"), preexec_fn=file_size_limit)
    try:
        client = gradio_client.Client(url, verbose=False)
        for fmt in ("pt2", "pt2", "onnx"):  # twice: a second try finds no half-written file in the way
            note, download = client.predict(run_id=run.name, api_name=f"/export_{fmt}")
            assert proc.poll() is None, "the app died"
            assert f"disk full while writing {run.name}.{fmt}" in note, note
            assert str(tmp_path) not in note  # the client is not told server paths
            assert download in (None, {"__type__": "update"})  # no file handed out
            assert not (run / "export" / f"{run.name}.{fmt}").exists()
        assert leftovers(tmp_path / "runs") == []
        # The app keeps serving: a prediction on the same run works.
        image = tmp_path / "colours" / "red" / "red_0.jpg"
        error, label, *_ = client.predict(run_id=run.name, image=gradio_client.handle_file(str(image)), k=2,
                                          api_name="/predict_image")
        assert error == "" and label.get("value", label)["label"] in ("red", "green", "blue")
    finally:
        proc.kill()
        proc.wait(30)


def test_every_atomic_write_turns_a_full_disk_into_a_message_and_leaves_no_temp_file(tmp_path):
    """write_bytes_atomic / write_text_atomic / append_line_atomic under a real EFBIG (in a child process)."""
    code = f"""
import resource, sys
from pathlib import Path
from ftui.runs import DiskFullError, write_bytes_atomic, write_text_atomic, append_line_atomic
resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT}, {LIMIT}))
folder = Path(sys.argv[1])
(folder / "journal.jsonl").write_text("line 1\\n")
for name, call in [("big.bin", lambda p: write_bytes_atomic(p, bytes({2 * LIMIT}))),
                   ("card.html", lambda p: write_text_atomic(p, "x" * {2 * LIMIT})),
                   ("journal.jsonl", lambda p: append_line_atomic(p, "y" * {2 * LIMIT}))]:
    try:
        call(folder / name)
    except DiskFullError as exc:
        print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in ("big.bin", "card.html", "journal.jsonl"):
        assert f"disk full while writing {tmp_path / name}" in proc.stdout, proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.jsonl"]
    assert (tmp_path / "journal.jsonl").read_text() == "line 1\n"  # the old content, whole
