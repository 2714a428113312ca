"""Multilabel and regression datasets written as real image files plus a CSV (tests of ftui's tasks).

Multilabel: each image is grey noise with a coloured square per label it has (red top-left, green top-right,
blue bottom-left), so a small net learns every label. Regression: a noisy grey field whose brightness is the
target (value = 100 x mean brightness), a property of the pixels, not of the file name.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

LABEL_COLOURS = {"red": ((200, 30, 30), (0, 0)), "green": ((30, 190, 40), (0, 1)), "blue": ((30, 40, 210), (1, 0))}


def write_label_image(path: Path, labels: list[str], seed: int, size: int = 32) -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.clip(110 + rng.integers(-30, 30, size=(size, size, 3)), 0, 255).astype(np.uint8)
    half = size // 2
    for name in labels:
        colour, (row, col) = LABEL_COLOURS[name]
        pixels[row * half:(row + 1) * half, col * half:(col + 1) * half] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def label_sets(n: int) -> list[list[str]]:
    """n label sets cycling over every subset of the three labels (the empty set included)."""
    names = list(LABEL_COLOURS)
    subsets = [list(c) for k in range(len(names) + 1) for c in itertools.combinations(names, k)]
    return [subsets[i % len(subsets)] for i in range(n)]


def make_multilabel_csv(root: Path, n: int = 48, size: int = 32, binary_columns: bool = False) -> Path:
    """root/images/*.png and root/labels.csv (path,labels with ';', or one 0/1 column per label)."""
    rows = []
    for i, labels in enumerate(label_sets(n)):
        write_label_image(root / "images" / f"m{i}.png", labels, seed=i, size=size)
        if binary_columns:
            rows.append({"path": f"images/m{i}.png", **{k: int(k in labels) for k in LABEL_COLOURS}})
        else:
            rows.append({"path": f"images/m{i}.png", "labels": ";".join(labels)})
    csv = root / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def write_value_image(path: Path, value: float, seed: int, size: int = 32) -> Path:
    """A noisy grey field of mean brightness value/100 (value in 0..100)."""
    rng = np.random.default_rng(seed)
    level = 255 * value / 100
    pixels = np.clip(level + rng.integers(-15, 15, size=(size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_regression_csv(root: Path, n: int = 48, size: int = 32) -> Path:
    """root/images/*.png and root/values.csv (path,value), values spread over 10..90."""
    rows = []
    rng = np.random.default_rng(1)
    for i in range(n):
        value = float(np.round(10 + 80 * rng.random(), 2))
        write_value_image(root / "images" / f"r{i}.png", value, seed=i, size=size)
        rows.append({"path": f"images/r{i}.png", "value": value})
    csv = root / "values.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv
