"""The reliability diagram and the calibration sentence, as plain HTML/SVG (no JavaScript, no outside
requests), shared by the Evaluate step and the model card."""

from __future__ import annotations

import html
from typing import Any

SIZE = 220
PAD = 30


def _xy(confidence: float, accuracy: float) -> tuple[float, float]:
    return PAD + confidence * SIZE, PAD + (1 - accuracy) * SIZE


def reliability_svg(bins: list[dict[str, Any]], before: list[dict[str, Any]] | None = None) -> str:
    """Accuracy against confidence per bin (dots sized by count) with the diagonal of perfect calibration;
    `before`: the same bins without the temperature, drawn in grey."""
    total = max(1, sum(b["count"] for b in bins))
    side = SIZE + 2 * PAD
    parts = [f"<svg width='{side}' height='{side}' role='img' aria-label='reliability diagram'>",
             f"<rect x='{PAD}' y='{PAD}' width='{SIZE}' height='{SIZE}' fill='#fafafa' stroke='#d1d5db'/>",
             f"<line x1='{PAD}' y1='{PAD + SIZE}' x2='{PAD + SIZE}' y2='{PAD}' stroke='#9ca3af' stroke-dasharray='4 3'/>"]
    for series, colour in ((before or [], "#9ca3af"), (bins, "#4c78a8")):
        points = [_xy(b["confidence"], b["accuracy"]) for b in series]
        if len(points) > 1:
            parts.append("<polyline fill='none' stroke='{}' stroke-width='1.5' points='{}'/>".format(
                colour, " ".join(f"{x:.1f},{y:.1f}" for x, y in points)))
        for b, (x, y) in zip(series, points):
            r = 2.5 + 6 * (b["count"] / total) ** 0.5
            parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{r:.1f}' fill='{colour}'><title>confidence "
                         f"{b['confidence']:.0%}, accuracy {b['accuracy']:.0%}, {b['count']} images</title></circle>")
    for v in (0, 0.5, 1):
        x, y = _xy(v, v)
        parts.append(f"<text x='{x:.0f}' y='{PAD + SIZE + 14}' font-size='10' text-anchor='middle'>{v:.0%}</text>")
        parts.append(f"<text x='{PAD - 4}' y='{y + 3:.0f}' font-size='10' text-anchor='end'>{v:.0%}</text>")
    parts.append(f"<text x='{PAD + SIZE / 2}' y='{PAD + SIZE + 27}' font-size='11' text-anchor='middle'>confidence"
                 "</text><text x='10' y='20' font-size='11'>accuracy</text></svg>")
    return "".join(parts)


def calibration_sentence(result: dict[str, Any]) -> str:
    """One paragraph: temperature, ECE before/after, abstain rate on val, OOD AUROC when measured; "" when
    the evaluation has no calibration (other tasks, old files)."""
    if "temperature" not in result:
        return ""
    text = (f"Calibration: temperature {result['temperature']:.2f}; expected calibration error "
            f"{result['ece_before']:.1%} before, {result['ece_after']:.1%} after (15 bins).")
    if result.get("abstain_rate") is not None:
        text += (f" \"None of these\": {result['abstain_rate']:.1%} of these images are answered \"unknown\" "
                 "(the threshold keeps 95% of the val images).")
    ood = result.get("ood")
    if ood:
        text += (f" Shown {ood['num_out']} images from none of the classes, the score tells them apart with "
                 f"AUROC {ood['auroc']:.3f} (FPR at 95% TPR {ood['fpr95']:.1%}; {ood.get('method', 'energy')} "
                 f"score" + (f"; energy: AUROC {ood['energy']['auroc']:.3f}" if ood.get("method", "energy") != "energy"
                             else "") + f"; MSP: AUROC {ood['msp']['auroc']:.3f}).")
    else:
        text += " Out-of-distribution AUROC: not measured (`ftui evaluate RUN --ood DIR`)."
    return text


def reliability_html(result: dict[str, Any]) -> str:
    """The diagram with its legend and the calibration sentence, or "" without calibration."""
    sentence = calibration_sentence(result)
    if not sentence:
        return ""
    svg = reliability_svg(result.get("reliability", []), result.get("reliability_before"))
    return (f"<div class='ftui-calibration'><h3>Reliability (is &quot;80% sure&quot; right 80% of the time?)"
            f"</h3>{svg}<p><small>blue: calibrated; grey: before (T = 1); dashed: perfect. Dot size: images in the "
            f"bin.</small></p><p>{html.escape(sentence)}</p></div>")
