"""The app's preselected training settings: from scratch without pretrained weights, fine-tune with them."""

from __future__ import annotations

from ftui.config import TrainConfig
from ftui.data.demo import DEMO_RECIPE
from ftui.ui.model_step import WEIGHTS_FILE, WEIGHTS_IMAGENET, WEIGHTS_NONE
from ftui.ui.presets import PRETRAINED, SCRATCH, image_size_for, preset_for


def test_random_init_gets_the_from_scratch_recipe_with_batchnorm_learning():
    p = preset_for(WEIGHTS_NONE)
    assert (p.recipe, p.bn_mode, p.groups, p.optimizer, p.scheduler) == ("plain", "train", "all", "adamw", "onecycle")
    # The demo recipe's measured rate and epochs (ftui/data/demo.py DEMO_RECIPE).
    assert (p.lr, p.epochs) == (DEMO_RECIPE["lr"], DEMO_RECIPE["epochs"])


def test_pretrained_weights_get_the_fine_tune_recipe_with_frozen_batchnorm():
    for choice in (WEIGHTS_IMAGENET, WEIGHTS_FILE):
        p = preset_for(choice)
        # Every layer after the fitted head: "head" alone stayed well below it in bench-recipes.
        assert (p.recipe, p.bn_mode, p.groups, p.scheduler) == ("fine_tune", "frozen", "all", "onecycle")


def test_hint_says_when_random_init_is_for_lack_of_weights():
    offline = preset_for(WEIGHTS_NONE, offline_no_weights=True)
    assert "No pretrained weights on this machine" in offline.hint
    # The hint names the rate the form gets (it once said 2e-3 beside a 0.004 box).
    assert f"AdamW at {offline.lr:g}" in offline.hint and f"AdamW at {SCRATCH.lr:g}" in SCRATCH.hint
    assert "on this machine" not in preset_for(WEIGHTS_NONE).hint
    assert "native resolution" in preset_for(WEIGHTS_IMAGENET, offline_no_weights=True).hint


def test_only_the_demo_from_scratch_keeps_the_small_image_size():
    assert image_size_for(WEIGHTS_NONE, is_demo=True, native=224, min_size=32, demo_size=64) == 64
    assert image_size_for(WEIGHTS_NONE, is_demo=False, native=224, min_size=32, demo_size=64) == 224
    assert image_size_for(WEIGHTS_IMAGENET, is_demo=True, native=224, min_size=32, demo_size=64) == 224
    # A backbone that cannot take 64 px gets its minimum.
    assert image_size_for(WEIGHTS_NONE, is_demo=True, native=299, min_size=75, demo_size=64) == 75


def test_both_presets_make_a_valid_config():
    for p in (SCRATCH, PRETRAINED):
        TrainConfig(data="x", recipe=p.recipe, bn_mode=p.bn_mode, train_groups=p.groups, optimizer=p.optimizer,
                    lr=p.lr, scheduler=p.scheduler, batch_size=p.batch_size).validate()
