"""Image outputs reach Gradio's file cache whole, even when two users get the same picture at once.

Gradio 6 saves every PIL/numpy image output (gr.Image, gr.Gallery, gr.AnnotatedImage) with
`processing_utils.save_pil_to_cache`, which names the file by the hash of its bytes and writes it in place.
Two requests that produce the same picture (two live viewers pointing at the same scene, two users predicting the
same example) write the same path: one truncates the file while the other's browser is fetching it, and that
browser gets a broken image (seen in CI: `UnidentifiedImageError ... image.webp` under 5 parallel live viewers).
Gradio's own `save_file_to_cache` already writes under a temporary name and renames; this gives image outputs the
same guarantee. It keeps Gradio's path convention (cache_dir/<hash of bytes>/<name>.<format>), so nothing else
changes, and it is installed once, at app build, for every component that calls the function by module attribute.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gradio import processing_utils
from PIL import Image

_original = processing_utils.save_pil_to_cache


def save_pil_to_cache_atomically(img: Image.Image, cache_dir: str, name: str = "image",
                                 format: str = "webp") -> str:
    """Gradio's save_pil_to_cache, but the file appears under its final name only once it is complete."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    target = (folder / f"{name}.{format}").resolve()
    handle, staging = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(staging, target)  # atomic: a reader sees the old whole file or the new whole file
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(target)


def install() -> None:
    """Route Gradio's image-output saving through the atomic version (idempotent)."""
    processing_utils.save_pil_to_cache = save_pil_to_cache_atomically


def installed() -> bool:
    return processing_utils.save_pil_to_cache is save_pil_to_cache_atomically
