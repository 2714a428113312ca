"""Keep copies together when ftui draws the train/val split: files that are the same image (identical
bytes, or re-encoded / resized / mirrored so their hashes match) form one group that lands in one split.

Cheap on purpose (run at every load of a folder without val/): one small decode per file and 64-bit
hashes. Subtler copies (crops) are the doctor's job; this only keeps the obvious leaks out of val."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

from ftui.data.images import ImageError, open_rgb

log = logging.getLogger(__name__)

# pHash and dHash Hamming distances (of 64 bits) at or below which two files count as the same image.
# Re-encoded, resized and slightly recoloured copies measure 0-2; different photos rarely below 10.
PHASH_SAME = 2
DHASH_SAME = 6
# A "group" larger than this share of its class is not a set of copies but a look-alike class (digits,
# plain backgrounds): its members are split one by one.
MAX_GROUP_SHARE = 0.1


def _bits(h) -> int:
    """An imagehash.ImageHash as a 64-bit integer."""
    return int("".join("1" if b else "0" for b in h.hash.flatten()), 2)


@functools.cache
def _imagehash_module():
    """imagehash, or None (said once) where it is not installed."""
    try:
        import imagehash
    except ImportError:
        log.warning("imagehash is not installed: the train/val split keeps only byte-identical copies together")
        return None
    return imagehash


def _perceptual_hashes(image: Image.Image) -> tuple[int, int, int, int]:
    """(pHash, dHash, mirrored pHash, mirrored dHash), or zeros (byte copies only) without imagehash.

    imagehash is imported here, not at module level, so the training path loads on a machine that lacks it
    (the GPU check machine has torch and torchvision only); there only identical files are kept together.
    """
    imagehash = _imagehash_module()
    if imagehash is None:
        return 0, 0, 0, 0
    mirror = ImageOps.mirror(image)
    return (_bits(imagehash.phash(image)), _bits(imagehash.dhash(image)),
            _bits(imagehash.phash(mirror)), _bits(imagehash.dhash(mirror)))


def _fingerprint(path: str) -> tuple[str, int, int, int, int]:
    """(bytes digest, pHash, dHash, mirrored pHash, mirrored dHash); hashes 0 for a file that does not decode."""
    try:
        with open(path, "rb") as f:
            digest = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
    except OSError:  # gone since it was listed: it groups with nothing
        return f"missing:{path}", 0, 0, 0, 0
    try:
        image = open_rgb(path, draft_size=64)
    except ImageError:
        return digest, 0, 0, 0, 0
    image.thumbnail((64, 64))
    return (digest, *_perceptual_hashes(image))


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)


def copy_groups(paths: list[str], workers: int | None = None) -> list[list[int]]:
    """Indices of `paths` grouped so that copies share a group (singletons for everything else)."""
    if not paths:
        return []
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        prints = list(pool.map(_fingerprint, paths))
    parent = list(range(len(paths)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first: dict[str, int] = {}
    for i, (digest, *_rest) in enumerate(prints):
        parent[find(i)] = find(first.setdefault(digest, i))
    ph, dh, ph_m, dh_m = (np.array([p[k] for p in prints], dtype=np.uint64) for k in (1, 2, 3, 4))
    for i in range(len(paths)):
        if ph[i] == 0 and dh[i] == 0:
            continue
        rest = slice(i + 1, None)
        same = (_popcount(ph[i] ^ ph[rest]) <= PHASH_SAME) & (_popcount(dh[i] ^ dh[rest]) <= DHASH_SAME)
        mirrored = (_popcount(ph[i] ^ ph_m[rest]) <= PHASH_SAME) & (_popcount(dh[i] ^ dh_m[rest]) <= DHASH_SAME)
        for j in np.flatnonzero(same | mirrored) + i + 1:
            parent[find(int(j))] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(paths)):
        groups.setdefault(find(i), []).append(i)
    cap = max(10, int(MAX_GROUP_SHARE * len(paths)))
    out = []
    for members in groups.values():
        out += [members] if len(members) <= cap else [[m] for m in members]
    return out


def move_share_to_val(items: list, key: str, seed: int, val_fraction: float) -> list:
    """One stratum's train items (a class, a label combination, a value quantile) with `val_fraction` of them
    moved to val: copies of one image stay together (else val scores images train has seen), groups shuffled by
    a generator seeded with (seed, key) so adding items elsewhere leaves this stratum's split alone, and at least
    one item stays in train. Items are dataclasses with a `split` field; the moved ones are copies."""
    from dataclasses import replace

    mine = sorted(items, key=lambda item: item.path)
    groups = [[mine[i] for i in g] for g in sorted(copy_groups([item.path for item in mine]))]
    random.Random(f"{seed}:{key}").shuffle(groups)
    n = len(mine)
    n_val = 0 if n < 2 else min(n - 1, max(1, round(n * val_fraction)))
    result, taken = [], 0
    for group in groups:
        to_val = taken < n_val and n - taken - len(group) >= 1
        taken += len(group) if to_val else 0
        result += [replace(item, split="val") for item in group] if to_val else group
    return result
