"""ftui.data.demo: a deterministic, fair 4-class textures dataset generated once, plus example images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ftui.data.datasets import load_dataset
from ftui.data.demo import (
    CLASSES,
    EXAMPLES_DIR,
    IMAGE_SIZE,
    draw_pattern,
    ensure_demo_dataset,
    example_images,
    make_demo_dataset,
    write_examples,
)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """The default demo dataset, generated once for this module."""
    return ensure_demo_dataset(tmp_path_factory.mktemp("demo") / "textures")


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def test_default_demo_is_a_usable_four_class_dataset(demo_dir):
    ds = load_dataset(demo_dir)
    assert ds.classes == sorted(CLASSES)
    assert ds.summary()["total"].tolist() == [100, 100, 100, 100]
    assert ds.skipped == [] and ds.split_was_generated
    with Image.open(ds.items[0].path) as im:
        assert im.size == (IMAGE_SIZE, IMAGE_SIZE)


def test_same_seed_gives_the_same_images_and_another_seed_differs(tmp_path):
    a = make_demo_dataset(tmp_path / "a", per_class=3, seed=5)
    b = make_demo_dataset(tmp_path / "b", per_class=3, seed=5)
    c = make_demo_dataset(tmp_path / "c", per_class=3, seed=6)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == 12
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_images_within_a_class_vary(demo_dir):
    dots = [_pixels(p) for p in sorted((demo_dir / "dots").glob("*.jpg"))[:10]]
    assert min(np.abs(x - y).mean() for i, x in enumerate(dots) for y in dots[i + 1:]) > 5


def test_colour_alone_does_not_tell_the_classes_apart(demo_dir):
    # Nearest class-mean colour, fitted on half the images, scored on the other half: about chance.
    features = {c: [_pixels(p).mean(axis=(0, 1)) for p in sorted((demo_dir / c).glob("*.jpg"))] for c in CLASSES}
    centroids = np.stack([np.mean(features[c][::2], axis=0) for c in CLASSES])
    correct = total = 0
    for label, c in enumerate(CLASSES):
        for f in features[c][1::2]:
            correct += int(np.argmin(np.linalg.norm(centroids - f, axis=1)) == label)
            total += 1
    assert correct / total < 0.45


def test_ensure_generates_once_and_reuses(tmp_path):
    folder = ensure_demo_dataset(tmp_path / "d", per_class=3)
    stamp = {p: p.stat().st_mtime_ns for p in folder.rglob("*.jpg")}
    again = ensure_demo_dataset(tmp_path / "d", per_class=3)
    assert again == folder
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.jpg")} == stamp
    assert json.loads((folder / ".ftui-demo.json").read_text())["per_class"] == 3


def test_ensure_with_fewer_images_removes_the_extra_ones(tmp_path):
    ensure_demo_dataset(tmp_path / "d", per_class=5)
    folder = ensure_demo_dataset(tmp_path / "d", per_class=2)
    assert sorted(p.name for p in (folder / "dots").iterdir()) == ["dots_000.jpg", "dots_001.jpg"]


def test_ensure_regenerates_after_an_interrupted_run(tmp_path):
    folder = make_demo_dataset(tmp_path / "d", per_class=2)  # files but no marker, as if interrupted
    (folder / "checker" / "checker_001.jpg").write_bytes(b"")
    ensure_demo_dataset(folder, per_class=2)
    assert (folder / "checker" / "checker_001.jpg").stat().st_size > 0


def test_too_few_images_per_class_is_refused(tmp_path):
    with pytest.raises(ValueError, match="per_class must be >= 2"):
        make_demo_dataset(tmp_path, per_class=1)


def test_unknown_pattern_is_refused():
    with pytest.raises(ValueError, match="unknown demo pattern 'hexagon'"):
        draw_pattern("hexagon", np.random.default_rng(0))


def test_committed_examples_are_the_generator_output_and_not_training_images(demo_dir, tmp_path):
    committed = example_images()
    assert [Path(p).name for p in committed] == sorted(f"example_{c}.jpg" for c in CLASSES)
    fresh = write_examples(tmp_path)
    for path in fresh:
        assert np.abs(_pixels(path) - _pixels(EXAMPLES_DIR / path.name)).max() <= 2
    training = [_pixels(p) for p in demo_dir.rglob("*.jpg")]
    for path in committed:
        example = _pixels(Path(path))
        assert min(np.abs(example - t).mean() for t in training) > 5


def test_an_old_shapes_cache_is_regenerated_as_textures(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    old_classes = ["circle", "square", "triangle", "cross"]
    for name in old_classes:
        (folder / name).mkdir()
        Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / name / f"{name}_000.jpg")
    (folder / ".ftui-demo.json").write_text(json.dumps(
        {"version": 1, "per_class": 2, "seed": 0, "classes": old_classes}))
    ensure_demo_dataset(folder, per_class=2)
    assert all(len(list((folder / c).glob("*.jpg"))) == 2 for c in CLASSES)
    # The old shapes must not linger as extra classes beside the textures.
    assert load_dataset(folder).classes == sorted(CLASSES)


def test_old_demo_folders_left_under_a_current_marker_are_removed_but_other_folders_are_kept(tmp_path):
    folder = ensure_demo_dataset(tmp_path / "d", per_class=2)
    (folder / "circle").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "circle" / "circle_000.jpg")
    (folder / "mine").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "mine" / "holiday.jpg")
    ensure_demo_dataset(folder, per_class=2)
    assert not (folder / "circle").exists()
    assert (folder / "mine" / "holiday.jpg").is_file()


def test_stripes_run_the_way_their_class_says(demo_dir):
    # Colour changes mostly down the image for horizontal stripes and across it for vertical ones.
    # (A horizontal flip, on by default, keeps both gradient energies, so flipped stripes keep their class.)
    def down_vs_across(image: np.ndarray) -> float:
        return np.abs(np.diff(image, axis=0)).mean() / np.abs(np.diff(image, axis=1)).mean()

    assert all(down_vs_across(_pixels(p)) > 1.2 for p in (demo_dir / "hstripes").glob("*.jpg"))
    assert all(down_vs_across(_pixels(p)) < 1 / 1.2 for p in (demo_dir / "vstripes").glob("*.jpg"))
