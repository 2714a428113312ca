"""Image properties: size and aspect distribution, tiny or extreme images, storage modes, blank images."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ftui.doctor.report import CheckResult
from ftui.doctor.scan import ImageRecord
from ftui.stats import counted

COLUMNS = ["path", "label", "split", "level", "issue", "width", "height", "mode"]
HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
GREY_MODES = ("1", "L", "LA", "La")


@dataclass
class PropertyLimits:
    """Where an image property becomes worth a warning."""

    min_side: int = 32  # shorter side in px; smaller images are upscaled into blur
    max_aspect: float = 3.0  # longer/shorter side; a centre crop then loses most of the picture
    dark_mean: float = 12.0  # mean brightness (0-255) below this: very dark
    bright_mean: float = 245.0  # above this: very bright (blown out, or a blank page)
    flat_std: float = 6.0  # brightness standard deviation below this: nearly one flat tone
    dominant_fraction: float = 0.9  # this share of pixels in one brightness band: little information


def _issues(r: ImageRecord, limits: PropertyLimits) -> list[tuple[str, str]]:
    """(level, issue) pairs for one decoded image."""
    found = []
    short, long = sorted((r.width, r.height))
    if short < limits.min_side:
        found.append(("warning", f"very small ({r.width}x{r.height} px)"))
    if short and long / short > limits.max_aspect:
        found.append(("warning", f"extreme aspect ratio ({long / short:.1f}:1)"))
    if r.luma_mean < limits.dark_mean:
        found.append(("warning", f"near-blank: very dark (mean brightness {r.luma_mean:.0f})"))
    elif r.luma_mean > limits.bright_mean:
        found.append(("warning", f"near-blank: very bright (mean brightness {r.luma_mean:.0f})"))
    elif r.luma_std < limits.flat_std or r.dominant_fraction >= limits.dominant_fraction:
        share = f"{r.dominant_fraction:.0%}"
        found.append(("warning", f"near-blank: low information ({share} of pixels one tone)"))
    # Storage details ftui converts automatically: worth knowing, nothing to fix.
    if r.mode == "CMYK":
        found.append(("info", "CMYK (converted to RGB)"))
    if r.mode in HIGH_BIT_MODES:
        found.append(("info", f"16-bit or float ({r.mode}, scaled to 8-bit)"))
    if r.mode in GREY_MODES or r.mode in HIGH_BIT_MODES:
        found.append(("info", "grayscale"))
    elif r.colourless:
        found.append(("info", "grayscale content stored as colour"))
    if r.mode in ("P", "PA"):
        found.append(("info", "palette"))
    if r.has_alpha:
        found.append(("info", "alpha channel (composited over white)"))
    if r.orientation not in (0, 1):
        found.append(("info", f"EXIF-rotated (orientation {r.orientation}, turned upright when loaded)"))
    return found


def _quantiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"min": float(arr.min()), "p05": float(np.percentile(arr, 5)), "median": float(np.median(arr)),
            "p95": float(np.percentile(arr, 95)), "max": float(arr.max())}


def check_properties(records: list[ImageRecord], classes: list[str],
                     limits: PropertyLimits | None = None) -> CheckResult:
    """Flag images that are tiny, extreme, near-blank, or stored unusually; summarise size distribution."""
    limits = limits or PropertyLimits()
    readable = [r for r in records if r.ok]
    if not readable:
        return CheckResult("properties", "ok", "no readable images to measure", pd.DataFrame(columns=COLUMNS),
                           ran=False)
    rows = []
    for r in readable:
        for level, issue in _issues(r, limits):
            rows.append({"path": r.path, "label": classes[r.label], "split": r.split, "level": level,
                         "issue": issue, "width": r.width, "height": r.height, "mode": r.mode})
    table = pd.DataFrame(rows, columns=COLUMNS)
    # Warnings first, then by issue, so the table reads as a to-do list.
    if not table.empty:
        table = table.sort_values(["level", "issue"], key=lambda s: s.map({"warning": 0, "info": 1})
                                  if s.name == "level" else s, kind="stable").reset_index(drop=True)
    issue_kinds = Counter(i.split(" (")[0] for i in table["issue"]) if not table.empty else Counter()
    stats = {
        "width": _quantiles([r.width for r in readable]),
        "height": _quantiles([r.height for r in readable]),
        "aspect": _quantiles([max(r.width, r.height) / max(min(r.width, r.height), 1) for r in readable]),
        "modes": dict(Counter(r.mode for r in readable)),
        "formats": dict(Counter(r.format for r in readable)),
        "issues": dict(issue_kinds),
    }
    warnings = table[table["level"] == "warning"] if not table.empty else table
    w, h = stats["width"], stats["height"]
    size_text = (f"sizes {w['min']:.0f}-{w['max']:.0f} x {h['min']:.0f}-{h['max']:.0f} px "
                 f"(median {w['median']:.0f}x{h['median']:.0f})")
    if warnings.empty:
        notes = f"; notes: {', '.join(f'{n} {k}' for k, n in issue_kinds.items())}" if issue_kinds else ""
        return CheckResult("properties", "ok", f"{size_text}{notes}", table, stats=stats)
    kinds = Counter(i.split(" (")[0] for i in warnings["issue"])
    listed = ", ".join(f"{n} {k}" for k, n in kinds.items())
    summary = f"{counted(warnings['path'].nunique(), 'image')} worth a look ({listed}); {size_text}"
    suggestions = ["look at the flagged images: remove placeholders and blank frames, keep real examples"]
    return CheckResult("properties", "warning", summary, table, stats=stats, suggestions=suggestions)
