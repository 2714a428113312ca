"""The generated train/val split keeps copies of one image in one split (no leakage by construction)."""

from __future__ import annotations

import shutil

import pytest
from PIL import ImageOps

from ftui.data.datasets import load_dataset
from ftui.data.splits import copy_groups
from tests.conftest import make_class_folder
from tests.test_doctor_duplicates import _photo


def _with_copies(root):
    import numpy as np

    make_class_folder(root, per_class=10)
    rng = np.random.default_rng(1)
    for k in range(3):
        photo = _photo(rng)
        photo.save(root / "red" / f"scene{k}.png")
        shutil.copy(root / "red" / f"scene{k}.png", root / "red" / f"scene{k}_same.png")
        photo.resize((80, 60)).save(root / "red" / f"scene{k}_small.jpg", quality=70)
        ImageOps.mirror(photo).save(root / "red" / f"scene{k}_mirror.jpg", quality=90)
    return root


def test_copies_form_one_group_and_different_images_stay_apart(tmp_path):
    root = _with_copies(tmp_path / "data")
    paths = sorted(str(p) for p in (root / "red").iterdir())
    groups = [sorted(paths[i].rsplit("/", 1)[1] for i in g) for g in copy_groups(paths)]
    for k in range(3):
        assert sorted([f"scene{k}.png", f"scene{k}_mirror.jpg", f"scene{k}_same.png", f"scene{k}_small.jpg"]) in groups
    assert sum(len(g) == 1 for g in groups) == 10  # the ten noise images: each on its own


@pytest.mark.parametrize("seed", range(6))
def test_generated_split_never_separates_copies(tmp_path, seed):
    root = _with_copies(tmp_path / "data")
    ds = load_dataset(root, val_fraction=0.3, seed=seed)
    split = {item.path.rsplit("/", 1)[1]: item.split for item in ds.items}
    for k in range(3):
        assert len({split[f"scene{k}{s}"] for s in (".png", "_same.png", "_small.jpg", "_mirror.jpg")}) == 1
    assert 0 < len(ds.split("val")) < len(ds.items)


def test_split_without_copies_is_unchanged_by_grouping(tmp_path):
    # All singletons: the same images go to val as a plain per-class shuffle would pick.
    import random

    root = make_class_folder(tmp_path / "plain", per_class=10)
    ds = load_dataset(root, val_fraction=0.2, seed=3)
    mine = sorted(str(p) for p in (root / "red").iterdir())
    random.Random("3:red").shuffle(mine)
    assert {i.path for i in ds.split("val") if ds.classes[i.label] == "red"} == set(mine[:2])
