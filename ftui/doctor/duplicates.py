"""Exact duplicates (same decoded pixels) and near duplicates (perceptual hashes close in Hamming terms)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from ftui.doctor.report import CheckResult
from ftui.doctor.scan import ImageRecord

# Max Hamming distance (of 64 bits) for two images to count as near duplicates. Both hashes must agree:
# pHash (DCT) survives resizing and recompression, dHash (gradients) guards against pHash collisions on
# smooth images. Resized/recompressed/lightly cropped copies measure 0-6 on pHash; unrelated photos ~32.
PHASH_MAX = 10
DHASH_MAX = 12
COLUMNS = ["group", "kind", "scope", "level", "issue", "path", "label", "split", "distance"]


def popcount(values: np.ndarray) -> np.ndarray:
    """Number of set bits in each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


def near_pairs(phashes: np.ndarray, dhashes: np.ndarray, phash_max: int = PHASH_MAX,
               dhash_max: int = DHASH_MAX, block: int = 512) -> list[tuple[int, int, int]]:
    """(i, j, phash distance) for every pair i < j whose hashes are both within the thresholds."""
    n = len(phashes)
    pairs = []
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        dp = popcount(phashes[rows, None] ^ phashes[None, :])
        dd = popcount(dhashes[rows, None] ^ dhashes[None, :])
        ii, jj = np.nonzero((dp <= phash_max) & (dd <= dhash_max))
        for i, j in zip(ii + start, jj):
            if i < j:
                pairs.append((int(i), int(j), int(dp[i - start, j])))
    return pairs


def _components(n: int, pairs: list[tuple[int, int, int]]) -> list[list[int]]:
    """Connected groups (union-find) of size > 1."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j, _ in pairs:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _scope(members: list[ImageRecord]) -> str:
    """Worst way a group of copies can hurt: two labels, then split leakage, then plain redundancy."""
    if len({m.label for m in members}) > 1:
        return "across classes"
    if len({m.split for m in members}) > 1:
        return "across splits"
    return "within class"


def check_duplicates(records: list[ImageRecord], classes: list[str]) -> CheckResult:
    """Find exact and near duplicates and say whether they cross classes or splits."""
    readable = [r for r in records if r.ok]
    rows = []
    counts: dict[str, int] = defaultdict(int)
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(readable):
        by_hash[r.pixel_hash].append(i)
    exact_groups = [g for g in by_hash.values() if len(g) > 1]
    # Near duplicates are compared among one representative per exact group (fewer pairs, same answer).
    reps = sorted(g[0] for g in by_hash.values())
    ph = np.array([readable[i].phash for i in reps], dtype=np.uint64)
    dh = np.array([readable[i].dhash for i in reps], dtype=np.uint64)
    pairs = [(reps[a], reps[b], d) for a, b, d in near_pairs(ph, dh)]
    rep_of = {i: g[0] for g in by_hash.values() for i in g}
    near_groups = []
    for comp in _components(len(readable), pairs):
        # Expand each representative back to its exact copies.
        members = sorted(i for i in range(len(readable)) if rep_of[i] in comp)
        near_groups.append(members)
    nearest: dict[int, int] = defaultdict(lambda: 64)
    for i, j, d in pairs:
        nearest[i] = min(nearest[i], d)
        nearest[j] = min(nearest[j], d)
    group_id = 0
    for kind, groups in (("exact", exact_groups), ("near", near_groups)):
        for members in groups:
            group_id += 1
            recs = [readable[i] for i in members]
            scope = _scope(recs)
            # Same image under two labels, or exact leakage into validation: fix before training.
            level = "error" if kind == "exact" and scope != "within class" else "warning"
            counts[f"{kind} {scope}"] += 1
            for i, r in zip(members, recs):
                d = 0 if kind == "exact" else nearest[rep_of[i]]
                rows.append({
                    "group": group_id, "kind": kind, "scope": scope, "level": level,
                    "issue": f"{kind} duplicate {scope} (group {group_id})", "path": r.path,
                    "label": classes[r.label], "split": r.split, "distance": d,
                })
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table.empty:
        return CheckResult("duplicates", "ok", f"no exact or near duplicates among {len(readable)} images",
                           table, stats={"groups": 0})
    severity = "error" if (table["level"] == "error").any() else "warning"
    parts = [f"{n} {k} group{'s' if n > 1 else ''}" for k, n in sorted(counts.items())]
    suggestions = []
    if any("across classes" in k for k in counts):
        suggestions.append("the same image under two labels: keep one copy under the right class")
    if any("across splits" in k for k in counts):
        suggestions.append("copies in train and val/test inflate validation accuracy: keep each in one split")
    if any("within class" in k for k in counts):
        suggestions.append("copies within a class only over-weight that image; remove extras if many")
    return CheckResult("duplicates", severity, "; ".join(parts), table,
                       stats={"groups": group_id, **counts}, suggestions=suggestions)
