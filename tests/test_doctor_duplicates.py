"""Near-duplicate precision and recall, calibrated on real photos (kept as a test).

Positives: copies planted from real photos (5% crops, 2/3 resizes, JPEG-70, colour shifts, mirrors, and a
crop+resize+JPEG mix) placed in val while the original is in train: leakage. Negatives: the hardest pairs
of *different* images found in hymenoptera, clothing_small, mnist_small and the demo textures (highest
aligned pixel and embedding similarity among all their pairs, each looked at by a person: different photos,
different handwriting, different colours)."""

from __future__ import annotations

import glob
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from ftui.doctor.duplicates import LEAKAGE, check_duplicates, cliques, near_duplicate_pairs
from ftui.doctor.scan import scan
from tests.conftest import SHARED, SHARED_WEIGHTS
from tests.planted_copies import plant_copies

DATA = SHARED / "data"
# (path, path) relative to ../shared/data: different images that look alike (a person's label: different).
HARD_DIFFERENT = [
    ("mnist_small/train/1/16447.png", "mnist_small/train/1/29679.png"),
    ("mnist_small/train/1/11715.png", "mnist_small/train/1/46251.png"),
    ("mnist_small/train/1/44493.png", "mnist_small/val/1/60178.png"),
    ("mnist_small/train/1/56221.png", "mnist_small/val/1/60180.png"),
    ("mnist_small/train/1/10537.png", "mnist_small/val/1/65013.png"),
    ("mnist_small/train/1/40071.png", "mnist_small/val/1/66044.png"),
    ("mnist_small/val/1/60754.png", "mnist_small/val/1/60920.png"),
    ("mnist_small/train/1/46141.png", "mnist_small/val/1/67091.png"),
    ("clothing_small/val/t-shirt/aa6bb957-1ab8-4590-80d8-e9d825ffd6ff.jpg",
     "clothing_small/val/t-shirt/dc4aa5ce-a18e-41d5-89fd-16424e3dda50.jpg"),
    ("clothing_small/train/t-shirt/81134ec7-58c1-4d16-bf25-aac145860e5d.jpg",
     "clothing_small/val/t-shirt/3861b881-90d1-446d-ad1a-8b93e96dc935.jpg"),
    ("clothing_small/train/t-shirt/47438a63-16ff-4384-997f-c2e919baf86a.jpg",
     "clothing_small/val/t-shirt/7faa589f-aa4d-4402-84cf-520138c45db1.jpg"),
    ("clothing_small/train/pants/69c9f814-934a-47b7-a3d5-d107401207ff.jpg",
     "clothing_small/val/pants/d0fcfc1e-b1ae-43c9-ac0b-c4f65467756e.jpg"),
    ("clothing_small/val/t-shirt/06de9ebd-be39-4cc6-aea7-1d047ccf1a52.jpg",
     "clothing_small/val/t-shirt/76f8420a-bcea-4bb8-a049-befa05315470.jpg"),
    ("hymenoptera_data/train/bees/2452236943_255bfd9e58.jpg", "hymenoptera_data/val/bees/2407809945_fb525ef54d.jpg"),
    ("hymenoptera_data/train/ants/384191229_5779cf591b.jpg", "hymenoptera_data/train/ants/386190770_672743c9a7.jpg"),
    ("hymenoptera_data/train/bees/2962405283_22718d9617.jpg", "hymenoptera_data/val/bees/abeja.jpg"),
]
# Demo textures (seed 0, 100 a class): same pattern and period, different colours or phase.
DEMO_DIFFERENT = [("hstripes/hstripes_068.jpg", "hstripes/hstripes_098.jpg"),
                  ("vstripes/vstripes_065.jpg", "vstripes/vstripes_099.jpg"),
                  ("vstripes/vstripes_080.jpg", "vstripes/vstripes_029.jpg"),
                  ("hstripes/hstripes_056.jpg", "hstripes/hstripes_004.jpg")]


def _features():
    from ftui.doctor import backbone_features

    fn, _ = backbone_features("mobilenet_v2", str(SHARED_WEIGHTS))
    return fn


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Records (+ embeddings) of planted copies and hard different pairs, and the labelled pair sets."""
    if not SHARED_WEIGHTS.is_file() or not DATA.is_dir():
        pytest.skip("../shared data and weights not present")
    from ftui.data.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("dups")
    sources = [(Path(p), Path(p).parent.name) for name in ("hymenoptera_data", "clothing_small")
               for p in sorted(glob.glob(str(DATA / name / "train" / "*" / "*.jp*g")))[::9][:14]]
    planted = plant_copies(sources, root / "planted")
    demo = make_demo_dataset(root / "demo", per_class=100)
    hard = [(str(DATA / a), str(DATA / b)) for a, b in HARD_DIFFERENT]
    hard += [(str(demo / a), str(demo / b)) for a, b in DEMO_DIFFERENT]
    entries = [(a, 0, "train") for a, _, _ in planted] + [(b, 0, "val") for _, b, _ in planted]
    entries += [(p, 1, "train") for pair in hard for p in pair]
    records, feats = scan(entries, feature_fn=_features())
    return records, feats, {tuple(sorted(p[:2])) for p in planted}, {tuple(sorted(p)) for p in hard}


def _flagged_pairs(result) -> set[tuple[str, str]]:
    near = result.table[result.table["kind"] == "near"]
    return {tuple(sorted(pair)) for _, g in near.groupby("group") for pair in itertools.combinations(g["path"], 2)}


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("with_embeddings", [True, False])
def test_planted_copies_all_found_as_leakage_and_different_photos_never_flagged(sample, with_embeddings):
    records, feats, copies, different = sample
    result = check_duplicates(records, ["a", "b"], feats if with_embeddings else None)
    flagged = _flagged_pairs(result)
    assert copies <= flagged, f"missed planted copies: {copies - flagged}"  # recall 1.0
    precision = len(flagged & copies) / len(flagged)
    assert precision >= 0.95 and not flagged & different, flagged - copies
    near = result.table[result.table["kind"] == "near"]
    assert set(near["scope"]) == {LEAKAGE} and set(near["level"]) == {"error"}
    assert result.stats["method"].startswith("no pretrained") != with_embeddings
    if not with_embeddings:
        assert "stricter" in result.summary


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("name", ["hymenoptera_data", "clothing_small", "mnist_small"])
def test_real_sets_flag_no_near_duplicates_even_on_pixels_alone(name):
    if not (DATA / name).is_dir():
        pytest.skip(f"../shared/data/{name} not present")
    from ftui.data.datasets import load_dataset

    ds = load_dataset(DATA / name)
    records, _ = scan([(i.path, i.label, i.split) for i in ds.items])
    assert near_duplicate_pairs([r for r in records if r.ok]) == []


def _photo(rng: np.random.Generator, size=(120, 90)) -> Image.Image:
    """A 'photo' of a dark blob on a plain white background (the case that fooled hashes)."""
    pixels = np.full((size[1], size[0], 3), 245, dtype=np.float64)
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    for _ in range(3):
        cy, cx, r = rng.uniform(20, size[1] - 20), rng.uniform(20, size[0] - 20), rng.uniform(8, 18)
        pixels[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(40, 120, size=3)
    pixels += rng.normal(0, 3, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_plain_background_photos_are_not_near_duplicates_but_a_mirrored_crop_is(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"p{i}.png")
        _photo(rng).save(paths[-1])
    original = Image.open(paths[0])
    copy = ImageOps.mirror(original.crop((6, 4, 120, 90))).resize((80, 57))
    copy.save(tmp_path / "copy.jpg", quality=70)
    records, _ = scan([(str(p), 0, "train") for p in paths] + [(str(tmp_path / "copy.jpg"), 0, "val")])
    pairs = near_duplicate_pairs(records)
    assert [(i, j) for i, j, _ in pairs] == [(0, 12)]


def test_groups_are_cliques_never_chains():
    # a~b, b~c, but not a~c: two groups; d~e~f all linked: one group of three.
    pairs = [(0, 1, 0.99), (1, 2, 0.98), (3, 4, 0.97), (4, 5, 0.97), (3, 5, 0.96)]
    assert sorted(cliques(pairs)) == [[0, 1], [1, 2], [3, 4, 5]]
