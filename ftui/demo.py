"""The built-in demo dataset: generated shapes, so the app works on a fresh machine with no data or network.

Four classes (circle, square, triangle, cross) drawn with random colours, sizes, positions, rotations,
gradient backgrounds, distractor strokes and noise. Colour and position say nothing about the class, so
a model has to learn shape; a small CNN still learns it in a few epochs.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "square", "triangle", "cross")
IMAGE_SIZE = 96
DEMO_VERSION = 1
_MARKER = ".ftui-demo.json"
# Example images for the Predict step come from a seed stream training never uses.
EXAMPLE_SEED = 1_000_003
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"


def default_demo_dir() -> Path:
    """Where the app keeps its demo dataset: $FTUI_HOME/demo_shapes, else ~/.cache/ftui/demo_shapes."""
    home = os.environ.get("FTUI_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ftui"
    return Path(home) / "demo_shapes"


def draw_shape(shape: str, rng: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
    """One RGB image of `shape` with random colours, placement, rotation, background and noise."""
    if shape not in CLASSES:
        raise ValueError(f"unknown demo shape {shape!r}; choose from {', '.join(CLASSES)}")
    background = _background(rng, size)
    colour = _contrasting_colour(rng, np.asarray(background).reshape(-1, 3).mean(axis=0))
    # Draw the mask at 4x and shrink it: smooth edges without depending on PIL's antialiasing.
    scale = 4
    mask = Image.new("L", (size * scale, size * scale), 0)
    radius = rng.uniform(0.22, 0.38) * size
    margin = radius * 0.8
    centre = rng.uniform(margin, size - margin, 2)
    angle = rng.uniform(0, 2 * math.pi)
    _draw_mask(ImageDraw.Draw(mask), shape, centre * scale, radius * scale, angle, rng)
    mask = mask.resize((size, size), Image.LANCZOS)
    image = Image.composite(Image.new("RGB", (size, size), colour), background, mask)
    _distractors(ImageDraw.Draw(image), rng, size)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    noise = rng.normal(0, rng.uniform(2, 10), (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def make_demo_dataset(folder: str | Path, per_class: int = 100, seed: int = 0) -> Path:
    """Write folder/<shape>/<shape>_NNN.jpg, per_class images per class, the same for the same seed."""
    if per_class < 2:
        raise ValueError(f"per_class must be >= 2 (one train and one val image), got {per_class}")
    folder = Path(folder)
    for class_index, shape in enumerate(CLASSES):
        class_dir = folder / shape
        class_dir.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, class_index, i])
            draw_shape(shape, rng).save(class_dir / f"{shape}_{i:03d}.jpg", quality=92)
        # A previous, larger demo leaves higher numbers behind; remove only files this function names.
        for old in class_dir.glob(f"{shape}_*.jpg"):
            match = re.fullmatch(rf"{shape}_(\d+)\.jpg", old.name)
            if match and int(match.group(1)) >= per_class:
                old.unlink()
    return folder


def ensure_demo_dataset(folder: str | Path | None = None, per_class: int = 100, seed: int = 0) -> Path:
    """The demo dataset's folder, generated on first use only (a marker file records what is there)."""
    folder = Path(folder) if folder is not None else default_demo_dir()
    marker = folder / _MARKER
    wanted = {"version": DEMO_VERSION, "per_class": per_class, "seed": seed, "classes": list(CLASSES)}
    try:
        if json.loads(marker.read_text()) == wanted:
            return folder
    except (OSError, ValueError):
        pass
    make_demo_dataset(folder, per_class=per_class, seed=seed)
    marker.write_text(json.dumps(wanted))
    return folder


def write_examples(folder: str | Path = EXAMPLES_DIR) -> list[Path]:
    """One example image per class, from a seed stream the demo dataset never uses (for the Predict step)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for class_index, shape in enumerate(CLASSES):
        path = folder / f"example_{shape}.jpg"
        draw_shape(shape, np.random.default_rng([EXAMPLE_SEED, class_index])).save(path, quality=92)
        paths.append(path)
    return paths


def example_images() -> list[str]:
    """Paths of the committed example images that exist."""
    return [str(p) for p in sorted(EXAMPLES_DIR.glob("example_*.jpg"))]


# --- drawing -------------------------------------------------------------------------------------------
def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A linear gradient between two nearby random colours in a random direction."""
    start = rng.integers(0, 256, 3)
    end = np.clip(start + rng.integers(-70, 71, 3), 0, 255)
    theta = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1)
    t = (xs * math.cos(theta) + ys * math.sin(theta))
    t = (t - t.min()) / (np.ptp(t) or 1.0)
    pixels = start[None, None, :] * (1 - t[..., None]) + end[None, None, :] * t[..., None]
    return Image.fromarray(pixels.astype(np.uint8))


def _contrasting_colour(rng: np.random.Generator, against: np.ndarray) -> tuple[int, int, int]:
    """A random colour far enough from the background's mean to be visible."""
    colour = rng.integers(0, 256, 3)
    for _ in range(50):
        if np.linalg.norm(colour - against) > 160:
            break
        colour = rng.integers(0, 256, 3)
    return int(colour[0]), int(colour[1]), int(colour[2])


def _draw_mask(draw: ImageDraw.ImageDraw, shape: str, centre: np.ndarray, radius: float, angle: float,
               rng: np.random.Generator) -> None:
    """Fill the shape's pixels with 255 on a mask."""
    cx, cy = centre
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        return
    if shape == "square":
        corners = [(radius, angle + k * math.pi / 2 + math.pi / 4) for k in range(4)]
    elif shape == "triangle":
        corners = [(radius, angle + k * 2 * math.pi / 3) for k in range(3)]
    else:  # cross: a plus sign made of two bars
        half = radius * rng.uniform(0.25, 0.4)
        outline = [(half, radius), (half, half), (radius, half)]
        corners = []
        for k in range(4):
            for x, y in outline:
                corners.append((math.hypot(x, y), math.atan2(y, x) + k * math.pi / 2 + angle))
        # The loop gives each arm's points; order them around the centre to get one simple polygon.
        corners.sort(key=lambda rc: rc[1] % (2 * math.pi))
    draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in corners], fill=255)


def _distractors(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A few thin random strokes and dots, so the task is not just 'find the blob'."""
    for _ in range(int(rng.integers(0, 3))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            length, theta = rng.uniform(0.1, 0.3) * size, rng.uniform(0, 2 * math.pi)
            draw.line((x, y, x + length * math.cos(theta), y + length * math.sin(theta)), fill=colour,
                      width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(1.5, 4)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
