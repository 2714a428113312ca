"""ftui.data.imagecache: decode once at the cache size, then serve (transformed tensor, label) pairs."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ftui.bench.pipeline import measure_pipeline
from ftui.config import AugConfig
from ftui.data.augment import eval_transform, train_transform
from ftui.data.datasets import Item, load_dataset
from ftui.data.imagecache import (
    DecodedImageCache,
    ImageTensorDataset,
    decode_for_cache,
    resize_for_cache,
)


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_shorter_side_becomes_the_resize_size_keeping_aspect():
    out = resize_for_cache(_noise(120, 60), 40)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (3, 40, 80)
    assert tuple(resize_for_cache(_noise(30, 45), 40).shape) == (3, 60, 40)  # small images grow


def test_panorama_is_centre_cropped_to_the_aspect_cap():
    image = Image.new("RGB", (400, 40), (0, 0, 255))
    image.paste((255, 0, 0), (180, 0, 220, 40))  # red band in the middle
    out = resize_for_cache(image, 20, max_aspect=3.0)
    assert tuple(out.shape) == (3, 20, 60)
    assert out[:, 10, 30].tolist() == [255, 0, 0]


def test_jpeg_decoded_at_draft_scale_still_reaches_the_resize_size(tmp_path):
    path = tmp_path / "big.jpg"
    _noise(640, 480).save(path, "JPEG")
    assert tuple(decode_for_cache(path, 60).shape) == (3, 60, 80)


def test_cache_holds_every_item_once(class_folder):
    ds = load_dataset(class_folder)
    seen: list[float] = []
    cache = DecodedImageCache.build(ds.items + ds.items[:3], 32, progress=lambda f, m: seen.append(f))
    assert len(cache) == len(ds.items) == 18
    assert seen[-1] == 1.0
    tensor = cache.get(ds.items[0].path)
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == (3, 32, 32)
    assert cache.nbytes == 18 * 3 * 32 * 32
    cache.load(ds.items)  # already there: nothing decoded again
    assert len(cache) == 18


def test_file_that_breaks_after_judging_is_left_out_with_its_reason(class_folder):
    ds = load_dataset(class_folder)
    broken = ds.items[0]
    open(broken.path, "wb").close()
    cache = DecodedImageCache.build(ds.items, 32)
    assert cache.failed == {broken.path: "zero-byte file"}
    data = ImageTensorDataset(cache, ds.items)
    assert len(data) == 17 and data.dropped == [broken.path]


def test_dataset_returns_transformed_tensor_and_label(class_folder):
    ds = load_dataset(class_folder)
    cache = DecodedImageCache.build(ds.split("train"), 36)
    data = ImageTensorDataset(cache, ds.split("train"), train_transform(AugConfig(), 32, resize_size=36))
    image, label = data[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert label == ds.split("train")[0].label
    images, labels = next(iter(DataLoader(data, batch_size=4, shuffle=False)))
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == data.labels[:4]


def test_untransformed_dataset_gives_the_cached_uint8_tensor(class_folder):
    ds = load_dataset(class_folder)
    cache = DecodedImageCache.build(ds.items, 24)
    image, _ = ImageTensorDataset(cache, [(ds.items[0].path, 2)])[0]
    assert image is cache.get(ds.items[0].path)


def test_eval_on_cached_tensor_matches_eval_on_the_original(tmp_path):
    path = tmp_path / "photo.png"
    # Smooth content, as in photos: resizing twice barely differs from resizing once.
    ramp = np.linspace(0, 255, 90, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(ramp, (70, 1))] * 3, axis=-1)).save(path)
    tf = eval_transform(32, 40)
    cache = DecodedImageCache.build([Item(str(path), 0, "val")], 40)
    from_cache = tf(cache.get(str(path)))
    direct = tf(Image.open(path).convert("RGB"))
    assert (from_cache - direct).abs().max() < 0.05


def test_measure_pipeline_reports_rates_for_every_image(class_folder):
    ds = load_dataset(class_folder)
    speed = measure_pipeline(ds.items, size=32, resize_size=36, batch_size=8, epochs=1)
    assert speed.images == 18
    assert speed.decode_images_per_s > 0 and speed.train_images_per_s > 0 and speed.eval_images_per_s > 0
    row = speed.as_row()
    assert set(row) == {"images", "decode img/s", "train aug img/s", "eval img/s", "cache MB"}


def test_measure_pipeline_accepts_plain_paths(class_folder):
    paths = sorted(str(p) for p in class_folder.rglob("*.jpg"))[:4]
    assert measure_pipeline(paths, size=32, epochs=1).images == 4


def test_decoding_a_file_equals_resizing_its_image(tmp_path):
    buf = io.BytesIO()
    _noise(50, 50).save(buf, "PNG")
    (tmp_path / "a.png").write_bytes(buf.getvalue())
    assert torch.equal(decode_for_cache(tmp_path / "a.png", 50), resize_for_cache(_noise(50, 50), 50))
