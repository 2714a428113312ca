"""Exact duplicates (same decoded pixels) and near duplicates (copies that were cropped a little, resized,
re-encoded, recoloured slightly or mirrored).

Precision first: perceptual hashes (and close embeddings) only propose candidate pairs; a pair is a near
duplicate only when the pretrained-embedding cosine similarity and the aligned pixel check
(`pixelmatch`) both agree. Without embeddings the pixel check alone decides, with stricter limits. Pairs
are never chained: a group is reported only when every pair inside it qualifies.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ftui.doctor.pixelmatch import PixelLimits, pixel_matches
from ftui.doctor.report import CheckResult
from ftui.doctor.scan import ImageRecord

COLUMNS = ["group", "kind", "scope", "level", "issue", "path", "label", "split", "similarity"]
LEAKAGE = "across splits (leakage)"


@dataclass
class DuplicateLimits:
    """Calibrated on hymenoptera, mnist_small, clothing_small, the demo textures and planted copies
    (tests/test_doctor_duplicates.py keeps the calibration): planted copies align at correlation >= 0.998
    and edges >= 0.996, different real photos at most 0.995 / 0.973 (and those differ in colour)."""

    # Flip-aware pHash Hamming distance (of 64 bits) that makes a pair a candidate; 5% crops measure <= 16.
    hash_candidate: int = 18
    # Embedding cosine that also makes a pair a candidate, and the least a near duplicate must reach.
    embedding_candidate: float = 0.92
    embedding_min: float = 0.70
    pixels: PixelLimits = field(default_factory=PixelLimits)
    # Without embeddings only the pixels speak: demand more of them.
    pixels_alone: PixelLimits = field(default_factory=lambda: PixelLimits(correlation=0.995, edges=0.99,
                                                                          colour=0.06))


def popcount(values: np.ndarray) -> np.ndarray:
    """Number of set bits in each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


def candidate_pairs(records: list[ImageRecord], embeddings: np.ndarray | None, limits: DuplicateLimits,
                    block: int = 512) -> np.ndarray:
    """(P, 2) index pairs i < j proposed by close flip-aware pHashes or close embeddings."""
    ph = np.array([r.phash for r in records], dtype=np.uint64)
    flip = np.array([r.phash_flip for r in records], dtype=np.uint64)
    unit = None
    if embeddings is not None:
        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    out = []
    n = len(records)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        dist = np.minimum(popcount(ph[rows, None] ^ ph[None, :]), popcount(ph[rows, None] ^ flip[None, :]))
        near = dist <= limits.hash_candidate
        if unit is not None:
            cos = unit[rows] @ unit.T
            near = (near | (cos >= limits.embedding_candidate)) & (cos >= limits.embedding_min)
        ii, jj = np.nonzero(near)
        ii = ii + start
        keep = ii < jj
        out.append(np.stack([ii[keep], jj[keep]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def near_duplicate_pairs(records: list[ImageRecord], embeddings: np.ndarray | None = None,
                         limits: DuplicateLimits | None = None) -> list[tuple[int, int, float]]:
    """(i, j, similarity) for every pair the hashes propose and the embeddings and pixels confirm.
    `similarity` is the embedding cosine, or the aligned pixel correlation without embeddings."""
    limits = limits or DuplicateLimits()
    if len(records) < 2:
        return []
    pairs = candidate_pairs(records, embeddings, limits)
    views = np.stack([r.pixels for r in records])
    pixel_limits = limits.pixels if embeddings is not None else limits.pixels_alone
    found = []
    unit = None if embeddings is None else embeddings / np.maximum(
        np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    for i, j, scores in pixel_matches(views, pairs, pixel_limits):
        similarity = scores["correlation"] if unit is None else float(unit[i] @ unit[j])
        found.append((i, j, round(similarity, 4)))
    return found


def cliques(pairs: list[tuple[int, int, float]]) -> list[list[int]]:
    """Groups in which every two members form a qualifying pair, covering every pair (greedy, strongest
    pairs first). Never transitive: a~b and b~c without a~c gives two groups, {a, b} and {b, c}."""
    linked: dict[int, set[int]] = defaultdict(set)
    for i, j, _ in pairs:
        linked[i].add(j)
        linked[j].add(i)
    groups: list[set[int]] = []
    for i, j, _ in sorted(pairs, key=lambda p: -p[2]):
        if any(i in g and j in g for g in groups):
            continue
        for g in groups:
            if i in g and all(j in linked[m] for m in g) or j in g and all(i in linked[m] for m in g):
                g.update((i, j))
                break
        else:
            groups.append({i, j})
    return [sorted(g) for g in groups]


def _scope(members: list[ImageRecord]) -> str:
    """Worst way a group of copies can hurt: two labels, then split leakage, then plain redundancy."""
    if len({m.label for m in members}) > 1:
        return "across classes"
    if len({m.split for m in members}) > 1:
        return LEAKAGE
    return "within class"


def _exact_groups(readable: list[ImageRecord]) -> tuple[list[list[int]], list[int]]:
    """Groups of identical decoded pixels, and one representative index per distinct image."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(readable):
        by_hash[r.pixel_hash].append(i)
    return [g for g in by_hash.values() if len(g) > 1], sorted(g[0] for g in by_hash.values())


def check_duplicates(records: list[ImageRecord], classes: list[str], embeddings: np.ndarray | None = None,
                     limits: DuplicateLimits | None = None) -> CheckResult:
    """Find exact and near duplicates and say whether they cross classes or splits (leakage)."""
    ok = [i for i, r in enumerate(records) if r.ok]
    readable = [records[i] for i in ok]
    feats = None if embeddings is None else np.nan_to_num(embeddings[ok])
    exact_groups, reps = _exact_groups(readable)
    # Near duplicates are searched among one representative per exact group (an exact copy adds nothing).
    rep_pairs = near_duplicate_pairs([readable[i] for i in reps], None if feats is None else feats[reps], limits)
    near_pairs = [(reps[a], reps[b], s) for a, b, s in rep_pairs]
    best: dict[int, float] = defaultdict(float)
    for i, j, s in near_pairs:
        best[i], best[j] = max(best[i], s), max(best[j], s)
    rows, counts, group_id = [], defaultdict(int), 0
    for kind, groups in (("exact", exact_groups), ("near", cliques(near_pairs))):
        for members in groups:
            group_id += 1
            recs = [readable[i] for i in members]
            scope = _scope(recs)
            # Copies under two labels or across splits: fix before training. Within a class: worth a look.
            level = "error" if scope != "within class" else "warning"
            counts[f"{kind} {scope}"] += 1
            for i, r in zip(members, recs):
                rows.append({"group": group_id, "kind": kind, "scope": scope, "level": level,
                             "issue": f"{kind} duplicate {scope} (group {group_id})", "path": r.path,
                             "label": classes[r.label], "split": r.split,
                             "similarity": 1.0 if kind == "exact" else best[i]})
    table = pd.DataFrame(rows, columns=COLUMNS)
    method = ("hashes propose, embeddings and aligned pixels confirm" if feats is not None else
              "no pretrained embeddings: hashes propose, the aligned pixel check alone confirms (stricter)")
    stats = {"groups": group_id, "pairs": len(near_pairs), "method": method, **counts}
    if table.empty:
        return CheckResult("duplicates", "ok", f"no exact or near duplicates among {len(readable)} images "
                           f"({method})", table, stats=stats)
    severity = "error" if (table["level"] == "error").any() else "warning"
    parts = [f"{n} {k} group{'s' if n > 1 else ''}" for k, n in sorted(counts.items())]
    suggestions = []
    if any("across classes" in k for k in counts):
        suggestions.append("the same image under two labels: keep one copy under the right class")
    if any(LEAKAGE in k for k in counts):
        suggestions.append("copies in train and val/test inflate validation accuracy: remove the val/test copy")
    if any("within class" in k for k in counts):
        suggestions.append("copies within a class only over-weight that image; remove extras if many")
    return CheckResult("duplicates", severity, "; ".join(parts) + f" ({method})", table, stats=stats,
                       suggestions=suggestions)
