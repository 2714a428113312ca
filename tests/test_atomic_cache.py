"""Gradio's image-output cache under concurrent identical outputs (issue 20, the CI failure of stop 26): a reader
never sees a half-written file once ftui.ui.atomic_cache is installed, and the file lands where Gradio puts it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from gradio import processing_utils
from PIL import Image

from ftui.ui import atomic_cache


def noisy_image(size: int = 384) -> Image.Image:
    """Incompressible pixels, so each write takes long enough for a reader to land inside it."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))


def race(save, cache_dir: str, seconds: float = 1.5) -> tuple[int, int]:
    """Two writers save the same picture over and over while two readers decode it: (reads, broken reads)."""
    image = noisy_image()
    path = save(image, cache_dir)
    stop = threading.Event()
    counts = {"reads": 0, "broken": 0}
    lock = threading.Lock()

    def write() -> None:
        while not stop.is_set():
            save(image, cache_dir)

    def read() -> None:
        while not stop.is_set():
            try:
                with Image.open(path) as opened:
                    opened.load()
                broken = 0
            except (OSError, SyntaxError, ValueError):  # truncated / unidentified image
                broken = 1
            with lock:
                counts["reads"] += 1
                counts["broken"] += broken

    threads = [threading.Thread(target=f) for f in (write, write, read, read)]
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return counts["reads"], counts["broken"]


def test_concurrent_identical_image_outputs_are_always_whole(tmp_path):
    reads, broken = race(atomic_cache.save_pil_to_cache_atomically, str(tmp_path))
    assert reads > 20, "the readers never ran; the race was not exercised"
    assert broken == 0, f"{broken} of {reads} reads saw a half-written image"
    # no staging files left behind
    assert [p.name for p in tmp_path.rglob(".*")] == []


def test_same_path_as_gradio_and_installed_for_every_component(tmp_path):
    image = noisy_image(32)
    ours = atomic_cache.save_pil_to_cache_atomically(image, str(tmp_path / "a"))
    theirs = atomic_cache._original(image, str(tmp_path / "b"))
    assert ours.replace(str(tmp_path / "a"), "") == theirs.replace(str(tmp_path / "b"), "")
    assert Path(ours).read_bytes() == Path(theirs).read_bytes()
    atomic_cache.install()
    assert atomic_cache.installed()
    # gr.Image / gr.Gallery reach it through save_img_array_to_cache, a module-global lookup
    via_array = processing_utils.save_img_array_to_cache(np.asarray(image), str(tmp_path / "c"))
    assert via_array.replace(str(tmp_path / "c"), "") == ours.replace(str(tmp_path / "a"), "")
