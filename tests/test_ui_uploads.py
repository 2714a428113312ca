"""Rebuilding uploads on the server: relative paths are kept, nothing can escape the upload folder."""

from __future__ import annotations

import json

import pytest
from conftest import make_class_folder

from ftui.data.datasets import load_dataset
from ftui.ui.paths import PathNotAllowedError, resolve_under
from ftui.ui.uploads import (
    UploadError,
    dataset_source,
    materialize_files,
    materialize_tree,
    parse_manifest,
    safe_parts,
)


def manifest_for(folder, upload_root):
    """What the browser's folder picker sends: (webkitRelativePath, uploaded temp file) pairs."""
    pairs = []
    for i, path in enumerate(sorted(p for p in folder.rglob("*") if p.is_file())):
        temp = upload_root / f"{i:04d}" / path.name  # Gradio keeps only base names in its cache
        temp.parent.mkdir(parents=True)
        temp.write_bytes(path.read_bytes())
        pairs.append([f"{folder.name}/{path.relative_to(folder).as_posix()}", str(temp)])
    return json.dumps({"files": pairs})


def test_folder_upload_rebuilds_class_folders_that_load_as_a_dataset(tmp_path):
    picked = make_class_folder(tmp_path / "photos", per_class=3, size=24)
    uploads = tmp_path / "gradio"
    pairs = parse_manifest(manifest_for(picked, uploads))
    root, failed = materialize_tree(pairs, tmp_path / "dest", uploads)
    assert failed == []
    assert root == tmp_path / "dest" / "photos"
    assert load_dataset(dataset_source(root)).classes == ["blue", "green", "red"]


@pytest.mark.parametrize("relative", ["../evil.jpg", "a/../../evil.jpg", "/etc/passwd", "C:/x.jpg", "", "a/\x00b"])
def test_relative_paths_that_could_escape_are_refused(relative):
    with pytest.raises(UploadError):
        safe_parts(relative)


def test_server_files_outside_the_upload_folder_are_not_copied(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    uploads = tmp_path / "gradio"
    uploads.mkdir()
    with pytest.raises(UploadError, match="none of the uploaded files"):
        materialize_tree([("photos/red/x.jpg", str(secret))], tmp_path / "dest", uploads)
    assert not (tmp_path / "dest" / "photos").exists()


def test_malformed_manifest_gets_a_clear_error():
    with pytest.raises(UploadError, match="malformed"):
        parse_manifest("{not json")
    with pytest.raises(UploadError, match="empty"):
        parse_manifest(json.dumps({"files": []}))


def test_csv_upload_places_images_where_the_csv_names_them(tmp_path):
    images = make_class_folder(tmp_path / "flat", per_class=3, size=24)
    rows = ["path,label"] + [f"imgs/{p.name},{p.parent.name}" for p in sorted(images.rglob("*.jpg"))]
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    source = materialize_files([str(csv_file), *map(str, images.rglob("*.jpg"))], tmp_path / "dest")
    assert len(load_dataset(source).items) == 9


def test_server_paths_must_resolve_inside_the_data_root(tmp_path):
    root = make_class_folder(tmp_path / "root" / "colours", per_class=2, size=24).parent
    assert resolve_under("colours", [root]) == (root / "colours").resolve()
    (root / "escape").symlink_to(tmp_path)
    for bad in ("/etc", "../", "escape"):
        with pytest.raises(PathNotAllowedError, match="outside"):
            resolve_under(bad, [root])
    with pytest.raises(PathNotAllowedError, match="switched off"):
        resolve_under("colours", [])
