"""Dataset doctor: every planted problem is found under the right check, a clean set raises none."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASS_COLOURS, write_class_image
from PIL import Image

from ftui.doctor import DoctorError, check, colour_histogram_features, run_cli
from ftui.doctor.cli import add_cli_arguments
from ftui.doctor.duplicates import LEAKAGE, popcount

COLOUR_FEATURES = {"feature_fn": colour_histogram_features, "feature_name": "colour histograms"}


def write_clean_split(root: Path, train: int = 12, val: int = 4, size: int = 32) -> Path:
    """train/ and val/ folders of the three colour classes, enough images per class to learn and validate."""
    for ci, (name, colour) in enumerate(CLASS_COLOURS.items()):
        for i in range(train):
            write_class_image(root / "train" / name / f"{name}_{i}.jpg", colour, seed=ci * 1000 + i, size=size)
        for i in range(val):
            write_class_image(root / "val" / name / f"v_{name}_{i}.png", colour, seed=9000 + ci * 100 + i,
                              size=size)
    return root


def structured_image(size: int, colour: tuple[int, int, int]) -> Image.Image:
    """A picture with shapes and gradients (perceptual hashes need structure, not noise), tinted by class."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.array(colour, dtype=np.float64)[None, None, :]
    shade = (0.5 + 0.5 * np.sin(6 * xx) * np.cos(4 * yy))[..., None]
    pixels = base * (0.4 + 0.6 * shade)
    pixels[(xx - 0.3) ** 2 + (yy - 0.6) ** 2 < 0.04] = 255  # a bright disc
    pixels[int(size * 0.1):int(size * 0.3), int(size * 0.55):int(size * 0.9)] = 20  # a dark bar
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def plant_problems(root: Path) -> dict[str, Path]:
    """Write a clean split, then one file per problem the doctor must find; returns where each went."""
    write_clean_split(root)
    train, val = root / "train", root / "val"
    planted: dict[str, Path] = {}

    good = (train / "red" / "red_0.jpg").read_bytes()
    planted["corrupt_jpeg"] = train / "red" / "corrupt.jpg"
    planted["corrupt_jpeg"].write_bytes(good[:4] + bytes(range(256)) * 4)
    png = train / "green" / "whole.png"
    write_class_image(png, CLASS_COLOURS["green"], seed=77, size=48)
    planted["truncated_png"] = train / "green" / "truncated.png"
    planted["truncated_png"].write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    png.unlink()
    planted["text_as_jpg"] = train / "blue" / "notes.jpg"
    planted["text_as_jpg"].write_text("this is a note, not a picture\n")
    planted["zero_byte"] = train / "blue" / "empty.png"
    planted["zero_byte"].write_bytes(b"")
    # 48 megapixels of one-bit white: a few KB on disk, far past the decoder's pixel cap.
    planted["bomb"] = train / "green" / "huge.png"
    Image.new("1", (8000, 6000), 1).save(planted["bomb"])

    # The same pixels under two labels: a red image re-saved losslessly into the green folder.
    planted["exact_dup_source"] = train / "red" / "red_1.jpg"
    planted["exact_dup_copy"] = train / "green" / "copy_of_red_1.png"
    Image.open(planted["exact_dup_source"]).save(planted["exact_dup_copy"])

    # A train image resized and recompressed into val: leakage.
    planted["near_dup_source"] = train / "blue" / "scene.png"
    structured_image(64, CLASS_COLOURS["blue"]).save(planted["near_dup_source"])
    planted["near_dup_copy"] = val / "blue" / "scene_small.jpg"
    structured_image(64, CLASS_COLOURS["blue"]).resize((52, 52), Image.Resampling.BICUBIC).save(
        planted["near_dup_copy"], quality=70)

    planted["one_pixel"] = train / "red" / "dot.png"
    Image.new("RGB", (1, 1), CLASS_COLOURS["red"]).save(planted["one_pixel"])
    planted["cmyk"] = train / "green" / "print.jpg"
    Image.open(write_class_image(train / "green" / "tmp.png", CLASS_COLOURS["green"], seed=81, size=32)) \
        .convert("CMYK").save(planted["cmyk"])
    (train / "green" / "tmp.png").unlink()
    planted["rgba"] = train / "blue" / "cutout.png"
    rgba = Image.open(write_class_image(train / "blue" / "tmp.png", CLASS_COLOURS["blue"], seed=82, size=32))
    rgba.convert("RGBA").save(planted["rgba"])
    (train / "blue" / "tmp.png").unlink()
    planted["exif_rotated"] = train / "red" / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.open(write_class_image(train / "red" / "tmp.png", CLASS_COLOURS["red"], seed=83, size=32)) \
        .save(planted["exif_rotated"], exif=exif)
    (train / "red" / "tmp.png").unlink()

    # A clearly red image filed under blue.
    planted["mislabeled"] = write_class_image(train / "blue" / "actually_red.jpg", CLASS_COLOURS["red"],
                                              seed=84, size=32)
    return planted


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    """(report, planted paths) for the planted-problem set, checked once for all tests here."""
    root = tmp_path_factory.mktemp("planted")
    paths = plant_problems(root)
    return check(root, **COLOUR_FEATURES), paths


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clean_split(tmp_path_factory.mktemp("clean"))


def rows_for(report, check_name: str, path: Path):
    table = report.check(check_name).table
    return table[table["path"].map(lambda p: Path(p).resolve() == path.resolve())]


def issues_for(report, check_name: str, path: Path) -> str:
    return " | ".join(rows_for(report, check_name, path)["issue"])


# --- planted problems -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, reason", [
    ("corrupt_jpeg", "corrupt or truncated"),
    ("truncated_png", "corrupt or truncated"),
    ("text_as_jpg", "not an image (text)"),
    ("zero_byte", "zero-byte file"),
    ("bomb", "decompression bomb"),
])
def test_unreadable_files_are_errors_with_their_reason(planted, name, reason):
    report, paths = planted
    rows = rows_for(report, "unreadable", paths[name])
    assert list(rows["level"]) == ["error"]
    assert reason in rows["issue"].iloc[0]
    assert report.check("unreadable").severity == "error"


def test_same_pixels_under_two_labels_is_an_exact_duplicate_across_classes(planted):
    report, paths = planted
    table = report.check("duplicates").table
    group = rows_for(report, "duplicates", paths["exact_dup_copy"])
    assert list(group["kind"]) == ["exact"] and list(group["scope"]) == ["across classes"]
    members = table[table["group"] == group["group"].iloc[0]]
    assert {Path(p).name for p in members["path"]} == {"red_1.jpg", "copy_of_red_1.png"}
    assert set(members["label"]) == {"red", "green"}
    assert report.check("duplicates").severity == "error"


def test_resized_recompressed_copy_in_val_is_a_near_duplicate_across_splits(planted):
    report, paths = planted
    rows = rows_for(report, "duplicates", paths["near_dup_copy"])
    assert list(rows["kind"]) == ["near"] and list(rows["scope"]) == [LEAKAGE]
    source = rows_for(report, "duplicates", paths["near_dup_source"])
    assert list(source["group"]) == list(rows["group"]) and list(source["split"]) == ["train"]


@pytest.mark.parametrize("name, issue, level", [
    ("one_pixel", "very small (1x1 px)", "warning"),
    ("cmyk", "CMYK", "info"),
    ("rgba", "alpha channel", "info"),
    ("exif_rotated", "EXIF-rotated (orientation 6", "info"),
])
def test_image_properties_flag_the_planted_file(planted, name, issue, level):
    report, paths = planted
    rows = rows_for(report, "properties", paths[name])
    matching = rows[rows["issue"].str.contains(issue, regex=False)]
    assert list(matching["level"]) == [level], issues_for(report, "properties", paths[name])


def test_grayscale_and_16_bit_images_are_counted_as_info(tmp_path):
    write_clean_split(tmp_path)
    grey = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "train" / "red" / "deep.png")
    Image.open(tmp_path / "train" / "red" / "red_3.jpg").convert("L").save(tmp_path / "train" / "red" / "grey.jpg")
    report = check(tmp_path, labels=False)
    props = report.check("properties")
    deep = issues_for(report, "properties", tmp_path / "train" / "red" / "deep.png")
    assert "16-bit" in deep and "grayscale" in deep
    assert "grayscale" in issues_for(report, "properties", tmp_path / "train" / "red" / "grey.jpg")
    assert props.stats["modes"]["L"] == 1 and props.stats["modes"]["RGB"] == 48
    assert props.severity == "ok"  # both are converted automatically: nothing to fix


def test_exif_rotated_image_is_measured_upright(planted):
    report, paths = planted
    row = rows_for(report, "properties", paths["exif_rotated"]).iloc[0]
    # Stored 32x32 either way; what matters is that the flag exists and the size is the decoded one.
    assert (row["width"], row["height"]) == (32, 32)


def test_mislabeled_image_is_listed_first_with_the_class_it_looks_like(planted):
    report, paths = planted
    labels = report.check("labels")
    assert labels.ran and labels.severity == "warning"
    # The red image filed under blue, and the red copy filed under green, both rank above everything else.
    top = labels.table.head(2)
    assert {Path(p).name for p in top["path"]} == {"actually_red.jpg", "copy_of_red_1.png"}
    mislabeled = rows_for(report, "labels", paths["mislabeled"]).iloc[0]
    assert (mislabeled["label"], mislabeled["suggested"]) == ("blue", "red")
    assert mislabeled["p_given"] < 0.1 and "look at this first" in mislabeled["issue"]
    assert set(labels.table["suggested"]) - {""} == {"red"}


def test_planted_set_fails_the_gate_and_lists_thumbnail_rows(planted):
    report, _paths = planted
    assert report.status == "errors" and report.exit_code == 1
    flagged = report.flagged()
    names = {Path(p).name for p in flagged["path"]}
    assert {"corrupt.jpg", "copy_of_red_1.png", "scene_small.jpg", "dot.png", "actually_red.jpg"} <= names
    assert set(flagged["level"]) <= {"warning", "error"}


def test_report_round_trips_through_json_and_frames(planted):
    report, _ = planted
    data = json.loads(json.dumps(report.to_dict()))
    assert data["status"] == "errors"
    assert [c["name"] for c in data["checks"]] == ["unreadable", "balance", "duplicates", "properties", "labels"]
    frames = report.to_frames()
    assert list(frames["summary"]["check"]) == [c["name"] for c in data["checks"]]
    assert len(frames["duplicates"]) == len(data["checks"][2]["rows"])
    text = report.to_text()
    assert "[ERROR] unreadable" in text and "copy_of_red_1.png" in text


# --- a clean set ----------------------------------------------------------------------------------------
def test_clean_split_raises_nothing(clean_root):
    report = check(clean_root, **COLOUR_FEATURES)
    assert report.status == "green", report.to_text()
    assert all(c.severity == "ok" for c in report.checks)
    assert report.check("labels").ran
    assert report.flagged().empty
    assert report.check("properties").stats["width"]["median"] == 32


# --- class balance --------------------------------------------------------------------------------------
def test_small_and_imbalanced_classes_are_flagged_with_the_weighted_loss_suggestion(tmp_path):
    for i in range(20):
        write_class_image(tmp_path / "train" / "red" / f"{i}.png", CLASS_COLOURS["red"], seed=i, size=24)
    for i in range(4):
        write_class_image(tmp_path / "train" / "blue" / f"{i}.png", CLASS_COLOURS["blue"], seed=100 + i, size=24)
    for name in ("red", "blue"):
        write_class_image(tmp_path / "val" / name / "v.png", CLASS_COLOURS[name], seed=500, size=24)
    balance = check(tmp_path, labels=False).check("balance")
    assert balance.severity == "warning"
    assert balance.stats["imbalance_ratio"] == pytest.approx(5.0)
    assert any("class-weighted loss" in s for s in balance.suggestions)
    blue = balance.table.set_index("class").loc["blue"]
    assert (blue["train"], blue["val"]) == (4, 1)
    assert "too few to learn" in blue["issue"] and "too few to measure" in blue["issue"]


# --- label check without features ------------------------------------------------------------------------
def test_label_check_says_skipped_without_pretrained_weights(clean_root):
    report = check(clean_root, weights="none")
    labels = report.check("labels")
    assert not labels.ran and labels.severity == "ok"
    assert labels.summary.startswith("not checked: no pretrained weights available")


def test_label_check_can_be_turned_off(clean_root):
    labels = check(clean_root, labels=False).check("labels")
    assert not labels.ran and "turned off" in labels.summary


def test_missing_weights_file_is_a_doctor_error(clean_root, tmp_path):
    with pytest.raises(DoctorError, match="weights file not found"):
        check(clean_root, backbone="mobilenet_v2", weights=str(tmp_path / "missing.pth"))


def test_missing_dataset_is_a_doctor_error(tmp_path):
    with pytest.raises(DoctorError, match="dataset not found"):
        check(tmp_path / "nope", labels=False)


# --- CLI ------------------------------------------------------------------------------------------------
def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_exit_codes_gate_on_errors_only(planted, clean_root, tmp_path, capsys):
    planted_root = Path(planted[1]["corrupt_jpeg"]).parents[2]
    assert run_cli(cli_args(str(planted_root), "--no-labels")) == 1
    out = capsys.readouterr().out
    assert "[ERROR] duplicates" in out and "corrupt.jpg" in out
    assert run_cli(cli_args(str(clean_root), "--no-labels")) == 0
    assert run_cli(cli_args(str(tmp_path / "nope"))) == 2
    assert "dataset not found" in capsys.readouterr().err


def test_cli_json_is_the_full_report(clean_root, capsys):
    assert run_cli(cli_args(str(clean_root), "--json", "--weights", "none")) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "green" and data["num_files"] == 48
    assert data["checks"][-1]["summary"].startswith("not checked: no pretrained weights")


def test_main_cli_runs_the_check_subcommand(clean_root, capsys):
    from ftui.cli import main

    assert main(["check", str(clean_root), "--no-labels", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "green"


# --- duplicate search internals ---------------------------------------------------------------------------
def test_popcount_matches_python_bit_counts():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=200, dtype=np.uint64)
    assert list(popcount(hashes[:50])) == [int(h).bit_count() for h in hashes[:50]]


def test_a_file_identical_to_another_is_reported_once_per_group(tmp_path):
    write_clean_split(tmp_path)
    src = tmp_path / "train" / "red" / "red_2.jpg"
    for k in range(2):
        shutil.copy(src, tmp_path / "train" / "red" / f"again_{k}.jpg")
    dup = check(tmp_path, labels=False).check("duplicates")
    assert dup.severity == "warning"
    assert sorted(Path(p).name for p in dup.table["path"]) == ["again_0.jpg", "again_1.jpg", "red_2.jpg"]
    assert set(dup.table["scope"]) == {"within class"}


# --- real data, real backbone ----------------------------------------------------------------------------
@pytest.mark.slow  # a pretrained probe over a real dataset
@pytest.mark.shared
def test_hymenoptera_placeholder_gif_is_flagged_by_properties_and_the_pretrained_probe(
        shared_data, shared_weights):
    from ftui.data.datasets import Dataset, Item, load_dataset

    # The real loader on the real folder, then a 60-per-class slice of train (plus the placeholder GIF) so
    # the real backbone runs on ~120 images instead of ~400.
    full = load_dataset(shared_data)
    gif = shared_data / "train" / "ants" / "imageNotFound.gif"
    train = [i for i in full.split("train") if Path(i.path).name != gif.name]
    items = [i for label in (0, 1) for i in [j for j in train if j.label == label][:60]]
    items.append(Item(str(gif), full.classes.index("ants"), "train"))
    subset = Dataset(classes=full.classes, items=items, root=full.root)
    report = check(subset, backbone="mobilenet_v2", weights=str(shared_weights))
    assert "near-blank" in issues_for(report, "properties", gif)
    labels = report.check("labels")
    assert labels.ran and labels.stats["probe_cv_accuracy"] > 0.8
    assert "unusual for 'ants'" in issues_for(report, "labels", gif)
    assert report.check("unreadable").severity == "ok"
    assert report.status == "warnings"


# --- which pretrained features the doctor uses -------------------------------------------------------------
@pytest.mark.shared
def test_a_weights_file_picks_the_backbone_it_fits(shared_weights):
    from ftui.doctor.core import resolve_pretrained

    name, weights, note = resolve_pretrained("mobilenet_v3_small", str(shared_weights))
    assert (name, weights) == ("mobilenet_v2", str(shared_weights)) and "fits mobilenet_v2" in note
    assert resolve_pretrained("mobilenet_v2", str(shared_weights))[2] == ""


@pytest.mark.shared
def test_random_init_falls_back_to_any_downloaded_imagenet_backbone(shared_weights, tmp_path, monkeypatch):
    import torch

    from ftui.doctor.core import resolve_pretrained
    from ftui.models.backbones import backbone_info

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert resolve_pretrained("resnet18", "none")[0] == ""  # nothing downloaded: skipped, and said so
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / backbone_info("mobilenet_v2").weights_file).symlink_to(shared_weights)
    name, weights, note = resolve_pretrained("resnet18", "none")
    assert (name, weights) == ("mobilenet_v2", "imagenet") and "instead of resnet18" in note
