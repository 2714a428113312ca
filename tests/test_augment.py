"""ftui.data.augment: pipelines' output shape and normalisation, seeded previews, the fast hue shift."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

from ftui.config import AugConfig, ConfigError
from ftui.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomHue,
    eval_transform,
    preview,
    rotate_hue,
    to_pil,
    train_transform,
)

EVERYTHING = AugConfig(vflip=True, rotation=True, grayscale=True, blur=True, random_erasing=True)


def _photo(width: int = 80, height: int = 60, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_eval_transform_gives_normalised_square_of_the_input_size():
    out = eval_transform(32, 40)(_photo())
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert type(out) is torch.Tensor


def test_eval_transform_normalises_with_the_given_mean_and_std():
    grey = Image.new("RGB", (50, 40), (51, 102, 204))
    out = eval_transform(16, 20, mean=(0.2, 0.4, 0.8), std=(0.5, 0.5, 0.25))(grey)
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-5)
    out = eval_transform(16, 20)(grey)
    expected = (torch.tensor([51, 102, 204]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[:, 8, 8], expected.float(), atol=1e-5)


def test_eval_transform_treats_pil_and_uint8_tensor_alike():
    photo = _photo()
    tensor = torch.from_numpy(np.array(photo)).permute(2, 0, 1)
    tf = eval_transform(32, 36)
    assert torch.equal(tf(photo), tf(tensor))


@pytest.mark.parametrize("aug", [AugConfig(), AugConfig.none(), EVERYTHING], ids=["default", "none", "all"])
def test_train_transform_output_is_a_normalised_float_square(aug):
    torch.manual_seed(0)
    out = train_transform(aug, 48)(_photo(90, 70))
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32 and type(out) is torch.Tensor
    assert out.min() >= (0 - max(IMAGENET_MEAN)) / min(IMAGENET_STD) - 1e-4


def test_train_transform_with_everything_off_is_the_eval_transform():
    photo = _photo()
    assert torch.equal(train_transform(AugConfig.none(), 32, resize_size=40)(photo), eval_transform(32, 40)(photo))


def test_train_transform_refuses_an_invalid_config():
    with pytest.raises(ConfigError, match="crop scale"):
        train_transform(AugConfig(crop_scale_min=0.9, crop_scale_max=0.5), 32)


def test_blur_works_on_images_smaller_than_its_kernel():
    torch.manual_seed(0)
    aug = AugConfig.none()
    aug.blur, aug.blur_sigma_max = True, 10.0
    out = train_transform(aug, 16)(_photo(20, 20))
    assert out.shape == (3, 16, 16)


def test_random_erasing_blanks_a_patch_to_the_mean_colour():
    aug = AugConfig.none()
    aug.random_erasing, aug.erasing_p = True, 1.0
    torch.manual_seed(0)
    out = train_transform(aug, 32, resize_size=32)(Image.new("RGB", (32, 32), (255, 255, 255)))
    assert (out == 0).all(dim=0).sum() > 0


def test_preview_returns_n_viewable_images_of_the_training_size():
    images = preview(_photo(), AugConfig(), n=3, seed=0, size=40)
    assert len(images) == 3
    assert all(im.mode == "RGB" and im.size == (40, 40) for im in images)


def test_preview_is_the_same_for_the_same_seed_and_differs_for_another():
    photo = _photo()
    a = [np.array(im) for im in preview(photo, EVERYTHING, n=4, seed=7, size=32)]
    b = [np.array(im) for im in preview(photo, EVERYTHING, n=4, seed=7, size=32)]
    c = [np.array(im) for im in preview(photo, EVERYTHING, n=4, seed=8, size=32)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(a[0], a[1])  # the draws differ from each other


def test_preview_leaves_the_global_rng_as_it_was():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    preview(_photo(), AugConfig(), n=2, seed=0, size=32)
    assert torch.equal(torch.rand(3), expected)


def test_preview_without_augmentation_shows_the_center_crop():
    photo = Image.new("RGB", (64, 48), (10, 200, 30))
    photo.paste((250, 250, 250), (24, 16, 40, 32))  # a white square in the middle
    [shown] = preview(photo, AugConfig.none(), n=1, seed=0, size=32, resize_size=48)
    pixels = np.array(shown).astype(int)
    assert np.abs(pixels[16, 16] - [250, 250, 250]).max() <= 2
    assert np.abs(pixels[1, 1] - [10, 200, 30]).max() <= 2


def test_preview_reads_an_image_file(tmp_path):
    path = tmp_path / "p.png"
    _photo().save(path)
    assert len(preview(path, AugConfig(), n=2, seed=0, size=32)) == 2


def test_to_pil_undoes_normalisation():
    photo = _photo(32, 32)
    tensor = eval_transform(32, 32)(photo)
    assert np.abs(np.array(to_pil(tensor)).astype(int) - np.array(photo).astype(int)).max() <= 1


def test_hue_rotation_keeps_greys_and_a_third_turn_maps_red_to_green():
    grey = torch.full((3, 4, 4), 128, dtype=torch.uint8)
    assert torch.equal(rotate_hue(grey, 0.2), grey)
    red = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)
    assert rotate_hue(red, 1 / 3).flatten().tolist() == [0, 255, 0]
    assert torch.equal(rotate_hue(red, 0.0), red)


def test_hue_rotation_moves_hsv_hue_by_the_factor():
    rng = np.random.default_rng(0)
    pixels = rng.integers(60, 200, (3, 1, 200)).astype(np.uint8)
    shifted = rotate_hue(torch.from_numpy(pixels), 0.05).numpy()
    moves = []
    for before, after in zip(pixels[:, 0, :].T / 255, shifted[:, 0, :].T / 255):
        hue0, saturation, _ = colorsys.rgb_to_hsv(*before)
        if saturation > 0.2:  # hue is ill-defined near grey
            moves.append((colorsys.rgb_to_hsv(*after)[0] - hue0 + 0.5) % 1 - 0.5)
    assert len(moves) > 100
    assert np.allclose(moves, 0.05, atol=0.01)


def test_random_hue_works_on_float_images_and_rejects_bad_strength():
    torch.manual_seed(0)
    from torchvision import tv_tensors

    image = tv_tensors.Image(torch.rand(3, 8, 8))
    out = RandomHue(0.1)(image)
    assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="hue"):
        RandomHue(0.7)
