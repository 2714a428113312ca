"""The near-duplicate pixel check: align two small squashed views (crop margins per axis, mirror) and
compare them on grayscale structure, edges and colour.

A copy that was cropped a little, resized, re-encoded, recoloured slightly or mirrored lines up almost
perfectly once its crop is undone; two different photos of similar things do not, even on a plain
background. Alignment is searched axis by axis on row/column brightness profiles (cheap, vectorised over
all candidate pairs), then the 2-D views are cropped accordingly and compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Crop margins searched on each side of each axis (as a share of the side): 0 to 12.5% in 2.5% steps.
MARGINS = np.arange(0.0, 0.1251, 0.025)
# Side the views are shrunk to before aligning and comparing (half the stored view: enough to tell photos
# apart, and cheap when thousands of candidates come up, e.g. on handwritten digits).
PROFILE_SIZE = 32


@dataclass
class PixelLimits:
    """Both alignment axes must match this well before the 2-D comparison runs, then all three agree."""

    profile: float = 0.93
    correlation: float = 0.99  # normalised grayscale correlation after alignment
    edges: float = 0.985  # correlation of the gradients: fine structure, where different photos differ
    colour: float = 0.08  # mean absolute colour difference (0..1) on an 8x8 grid after alignment


def _interp_matrix(positions: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation weights sampling an n-vector at `positions` (0..1 of its length)."""
    x = positions * n - 0.5
    i0 = np.clip(np.floor(x).astype(int), 0, n - 1)
    i1 = np.clip(i0 + 1, 0, n - 1)
    w = np.clip(x - i0, 0.0, 1.0)
    out = np.zeros((len(positions), n), dtype=np.float32)
    out[np.arange(len(positions)), i0] += 1 - w
    out[np.arange(len(positions)), i1] += w
    return out


def _filter_matrix(positions: np.ndarray, n: int, radius: float) -> np.ndarray:
    """Triangle-filter weights sampling an n-vector at `positions` (0..1): every sample averages the same
    stretch of content whatever its sub-pixel offset, so a crop blurs exactly like the original."""
    centre = positions * n - 0.5
    taps = np.arange(n)[None, :]
    w = np.clip(1.0 - np.abs(taps - centre[:, None]) / radius, 0.0, None).astype(np.float32)
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)


def compare_bank(n_in: int, n_out: int) -> np.ndarray:
    """(K, n_out, n_in) crop-and-shrink matrices for every margin pair, in `_banks` order."""
    u = (np.arange(n_out) + 0.5) / n_out
    return np.stack([_filter_matrix(a + u * (1 - a - b), n_in, (1 - a - b) * n_in / n_out)
                     for a in MARGINS for b in MARGINS])


def _banks(n: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Resampling matrices for every (start, end) margin pair: row k maps a profile onto its crop."""
    pairs = [(float(a), float(b)) for a in MARGINS for b in MARGINS]
    u = (np.arange(n) + 0.5) / n
    return np.stack([_interp_matrix(a + u * (1 - a - b), n) for a, b in pairs]), pairs


def _unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.mean(axis=axis, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-6)


class Profiles:
    """Row and column brightness profiles of every view, and their crops for every margin pair."""

    def __init__(self, small: np.ndarray):
        gray = small.mean(axis=3)  # (N, S, S)
        n = gray.shape[1]
        self.bank, self.margins = _banks(n)
        self.cols = gray.mean(axis=1)  # (N, S): brightness along x
        self.rows = gray.mean(axis=2)
        self.cols_mirror = self.cols[:, ::-1]
        # (N, K, S) unit profiles of each view cropped by every margin pair.
        self.crop_cols = _unit(np.tensordot(self.cols, self.bank, axes=([1], [2])))
        self.crop_cols_mirror = _unit(np.tensordot(np.ascontiguousarray(self.cols_mirror), self.bank, axes=([1], [2])))
        self.crop_rows = _unit(np.tensordot(self.rows, self.bank, axes=([1], [2])))

    def align(self, i: np.ndarray, j: np.ndarray) -> dict[str, np.ndarray]:
        """Best alignment per pair: score and margin index per axis, which side is cropped, mirror or not."""
        ui, uj = _unit(self.cols[i]), _unit(self.cols[j])
        uj_m = _unit(self.cols_mirror[j])
        # x axis, four ways: i cropped onto j, j cropped onto i, each with j mirrored or not.
        options = np.stack([
            np.einsum("pks,ps->pk", self.crop_cols[i], uj),
            np.einsum("pks,ps->pk", self.crop_cols[j], ui),
            np.einsum("pks,ps->pk", self.crop_cols[i], uj_m),
            np.einsum("pks,ps->pk", self.crop_cols_mirror[j], ui),
        ], axis=1)  # (P, 4, K)
        flat = options.reshape(len(i), -1).argmax(axis=1)
        way_x, k_x = np.divmod(flat, options.shape[2])
        score_x = options.reshape(len(i), -1)[np.arange(len(i)), flat]
        vi, vj = _unit(self.rows[i]), _unit(self.rows[j])
        rows = np.stack([np.einsum("pks,ps->pk", self.crop_rows[i], vj),
                         np.einsum("pks,ps->pk", self.crop_rows[j], vi)], axis=1)
        flat_y = rows.reshape(len(i), -1).argmax(axis=1)
        way_y, k_y = np.divmod(flat_y, rows.shape[2])
        score_y = rows.reshape(len(i), -1)[np.arange(len(i)), flat_y]
        return {"score": np.minimum(score_x, score_y), "way_x": way_x, "k_x": k_x, "way_y": way_y, "k_y": k_y}


def _batch_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise normalised correlation of (P, D) arrays."""
    return np.einsum("pd,pd->p", _unit(a), _unit(b))


def compare_aligned(views: np.ndarray, i: np.ndarray, j: np.ndarray, aligned: dict[str, np.ndarray],
                    bank: np.ndarray) -> dict[str, np.ndarray]:
    """Grayscale correlation, edge correlation and colour difference of view pairs (i, j) once aligned.

    Crop-and-shrink is one filter matrix per axis (`compare_bank`), so a whole block of pairs is aligned
    with two batched matrix products."""
    way_x, k_x, way_y, k_y = aligned["way_x"], aligned["k_x"], aligned["way_y"], aligned["k_y"]
    # Margin index 0 is (0, 0): no crop. Ways 0/2 crop view i along x, 1/3 view j; 2/3 mirror view j.
    kx_a, kx_b = np.where(way_x % 2 == 0, k_x, 0), np.where(way_x % 2 == 1, k_x, 0)
    ky_a, ky_b = np.where(way_y == 0, k_y, 0), np.where(way_y == 1, k_y, 0)
    a = views[i].astype(np.float32).transpose(0, 3, 1, 2)  # (P, 3, S, S)
    b = views[j].astype(np.float32).transpose(0, 3, 1, 2).copy()
    mirror = way_x >= 2
    b[mirror] = b[mirror][..., ::-1]
    a = bank[ky_a][:, None] @ a @ bank[kx_a].transpose(0, 2, 1)[:, None]
    b = bank[ky_b][:, None] @ b @ bank[kx_b].transpose(0, 2, 1)[:, None]
    ga, gb = a.mean(axis=1), b.mean(axis=1)
    n, side = len(i), ga.shape[1]

    def edges(g: np.ndarray) -> np.ndarray:
        return np.concatenate([np.diff(g, axis=1).reshape(n, -1), np.diff(g, axis=2).reshape(n, -1)], axis=1)

    cell = side // 8
    grid = (n, 3, 8, cell, 8, cell)
    colour = np.abs(a.reshape(grid).mean(axis=(3, 5)) - b.reshape(grid).mean(axis=(3, 5))).mean(axis=(1, 2, 3))
    return {"correlation": _batch_corr(ga.reshape(n, -1), gb.reshape(n, -1)),
            "edges": _batch_corr(edges(ga), edges(gb)), "colour": colour / 255.0}


def shrink(views: np.ndarray, size: int = PROFILE_SIZE) -> np.ndarray:
    """(N, S, S, 3) uint8 views box-averaged down to (N, size, size, 3) float32."""
    step = max(1, views.shape[1] // size)
    n, s = len(views), views.shape[1] // step
    return views.astype(np.float32).reshape(n, s, step, s, step, 3).mean(axis=(2, 4))


def pixel_matches(views: np.ndarray, pairs: np.ndarray, limits: PixelLimits,
                  block: int = 1024) -> list[tuple[int, int, dict[str, float]]]:
    """(i, j, scores) for the candidate pairs whose aligned pixels agree within `limits`."""
    if len(pairs) == 0:
        return []
    profiles = Profiles(shrink(views))
    bank = compare_bank(views.shape[1], PROFILE_SIZE)
    found = []
    for start in range(0, len(pairs), block):
        part = pairs[start:start + block]
        aligned = profiles.align(part[:, 0], part[:, 1])
        keep = np.flatnonzero(aligned["score"] >= limits.profile)
        if not len(keep):
            continue
        i, j = part[keep, 0], part[keep, 1]
        scores = compare_aligned(views, i, j, {k: v[keep] for k, v in aligned.items()}, bank)
        good = ((scores["correlation"] >= limits.correlation) & (scores["edges"] >= limits.edges)
                & (scores["colour"] <= limits.colour))
        for p in np.flatnonzero(good):
            found.append((int(i[p]), int(j[p]), {k: float(v[p]) for k, v in scores.items()}))
    return found
