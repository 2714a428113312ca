"""The Evaluate step's views of a multilabel or regression run (ftui/results/taskeval.py's evaluation dict).

Multilabel: the numbers with their intervals, the per-label table, a label x label table of errors beside each
true label, per-label precision-recall curves and the worst images (true labels -> predicted labels).
Regression: the numbers beside the predict-the-mean baseline, the per-output table, a residual histogram,
a predicted-vs-true scatter with the identity line and the largest errors as a gallery.
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import pandas as pd

from ftui.stats import average_precision

GALLERY = 24
HISTOGRAM_BINS = 12
THUMB = 128
# Vega's "tableau10", as the classification curves (results_step.PALETTE; not imported: it imports this module).
PALETTE = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
           "#bab0ac"]


def _thumb(path: str):
    from ftui.data.images import open_rgb

    image = open_rgb(path, draft_size=THUMB)
    image.thumbnail((THUMB, THUMB))
    return image


def _ci(result: dict[str, Any], key: str, fmt: str) -> str:
    value, ci = result.get(key), result.get(f"{key}_ci95") or [None, None]
    if value is None:
        return "n/a"
    text = format(value, fmt)
    return f"{text} (95% interval {format(ci[0], fmt)}–{format(ci[1], fmt)})" if None not in ci else text


def summary(result: dict[str, Any]) -> str:
    """The headline numbers of a task evaluation, each with its bootstrap interval."""
    n, split = result["num_items"], result["split"]
    if result["task"] == "multilabel":
        text = (f"### mAP {_ci(result, 'map', '.3f')}\non {n} {split} images · F1 at the val thresholds "
                f"{_ci(result, 'f1_at_val_thresholds', '.3f')} · F1 at 0.5 {_ci(result, 'f1_at_0.5', '.3f')} · "
                f"exact match {_ci(result, 'exact_match', '.3f')} · labels per image: "
                f"{result['label_cardinality']:.2f} true, {result['predicted_cardinality']:.2f} predicted")
    else:
        text = (f"### MAE {_ci(result, 'mae', '.4g')}\non {n} {split} images · RMSE {_ci(result, 'rmse', '.4g')} · "
                f"R² {_ci(result, 'r2', '.3f')} · predicting the train mean for every image: MAE "
                f"{_ci(result, 'mae_mean_baseline', '.4g')}")
    for note in result.get("notes", []):
        text += f"\n\n⚠ {note}"
    return text


def per_label_table(result: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(result.get("per_label") or result.get("per_output") or [])


def cooccurrence_html(result: dict[str, Any]) -> str:
    """Rows: the true label; columns: the label predicted wrongly on those images (diagonal: the label missed)."""
    table, names = result.get("cooccurrence_errors"), result["classes"]
    if not table:
        return ""
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><th>{html.escape(names[i])}</th>" + "".join(f"<td data-row='{i}' data-col='{j}'>{v}</td>"
                                                         for j, v in enumerate(row)) + "</tr>"
        for i, row in enumerate(table))
    return (f"<div class='ftui-cooccurrence'><p>Errors beside each true label (row: the true label; column: the "
            f"label got wrong on those images; diagonal: the label missed)</p><table><tr><th></th>{head}</tr>"
            f"{rows}</table></div>")


def residual_html(result: dict[str, Any]) -> str:
    """A residual (predicted - true) histogram as a table of bars, first output."""
    out, true = np.asarray(result["outputs"])[:, 0], np.asarray(result["targets"])[:, 0]
    residual = out - true
    counts, edges = np.histogram(residual, bins=HISTOGRAM_BINS)
    top = max(int(counts.max()), 1)
    rows = "".join(f"<tr><td>{edges[i]:.3g} … {edges[i + 1]:.3g}</td><td><div style='background:#4c78a8;"
                   f"height:10px;width:{120 * c / top:.0f}px'></div></td><td>{c}</td></tr>"
                   for i, c in enumerate(counts))
    return (f"<div class='ftui-residuals'><p>Residuals (predicted − true) of {html.escape(result['classes'][0])}"
            f"</p><table>{rows}</table></div>")


def _label_pr_points(result: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, float]]:
    probs, truth = np.asarray(result["outputs"]), np.asarray(result["targets"]) > 0.5
    parts, average = [], {}
    for k, name in enumerate(result["classes"]):
        if not truth[:, k].any():
            continue
        order = np.argsort(-probs[:, k], kind="stable")
        hits = truth[order, k].astype(float)
        found = np.cumsum(hits)
        precision, recall = found / np.arange(1, len(hits) + 1), found / hits.sum()
        average[name] = average_precision(probs[:, k], truth[:, k])
        parts.append(pd.DataFrame({"class": name, "recall": [0.0, *recall], "precision": [1.0, *precision]}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["class", "recall", "precision"])
    return frame, average


def chart(result: dict[str, Any]) -> Any:
    """Multilabel: per-label precision-recall curves; regression: predicted vs true with the identity line."""
    from ftui.ui.charts import line_chart

    if result["task"] == "multilabel":
        points, average = _label_pr_points(result)
        names = {name: f"{name} (AP {ap:.2f})" for name, ap in average.items()}
        colors = {names[n]: PALETTE[i % len(PALETTE)] for i, n in enumerate(result["classes"]) if n in names}
        plot = line_chart(points.assign(series=points["class"].map(names)), "recall", "precision", colors,
                          ("recall", "precision"), height=260, y_domain=[0, 1.02])
        spec = json.loads(plot.plot)
        spec["encoding"]["x"].update(axis={"format": ".0%"}, scale={"domain": [0, 1]})
        return plot.model_copy(update={"plot": json.dumps(spec)})
    out, true = np.asarray(result["outputs"])[:, 0], np.asarray(result["targets"])[:, 0]
    lo, hi = float(min(out.min(), true.min())), float(max(out.max(), true.max()))
    frame = pd.DataFrame({"true": [lo, hi], "predicted": [lo, hi], "series": "identity (perfect)"})
    plot = line_chart(frame, "true", "predicted", {"identity (perfect)": "#999999", "images": "#4c78a8"},
                      ("true", "predicted"), height=260)
    spec = json.loads(plot.plot)
    spec["encoding"]["x"]["axis"] = {}
    spec["layer"] = [{"mark": {"type": "line", "strokeDash": [4, 4]}, "encoding": {}},
                     {"data": {"values": [{"true": float(t), "predicted": float(p), "series": "images"}
                                          for t, p in zip(true, out)]},
                      "mark": {"type": "circle", "size": 40, "opacity": 0.7}, "encoding": {}}]
    return plot.model_copy(update={"plot": json.dumps(spec)})


def gallery(ctx, result: dict[str, Any], session: str | None, shown_paths: list[str]) -> list[tuple[Any, str]]:
    """The worst images (largest error first) as (thumbnail, caption), only those this session may see."""
    from ftui.data.images import ImageError

    out = []
    for row in result.get("mistakes", [])[:GALLERY]:
        if not ctx.readable(row["path"], session):
            continue
        try:
            picture = _thumb(row["path"])
        except ImageError:
            continue
        if result["task"] == "multilabel":
            caption = f"{row['true'] or '(none)'} → {row['predicted'] or '(none)'}"
        else:
            name = result["classes"][0]
            caption = f"{row[f'true_{name}']:.4g} → {row[f'predicted_{name}']:.4g}"
        out.append((picture, caption))
        shown_paths.append(row["path"])
    return out


def outputs(ctx, result: dict[str, Any], session: str | None, shown_paths: list[str]) -> tuple:
    """(summary, table, html, gallery, chart) for the Evaluate step's components."""
    side = cooccurrence_html(result) if result["task"] == "multilabel" else residual_html(result)
    return summary(result), per_label_table(result), side, gallery(ctx, result, session, shown_paths), chart(result)
