"""ftui.data.datasets: every accepted layout, the seeded stratified split, skipped files and clear errors."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASS_COLOURS, make_class_folder, write_class_image
from PIL import Image

from ftui.data import images
from ftui.data.datasets import Dataset, DatasetError, Item, load_dataset, safe_extract_zip, split_train_val


def _zip_folder(folder: Path, zip_path: Path, prefix: str = "") -> Path:
    """Zip every file under folder, names relative to it (optionally inside a wrapper folder)."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return zip_path


def _counts(ds: Dataset) -> dict[str, list[int]]:
    return {split: ds.class_counts(split) for split in ds.splits}


# --- layouts -------------------------------------------------------------------------------------------
def test_class_folders_are_split_into_train_and_val(class_folder):
    ds = load_dataset(class_folder, val_fraction=0.2, seed=0)
    assert ds.classes == sorted(CLASS_COLOURS)
    assert ds.split_was_generated
    assert _counts(ds) == {"train": [5, 5, 5], "val": [1, 1, 1]}
    assert ds.skipped == []
    assert all(Path(item.path).is_file() for item in ds.items)


def test_train_and_val_folders_are_used_as_given(split_folder):
    ds = load_dataset(split_folder)
    assert not ds.split_was_generated
    assert _counts(ds) == {"train": [8, 8, 8], "val": [3, 3, 3]}
    assert all("/val/" in item.path for item in ds.split("val"))


def test_train_val_test_folders_give_three_splits(tmp_path):
    root = tmp_path / "three"
    make_class_folder(root / "train", per_class=4)
    make_class_folder(root / "val", per_class=2)
    make_class_folder(root / "test", per_class=3)
    ds = load_dataset(root)
    assert ds.splits == ["train", "val", "test"]
    assert _counts(ds) == {"train": [4, 4, 4], "val": [2, 2, 2], "test": [3, 3, 3]}
    assert list(ds.summary().columns) == ["class", "train", "val", "test", "total"]


def test_train_folder_without_val_gets_a_generated_val_split(tmp_path):
    make_class_folder(tmp_path / "d" / "train", per_class=5)
    ds = load_dataset(tmp_path / "d")
    assert ds.split_was_generated and _counts(ds) == {"train": [4, 4, 4], "val": [1, 1, 1]}


def test_zip_of_class_folders(class_folder, tmp_path):
    archive = _zip_folder(class_folder, tmp_path / "colours.zip")
    ds = load_dataset(archive, workdir=tmp_path / "work")
    assert ds.classes == sorted(CLASS_COLOURS) and len(ds.items) == 18
    assert Path(ds.root).is_relative_to(tmp_path / "work")


def test_zip_of_split_layout_inside_a_wrapper_folder(split_folder, tmp_path):
    archive = _zip_folder(split_folder, tmp_path / "wrapped.zip", prefix="my_dataset/")
    ds = load_dataset(archive, workdir=tmp_path / "work")
    assert not ds.split_was_generated
    assert _counts(ds) == {"train": [8, 8, 8], "val": [3, 3, 3]}
    assert Path(ds.root).name == "my_dataset"


def test_zip_of_class_folders_inside_a_wrapper_folder(class_folder, tmp_path):
    archive = _zip_folder(class_folder, tmp_path / "w.zip", prefix="outer/")
    ds = load_dataset(archive, workdir=tmp_path / "work")
    assert ds.classes == sorted(CLASS_COLOURS)


def test_zip_macos_leftovers_are_ignored_not_skipped(class_folder, tmp_path):
    archive = _zip_folder(class_folder, tmp_path / "mac.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("__MACOSX/red/._red_0.jpg", b"resource fork")
        zf.writestr("red/.DS_Store", b"finder")
        zf.writestr(".hidden/x.jpg", b"hidden")
    ds = load_dataset(archive, workdir=tmp_path / "work")
    assert ds.skipped == [] and len(ds.items) == 18


def test_same_zip_is_extracted_once_and_reused(class_folder, tmp_path):
    archive = _zip_folder(class_folder, tmp_path / "c.zip")
    first = load_dataset(archive, workdir=tmp_path / "work")
    second = load_dataset(archive, workdir=tmp_path / "work")
    assert first.root == second.root and first.items == second.items
    assert len([p for p in (tmp_path / "work").iterdir() if not p.name.startswith(".")]) == 1


def test_csv_of_relative_paths_and_labels(class_folder):
    rows = [(f"{name}/{name}_{i}.jpg", name) for name in CLASS_COLOURS for i in range(6)]
    csv = class_folder / "labels.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(csv, index=False)
    ds = load_dataset(csv)
    assert ds.classes == sorted(CLASS_COLOURS) and ds.split_was_generated
    assert _counts(ds) == {"train": [5, 5, 5], "val": [1, 1, 1]}


def test_csv_split_column_is_respected(class_folder):
    rows = [(f"{n}/{n}_{i}.jpg", n, "val" if i < 2 else "train") for n in CLASS_COLOURS for i in range(6)]
    csv = class_folder / "labels.csv"
    pd.DataFrame(rows, columns=["filename", "class", "split"]).to_csv(csv, index=False)
    ds = load_dataset(csv)
    assert not ds.split_was_generated
    assert _counts(ds) == {"train": [4, 4, 4], "val": [2, 2, 2]}


def test_csv_paths_outside_its_folder_are_refused(tmp_path):
    data = make_class_folder(tmp_path / "data", per_class=3)
    secret = write_class_image(tmp_path / "secret.jpg", (1, 2, 3), seed=9)
    rows = [(f"{n}/{n}_{i}.jpg", n) for n in CLASS_COLOURS for i in range(3)]
    rows += [("../secret.jpg", "red"), (str(secret), "red"), ("/etc/passwd", "blue")]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(data / "labels.csv", index=False)
    ds = load_dataset(data / "labels.csv")
    assert {s.path for s in ds.skipped} == {"../secret.jpg", str(secret), "/etc/passwd"}
    assert {s.reason for s in ds.skipped} == {"outside the CSV's folder (refused)"}
    assert all("secret" not in item.path for item in ds.items)


def test_csv_paths_under_an_allowed_root_are_accepted(tmp_path):
    images_dir = make_class_folder(tmp_path / "images", per_class=3)
    csv_dir = tmp_path / "lists"
    csv_dir.mkdir()
    rows = [(str(images_dir / n / f"{n}_{i}.jpg"), n) for n in CLASS_COLOURS for i in range(3)]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(csv_dir / "all.csv", index=False)
    ds = load_dataset(csv_dir / "all.csv", allowed_root=tmp_path)
    assert len(ds.items) == 9 and ds.skipped == []


def test_csv_rows_with_missing_files_or_labels_are_skipped(class_folder):
    rows = [(f"{n}/{n}_{i}.jpg", n) for n in CLASS_COLOURS for i in range(6)]
    rows += [("red/nope.jpg", "red"), ("red/red_0.jpg", "red"), ("blue/blue_1.jpg", "")]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(class_folder / "l.csv", index=False)
    ds = load_dataset(class_folder / "l.csv")
    reasons = {s.path: s.reason for s in ds.skipped}
    assert reasons["red/red_0.jpg"] == "listed twice in the CSV"
    assert reasons["blue/blue_1.jpg"] == "no label"
    assert any(r == "file not found" for r in reasons.values())


def test_csv_without_path_and_label_columns_says_which_are_needed(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="needs a 'path' and a 'label' column.*found: a, b"):
        load_dataset(tmp_path / "x.csv")


def test_csv_with_unknown_split_value_names_the_row(class_folder):
    (class_folder / "s.csv").write_text("path,label,split\nred/red_0.jpg,red,holdout\n")
    with pytest.raises(DatasetError, match="row 2: unknown split 'holdout'"):
        load_dataset(class_folder / "s.csv")


# --- the generated split ---------------------------------------------------------------------------------
def test_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path):
    root = make_class_folder(tmp_path / "many", per_class=20, size=32)
    a = load_dataset(root, seed=3)
    b = load_dataset(root, seed=3)
    c = load_dataset(root, seed=4)
    assert a.split("val") == b.split("val")
    assert {i.path for i in a.split("val")} != {i.path for i in c.split("val")}
    assert a.class_counts("val") == [4, 4, 4]


def test_every_class_with_two_images_gets_one_val_image():
    items = [Item(f"/x/{c}{i}.jpg", c, "train") for c, n in enumerate([2, 3, 50, 1]) for i in range(n)]
    result = split_train_val(items, ["a", "b", "c", "d"], val_fraction=0.1, seed=0)
    val = [sum(1 for i in result if i.label == c and i.split == "val") for c in range(4)]
    assert val == [1, 1, 5, 0]
    assert sorted(i.path for i in result) == sorted(i.path for i in items)


def test_large_val_fraction_still_leaves_a_train_image_per_class():
    items = [Item(f"/x/{c}{i}.jpg", c, "train") for c in range(2) for i in range(3)]
    result = split_train_val(items, ["a", "b"], val_fraction=0.9, seed=1)
    assert [sum(1 for i in result if i.label == c and i.split == "train") for c in range(2)] == [1, 1]


def test_adding_a_class_leaves_other_classes_split_alone(tmp_path):
    root = make_class_folder(tmp_path / "d", per_class=10, classes=["red", "green"], size=32)
    before = {i.path for i in load_dataset(root).split("val")}
    make_class_folder(root, per_class=10, classes=["blue"], size=32)
    after = {i.path for i in load_dataset(root).split("val") if "/blue/" not in i.path}
    assert before == after


# --- bad files -------------------------------------------------------------------------------------------
def _add_bad_files(folder: Path) -> dict[str, str]:
    """Write one file of each bad kind into folder; returns name -> expected reason."""
    good = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(good, "PNG")
    (folder / "truncated.png").write_bytes(good.getvalue()[:300])
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "letter.jpg").write_text("Dear reviewer, this is not a photo.")
    (folder / "notes.txt").write_text("labels were checked by hand")
    return {"truncated.png": "corrupt or truncated image", "garbage.jpg": "corrupt or truncated image",
            "empty.jpg": "zero-byte file", "letter.jpg": "not an image (text)",
            "notes.txt": "not an image file (.txt)"}


def test_each_bad_file_is_skipped_with_its_reason(class_folder):
    expected = _add_bad_files(class_folder / "red")
    (class_folder / "red" / ".DS_Store").write_bytes(b"\x00\x01")
    (class_folder / "red" / "Thumbs.db").write_bytes(b"\x00\x01")
    ds = load_dataset(class_folder)
    assert {Path(s.path).name: s.reason for s in ds.skipped} == expected
    assert ds.summary()["total"].tolist() == [6, 6, 6]
    table = ds.skipped_table()
    assert list(table.columns) == ["path", "reason"] and len(table) == 5
    assert set(table["path"]) == {f"red/{name}" for name in expected}


def test_decompression_bomb_is_skipped(class_folder, monkeypatch):
    write_class_image(class_folder / "green" / "huge.png", (0, 255, 0), seed=1, size=64)
    monkeypatch.setattr(images, "MAX_PIXELS", 50 * 50)
    ds = load_dataset(class_folder)
    assert [(Path(s.path).name, s.reason) for s in ds.skipped] == [("huge.png", "decompression bomb (64x64 px)")]


def test_loose_files_beside_class_folders_are_skipped(class_folder):
    write_class_image(class_folder / "stray.jpg", (9, 9, 9), seed=5)
    ds = load_dataset(class_folder)
    assert [(Path(s.path).name, s.reason) for s in ds.skipped] == [("stray.jpg", "not inside a class folder")]


def test_images_in_nested_folders_belong_to_their_class(class_folder):
    write_class_image(class_folder / "blue" / "night" / "n1.jpg", CLASS_COLOURS["blue"], seed=7)
    ds = load_dataset(class_folder)
    assert ds.summary().set_index("class").loc["blue", "total"] == 7


def test_progress_reports_fractions_up_to_one(class_folder):
    seen: list[tuple[float, str]] = []
    load_dataset(class_folder, progress=lambda f, m: seen.append((f, m)))
    assert seen and seen[-1] == (1.0, "checked 18/18 files")
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)


# --- unusable datasets -------------------------------------------------------------------------------------
def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="dataset not found"):
        load_dataset(tmp_path / "nope")


def test_empty_folder_says_how_to_lay_out_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class folders .* one subfolder per class"):
        load_dataset(tmp_path / "empty")


def test_class_folders_without_images_say_no_images(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir()
    with pytest.raises(DatasetError, match="no image files found"):
        load_dataset(tmp_path / "d")


def test_all_files_unusable_lists_the_reasons(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir()
    (tmp_path / "d" / "a" / "x.jpg").write_bytes(b"")
    (tmp_path / "d" / "b" / "y.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"no usable images .*2 files were skipped \(zero-byte file x2\)"):
        load_dataset(tmp_path / "d")


def test_single_class_is_refused(tmp_path):
    make_class_folder(tmp_path / "one", classes=["red"])
    with pytest.raises(DatasetError, match=r"only one class \('red'\).*at least two classes"):
        load_dataset(tmp_path / "one")


def test_class_whose_files_are_all_bad_is_named_with_the_reasons(class_folder):
    cats = class_folder / "cats"
    cats.mkdir()
    for i in range(2):
        (cats / f"c{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    (cats / "c2.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"class 'cats' has no usable image: 3 files skipped "
                                           r"\(corrupt or truncated image x2, zero-byte file\)"):
        load_dataset(class_folder)


def test_empty_class_folder_is_named(class_folder):
    (class_folder / "ghosts").mkdir()
    with pytest.raises(DatasetError, match="class 'ghosts' has no usable image: its folder holds no image"):
        load_dataset(class_folder)


def test_val_classes_differing_from_train_is_refused(split_folder):
    make_class_folder(split_folder / "val", per_class=1, classes=["purple"])
    with pytest.raises(DatasetError, match="val split's classes differ from train.*not in train: purple"):
        load_dataset(split_folder)


def test_val_missing_a_class_is_refused(split_folder):
    for f in (split_folder / "val" / "red").iterdir():
        f.unlink()
    (split_folder / "val" / "red").rmdir()
    with pytest.raises(DatasetError, match="missing from val: red"):
        load_dataset(split_folder)


def test_val_class_with_only_bad_files_is_named(split_folder):
    for f in (split_folder / "val" / "red").iterdir():
        f.write_bytes(b"")
    with pytest.raises(DatasetError, match="class 'red' has no usable image in the val split: 3 files skipped"):
        load_dataset(split_folder)


def test_unsupported_file_source_is_refused(tmp_path):
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a dataset"):
        load_dataset(tmp_path / "data.txt")


def test_broken_zip_is_refused(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DatasetError, match="not a readable zip file"):
        load_dataset(tmp_path / "bad.zip", workdir=tmp_path / "w")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_val_fraction_out_of_range_is_refused(class_folder, fraction):
    with pytest.raises(DatasetError, match="val_fraction"):
        load_dataset(class_folder, val_fraction=fraction)


# --- safe zip extraction -----------------------------------------------------------------------------------
def _evil_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok/a.txt", b"fine")
        zf.writestr("../evil.jpg", b"escaped")
        zf.writestr("ok/../../evil2.jpg", b"escaped")
        zf.writestr("/tmp/abs_evil.jpg", b"absolute")
        zf.writestr("C:/windows_evil.jpg", b"drive")
        link = zipfile.ZipInfo("ok/link.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return path


def test_zip_slip_entries_never_land_outside_the_target(tmp_path):
    target = tmp_path / "sandbox" / "out"
    skipped: list = []
    safe_extract_zip(_evil_zip(tmp_path / "evil.zip"), target, skipped=skipped)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["evil.zip", "sandbox/out/ok/a.txt"]
    assert not (target / "ok" / "link.jpg").exists()
    reasons = {s.path: s.reason for s in skipped}
    assert reasons["../evil.jpg"].startswith("unsafe path in zip")
    assert reasons["ok/../../evil2.jpg"].startswith("unsafe path in zip")
    assert reasons["/tmp/abs_evil.jpg"] == "unsafe path in zip (absolute), not extracted"
    assert reasons["C:/windows_evil.jpg"] == "unsafe path in zip (absolute), not extracted"
    assert reasons["ok/link.jpg"] == "symlink in zip, not extracted"
    assert not Path("/tmp/abs_evil.jpg").exists()


def test_zip_with_too_many_files_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as zf:
        for i in range(5):
            zf.writestr(f"a/{i}.jpg", b"x")
    with pytest.raises(DatasetError, match="holds 5 files, more than the limit of 4"):
        safe_extract_zip(tmp_path / "many.zip", tmp_path / "out", max_files=4)


def test_zip_unpacking_to_too_many_bytes_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "big.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/zeros.jpg", bytes(200_000))
    with pytest.raises(DatasetError, match="unpacks to .* more than the limit"):
        safe_extract_zip(tmp_path / "big.zip", tmp_path / "out", max_bytes=100_000)


def test_unsafe_zip_entries_are_listed_as_skipped_in_the_dataset(class_folder, tmp_path):
    archive = _zip_folder(class_folder, tmp_path / "c.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("../evil.jpg", b"escaped")
    ds = load_dataset(archive, workdir=tmp_path / "work")
    assert [s.path for s in ds.skipped] == ["../evil.jpg"] and len(ds.items) == 18
    again = load_dataset(archive, workdir=tmp_path / "work")
    assert [s.path for s in again.skipped] == ["../evil.jpg"]


# --- the real data ------------------------------------------------------------------------------------------
def test_hymenoptera_loads_with_its_own_split(shared_data):
    ds = load_dataset(shared_data)
    assert ds.classes == ["ants", "bees"]
    assert _counts(ds) == {"train": [124, 121], "val": [70, 83]}
    assert not ds.split_was_generated and ds.skipped == []
