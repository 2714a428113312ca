"""Which training defaults the app preselects: from-scratch settings without pretrained weights, else fine-tune.

Measured on a 2-core CPU (see the README): with no pretrained weights a small net trained from random init at
64 px, all layers, BatchNorm learning, AdamW 2e-3 with one-cycle, learns the demo in well under a minute;
with ImageNet weights the usual recipe (head first, BatchNorm frozen, native resolution) is better.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftui.data.demo import DEMO_RECIPE

# The Model step's weight sources (here, below the Model step, so both it and these presets can use them).
WEIGHTS_IMAGENET = "ImageNet (torchvision)"
WEIGHTS_FILE = "Weights file"
WEIGHTS_NONE = "Random init"
WEIGHTS_CHOICES = [WEIGHTS_IMAGENET, WEIGHTS_FILE, WEIGHTS_NONE]


@dataclass(frozen=True)
class Preset:
    """The Train step's values for one starting point, and the hint that explains them."""

    recipe: str
    bn_mode: str
    groups: str  # "all" or "head", the Model step's preset button
    optimizer: str
    lr: float
    scheduler: str
    batch_size: int
    epochs: int
    hint: str


SCRATCH = Preset(recipe="plain", bn_mode="train", groups="all", optimizer="adamw", lr=DEMO_RECIPE["lr"],
                 scheduler="onecycle", batch_size=16, epochs=DEMO_RECIPE["epochs"],
                 hint=f"No pretrained weights chosen: training a small net from scratch (all layers, "
                      f"BatchNorm learning, one-cycle AdamW at {DEMO_RECIPE['lr']:g}).")
PRETRAINED = Preset(recipe="fine_tune", bn_mode="frozen", groups="all", optimizer="adamw", lr=1e-3,
                    scheduler="onecycle", batch_size=16, epochs=5,
                    # Short and plain (it was 12 lines of jargon above the Train button); why this is the
                    # default, measured: `python -m ftui bench-recipes`, docs/recipes.md (clothing photos at
                    # 224 px: head alone 0.78, this recipe 0.86 val accuracy, mean of 3 seeds).
                    hint="Pretrained weights: the new last layer learns first, then the whole network is "
                         "fine-tuned gently at the model's native resolution, and the version that does best on "
                         "your validation images is kept.")


def preset_for(weights_choice: str, offline_no_weights: bool = False) -> Preset:
    """The preset for a Model-step weights choice; the hint says when it is random init for lack of weights."""
    if weights_choice != WEIGHTS_NONE:
        return PRETRAINED
    if offline_no_weights:
        return Preset(**{**SCRATCH.__dict__, "hint": "No pretrained weights on this machine: training a small "
                         "net from scratch with BatchNorm learning (all layers, one-cycle AdamW at "
                         f"{SCRATCH.lr:g})."})
    return SCRATCH


def image_size_for(weights_choice: str, is_demo: bool, native: int, min_size: int, demo_size: int) -> int:
    """The demo from scratch keeps its small, fast size; pretrained weights and your own data get the native one."""
    if weights_choice == WEIGHTS_NONE and is_demo:
        return max(demo_size, min_size)
    return native
