"""Shared fixtures: tiny real image folders written on the fly, and the path to ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Keep torch from oversubscribing the 2-core CI machine when several things run at once.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# ../shared beside the checkout; FTUI_SHARED names another place (scripts/gpu_check.sh uses ./shared).
SHARED = Path(os.environ.get("FTUI_SHARED") or Path(__file__).resolve().parents[1].parent / "shared").resolve()
SHARED_DATA = SHARED / "data" / "hymenoptera_data"
SHARED_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_dequantized.pth"

# Classes that a small net tells apart in a few steps: a dominant colour plus noise.
CLASS_COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def write_class_image(path: Path, colour: tuple[int, int, int], seed: int, size: int = 40) -> Path:
    """A real JPEG/PNG on disk: a noisy field of one colour, different for every seed."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-40, 40, size=(size, size, 3))
    pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_class_folder(root: Path, per_class: int = 6, classes=None, size: int = 40, ext: str = "jpg") -> Path:
    """root/<class>/<i>.<ext> for each class; returns root."""
    classes = classes or list(CLASS_COLOURS)
    for ci, name in enumerate(classes):
        colour = CLASS_COLOURS.get(name, ((ci * 80) % 256, (ci * 150) % 256, (ci * 40) % 256))
        for i in range(per_class):
            write_class_image(root / name / f"{name}_{i}.{ext}", colour, seed=ci * 1000 + i, size=size)
    return root


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """Three colour classes, 6 JPEGs each, in class subfolders (no train/val split)."""
    return make_class_folder(tmp_path / "colours")


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """train/ and val/ folders of the three colour classes."""
    root = tmp_path / "split"
    make_class_folder(root / "train", per_class=8)
    for ci, name in enumerate(CLASS_COLOURS):
        for i in range(3):
            write_class_image(root / "val" / name / f"v{i}.png", CLASS_COLOURS[name], seed=50_000 + ci * 10 + i)
    return root


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/hymenoptera_data not present")
    return SHARED_DATA


@pytest.fixture
def shared_weights() -> Path:
    if not SHARED_WEIGHTS.is_file():
        pytest.skip("../shared/weights/mobilenet_v2_imagenet_dequantized.pth not present")
    return SHARED_WEIGHTS
