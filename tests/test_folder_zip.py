"""The folder picker's packed zip rebuilt on the server: one top folder becomes the root, nothing escapes."""

from __future__ import annotations

import json
import zipfile

import pytest

from ftui.ui.uploads import UploadError, materialize_zip, zip_manifest


def _zip(path, entries: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def test_zip_manifest_is_recognised_and_checked():
    assert zip_manifest(json.dumps({"zip": "/tmp/x/folder.zip", "count": 2})) == "/tmp/x/folder.zip"
    assert zip_manifest(json.dumps({"files": [["a/b.jpg", "/tmp/1"]]})) is None
    with pytest.raises(UploadError):
        zip_manifest(json.dumps({"zip": 5}))
    with pytest.raises(UploadError):
        zip_manifest("{not json")


def test_packed_folder_is_rebuilt_under_its_top_folder(tmp_path):
    uploads = tmp_path / "gradio"
    uploads.mkdir()
    packed = _zip(uploads / "folder.zip", {"photos/red/a.jpg": b"1", "photos/blue/b.jpg": b"22",
                                           "../../evil.txt": b"x"})
    root = materialize_zip(str(packed), tmp_path / "dest", uploads)
    assert root == tmp_path / "dest" / "photos"
    assert (root / "red" / "a.jpg").read_bytes() == b"1" and (root / "blue" / "b.jpg").read_bytes() == b"22"
    assert not (tmp_path / "evil.txt").exists() and not list(tmp_path.rglob("evil.txt"))


def test_a_zip_outside_the_upload_folder_is_refused(tmp_path):
    (tmp_path / "gradio").mkdir()
    elsewhere = _zip(tmp_path / "server-file.zip", {"a/b.jpg": b"1"})
    with pytest.raises(UploadError, match="did not arrive"):
        materialize_zip(str(elsewhere), tmp_path / "dest", tmp_path / "gradio")
