"""Batched augmentation (the GPU data path) on CPU tensors against torchvision's per-image pipeline."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ftui.config import AugConfig
from ftui.data import augment, batchaug
from ftui.data.batchaug import BatchAugment

SIZE, RESIZE = 32, 36


def _images(n: int, seed: int = 0) -> list[torch.Tensor]:
    """uint8 CHW images of mixed sizes and aspects, smooth enough that resizing is well defined."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(RESIZE, 48), (60, RESIZE), (RESIZE, RESIZE), (RESIZE, 100), (50, 70)]
    out = []
    for i in range(n):
        h, w = shapes[i % len(shapes)]
        coarse = torch.rand((1, 3, h // 4 + 1, w // 4 + 1), generator=g)
        out.append((torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")[0] * 255)
                   .round().to(torch.uint8))
    return out


def test_crop_boxes_are_per_sample_inside_the_image_and_follow_the_scale_and_aspect_ranges():
    sizes = [(200, 300)] * 400
    boxes = batchaug.crop_boxes(sizes, (0.3, 0.9), torch.Generator().manual_seed(1))
    assert len(set(boxes)) > 390  # every sample draws its own crop
    fractions = []
    for top, left, h, w in boxes:
        assert 0 <= top and top + h <= 200 and 0 <= left and left + w <= 300
        fractions.append(h * w / (200 * 300))
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
    assert 0.28 <= min(fractions) and max(fractions) <= 0.92
    # Same distribution as torchvision's own sampler (mean area fraction of 400 draws).
    torch.manual_seed(1)
    rrc = v2.RandomResizedCrop(10, scale=(0.3, 0.9))
    image = torch.zeros(3, 200, 300)
    tv = [rrc.make_params([image]) for _ in range(400)]
    tv_mean = sum(p["height"] * p["width"] for p in tv) / (400 * 200 * 300)
    assert abs(sum(fractions) / 400 - tv_mean) < 0.03


def test_crop_falls_back_to_the_centre_when_no_try_fits():
    # A 10x1000 strip: no 3/4..4/3 crop of 30%+ of the area fits, torchvision centres a ratio-capped box.
    (top, left, h, w), = batchaug.crop_boxes([(10, 1000)], (0.9, 1.0), torch.Generator().manual_seed(0))
    assert (h, w) == (10, round(10 * 4 / 3)) and top == 0 and left == (1000 - w) // 2


@pytest.mark.parametrize("augmented", [False, True])
def test_without_random_steps_the_batch_equals_the_per_image_pipeline(augmented):
    images = _images(10)
    batch = BatchAugment(AugConfig.none(), SIZE, resize_size=RESIZE)
    out = batch(images) if augmented else batch.eval_batch(images)
    pipeline = (augment.train_transform(AugConfig.none(), SIZE, resize_size=RESIZE) if augmented
                else augment.eval_transform(SIZE, RESIZE))
    ref = torch.stack([pipeline(im) for im in images])
    assert out.shape == ref.shape == (10, 3, SIZE, SIZE) and out.dtype == torch.float32
    # Normalised units: one uint8 step is 1/255/0.225 ~ 0.017; the per-image pipeline rounds to uint8.
    assert (out - ref).abs().max() < 0.05


def test_hflip_is_drawn_per_sample_and_seeded():
    images = [_images(1)[0]] * 32
    aug = AugConfig.none()
    aug.hflip = True
    batch = BatchAugment(aug, SIZE, resize_size=RESIZE)
    out = batch(images, torch.Generator().manual_seed(3))
    plain = batch.eval_batch(images[:1])[0]
    flipped = [bool(torch.allclose(o, plain.flip(-1), atol=1e-5)) for o in out]
    same = [bool(torch.allclose(o, plain, atol=1e-5)) for o in out]
    assert all(f or s for f, s in zip(flipped, same)) and 5 < sum(flipped) < 27
    again = batch(images, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


def test_rotation_matches_torchvision_rotate_per_sample():
    x = batchaug.crop_resize(_images(3), [(0, 0, RESIZE, RESIZE)] * 3, SIZE) / 255
    angles = torch.tensor([0.0, 30.0, -75.0])
    ours = batchaug.rotate(x, angles)
    for i, angle in enumerate(angles.tolist()):
        ref = TF.rotate(x[i], angle)
        # Nearest-neighbour sampling may pick the neighbouring pixel on exact ties: nearly all agree.
        close = (ours[i] - ref).abs() < 1e-4
        assert close.float().mean() > 0.97, angle


def test_color_jitter_hue_grayscale_and_blur_match_the_torchvision_functions():
    x = batchaug.crop_resize(_images(4), [(0, 0, RESIZE, RESIZE)] * 4, SIZE) / 255
    factors = torch.tensor([[1.2, 0.8, 1.1], [0.9, 1.2, 0.7], [1.0, 1.0, 1.0], [1.1, 1.1, 1.3]])
    order = torch.tensor([[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]])
    ours = batchaug.color_jitter(x, factors, order)
    fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for i in range(4):
        ref = x[i]
        for op in order[i].tolist():
            ref = fns[op](ref, float(factors[i, op]))
        assert torch.allclose(ours[i], ref, atol=1e-5)
    turns = torch.tensor([0.02, -0.05, 0.0, 0.1])
    hue = batchaug.rotate_hue(x, turns)
    for i in range(4):
        assert torch.allclose(hue[i], augment.rotate_hue(x[i], float(turns[i])), atol=1e-5)
    assert torch.allclose(batchaug.grayscale(x)[:, 0], TF.rgb_to_grayscale(x)[:, 0], atol=1e-5)
    sigmas = torch.tensor([0.5, 1.0, 1.5, 0.2])
    blurred = batchaug.gaussian_blur(x, sigmas, 7)
    for i in range(4):
        assert torch.allclose(blurred[i], TF.gaussian_blur(x[i], [7, 7], [float(sigmas[i])] * 2), atol=1e-5)


def test_erasing_boxes_follow_random_erasing_ranges_and_zero_only_masked_samples():
    boxes = batchaug.erase_boxes(500, 64, torch.Generator().manual_seed(0))
    found = boxes[boxes[:, 2] > 0]
    area = (found[:, 2] * found[:, 3]).double() / 64 ** 2
    assert len(found) > 400 and area.min() >= 0.015 and area.max() <= 0.34
    assert ((found[:, 0] + found[:, 2]) <= 64).all() and ((found[:, 1] + found[:, 3]) <= 64).all()
    x = torch.ones(4, 3, 64, 64)
    box = torch.tensor([[4, 8, 10, 12]] * 4)
    out = batchaug.erase(x, box, torch.tensor([True, False, True, False]))
    assert out[0, :, 4:14, 8:20].abs().sum() == 0 and out[0].sum() == 3 * (64 * 64 - 120)
    assert torch.equal(out[1], x[1])


def test_default_augmentation_matches_the_per_image_pipeline_in_shape_range_and_statistics():
    images = _images(60, seed=5)
    aug = AugConfig(rotation=True, grayscale=True, blur=True, random_erasing=True)
    out = BatchAugment(aug, SIZE, resize_size=RESIZE)(images, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    pipeline = augment.train_transform(aug, SIZE, resize_size=RESIZE)
    ref = torch.stack([pipeline(im) for im in images for _ in range(3)])
    assert out.shape == (60, 3, SIZE, SIZE) and out.dtype == torch.float32 and torch.isfinite(out).all()
    lo = (0 - max(augment.IMAGENET_MEAN)) / min(augment.IMAGENET_STD)
    hi = (1 - min(augment.IMAGENET_MEAN)) / min(augment.IMAGENET_STD)
    assert out.min() >= lo - 1e-4 and out.max() <= hi + 1e-4
    # Same per-channel mean and spread as torchvision's pipeline on the same images (random draws differ).
    for dims in ((0, 2, 3),):
        assert torch.allclose(out.mean(dims), ref.mean(dims), atol=0.12)
        assert torch.allclose(out.std(dims), ref.std(dims), rtol=0.15)
    assert math.isclose(float((out == 0).float().mean()), float((ref == 0).float().mean()), abs_tol=0.03)


def test_the_same_image_gets_different_parameters_in_one_batch():
    images = [_images(1)[0]] * 16
    out = BatchAugment(AugConfig(), SIZE, resize_size=RESIZE)(images, torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten()[:50].tolist()) for o in out}
    assert len(distinct) == 16
