"""The GPU data path's store and batches, run on CPU tensors (placement rules checked as plain arithmetic)."""

from __future__ import annotations

import torch
from conftest import make_class_folder

from ftui.config import AugConfig
from ftui.data import gpudata
from ftui.data.augment import eval_transform
from ftui.data.batchaug import BatchAugment
from ftui.data.imagecache import DecodedImageCache


def test_placement_keeps_images_on_the_gpu_only_when_they_fit_in_a_share_of_free_memory():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    planned = gpudata.planned_bytes(1000, 256)
    assert planned == int(1000 * 3 * 256 * 256 * gpudata.MEAN_ASPECT)
    assert gpudata.placement(cuda, planned, free=80 * 2**30) == "device"
    assert gpudata.placement(cuda, planned, free=planned) == "pinned"
    assert gpudata.placement(cuda, planned, free=None) == "pinned"
    assert gpudata.placement(cpu, planned, free=None) == "host"


def _samples(root):
    files = sorted(root.rglob("*.jpg"))
    classes = sorted({f.parent.name for f in files})
    return [(str(f), classes.index(f.parent.name)) for f in files]


def test_batches_follow_the_order_decode_each_file_once_and_match_the_eval_pipeline(tmp_path):
    samples = _samples(make_class_folder(tmp_path / "data", per_class=5, size=48))
    cache = DecodedImageCache(36, lazy=True)
    store = gpudata.DeviceImageStore(cache, torch.device("cpu"), "host")
    pipeline = BatchAugment(AugConfig(), 32, resize_size=36)
    batches = gpudata.DeviceBatches(store, samples, pipeline, batch_size=4, seed=0)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(1))
    try:
        got = list(batches(order, augmented=False))
        assert [len(y) for _, y in got] == [4, 4, 4, 3] and batches.num_batches() == 4
        labels = torch.cat([y for _, y in got])
        assert labels.tolist() == [samples[i][1] for i in order.tolist()]
        x = torch.cat([x for x, _ in got])
        tf = eval_transform(32, 36)
        from ftui.data.imagecache import decode_for_cache

        ref = torch.stack([tf(decode_for_cache(samples[i][0], 36)) for i in order.tolist()])
        assert (x - ref).abs().max() < 0.05
        # Pixels are kept once, by the store; a second epoch decodes nothing again.
        assert len(store._kept) == len(samples) and len(cache) == 0
        again = torch.cat([x for x, _ in batches(order, augmented=False)])
        assert torch.equal(again, x) and len(cache) == 0
        aug1 = torch.cat([x for x, _ in batches(order, augmented=True)])
        aug2 = torch.cat([x for x, _ in batches(order, augmented=True)])
        assert aug1.shape == x.shape and not torch.equal(aug1, aug2)  # fresh random parameters each epoch
    finally:
        store.close()


def test_run_ahead_yields_every_batch_in_order_on_cpu():
    calls = []

    def maker(i):
        def make():
            calls.append(i)
            return torch.full((2,), i)
        return make

    out = gpudata.run_ahead((maker(i) for i in range(5)), torch.device("cpu"))
    first = next(out)
    assert first.tolist() == [0, 0]
    assert [t[0].item() for t in out] == [1, 2, 3, 4] and calls == [0, 1, 2, 3, 4]


def test_gpu_image_batches_speak_the_trainers_batch_interface(tmp_path):
    from types import SimpleNamespace

    samples = _samples(make_class_folder(tmp_path / "data", per_class=3, size=40))
    items = [SimpleNamespace(path=p, label=label) for p, label in samples]
    store = gpudata.make_store(torch.device("cpu"), len(items), 36)
    assert store.where == "host"
    images = gpudata.GpuImageBatches(store, items, BatchAugment(AugConfig(), 32, resize_size=36), 4, seed=0)
    try:
        assert len(images) == 9
        images.batch_size = 5
        plain = list(images(0, torch.arange(9)))
        assert [len(y) for _, y in plain] == [5, 4]
        assert torch.cat([y for _, y in plain]).tolist() == [label for _, label in samples]
        augmented = torch.cat([x for x, _ in images(1, torch.arange(9))])
        assert not torch.allclose(augmented, torch.cat([x for x, _ in plain]))
    finally:
        store.close()


def test_training_batches_on_the_gpu_path_are_all_full_and_cover_every_image(tmp_path):
    from types import SimpleNamespace

    from ftui.train.batches import ImageSource, fill_last_batch

    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(10, generator=gen)
    filled = fill_last_batch(order, 4, gen)
    assert filled[:10].tolist() == order.tolist() and len(filled) == 12
    assert len(set(filled[10:].tolist())) == 2  # distinct images of the pass, drawn again
    assert torch.equal(fill_last_batch(order, 5, gen), order)  # already full batches
    assert torch.equal(fill_last_batch(order, 16, gen), order)  # one batch: a single shape already

    samples = _samples(make_class_folder(tmp_path / "data", per_class=3, size=40))  # 9 images
    items = [SimpleNamespace(path=p, label=label) for p, label in samples]
    store = gpudata.make_store(torch.device("cpu"), len(items), 36)
    images = gpudata.GpuImageBatches(store, items, BatchAugment(AugConfig.none(), 32, resize_size=36), 4, seed=0)
    try:
        train = ImageSource(images, 4, torch.Generator().manual_seed(1), fill_last=True)
        got = list(train.batches())
        assert [len(y) for _, y in got] == [4, 4, 4] and train.num_batches(4) == 3
        # Every image once, plus three of them again; the label counts say which.
        counts = torch.bincount(torch.cat([y for _, y in got]), minlength=3)
        assert counts.sum() == 12 and (counts >= 3).all()
        plain = ImageSource(images, 4, torch.Generator().manual_seed(1))  # the CPU path: the last batch short
        assert [len(y) for _, y in plain.batches()] == [4, 4, 1]
        val = ImageSource(images, 4, None, fill_last=True)  # evaluation is never filled
        assert [len(y) for _, y in val.batches()] == [4, 4, 1]
    finally:
        store.close()
