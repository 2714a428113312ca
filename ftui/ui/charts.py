"""Tables and plot data for the UI: long-format DataFrames, the Vega-Lite line charts drawn from them
(`line_chart`, for gr.Plot) and small HTML views."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

LOSS_COLUMNS = ["step", "loss", "series"]
EPOCH_PLOT_COLUMNS = ["epoch", "value", "series"]


LOSS_SERIES = ("batch loss", "smoothed")
EPOCH_SERIES = ("train", "val")


def _empty(x: str, y: str, series: tuple[str, ...]) -> pd.DataFrame:
    """A plot frame with numeric axes and one blank (NaN) point per series.

    The browser keeps the first axis types and the first colour domain it sees: a frame without the series
    names would leave the lines that arrive later with no colour (invisible). Vega skips NaN points.
    """
    nan = float("nan")
    return pd.DataFrame({x: [nan] * len(series), y: [nan] * len(series), "series": list(series)})


def _with_every_series(frame: pd.DataFrame, x: str, y: str, series: tuple[str, ...]) -> pd.DataFrame:
    """Add a blank point for each series the frame lacks, so the colour domain stays complete."""
    missing = [s for s in series if s not in set(frame["series"])]
    if not missing:
        return frame
    return pd.concat([frame, _empty(x, y, tuple(missing))], ignore_index=True)


def batch_loss_frame(batches: pd.DataFrame) -> pd.DataFrame:
    """Training loss per optimizer step, plus a smoothed line so the trend shows through the noise."""
    if batches is None or batches.empty:
        return _empty("step", "loss", LOSS_SERIES)
    raw = batches[["step", "loss"]].dropna().astype(float)
    raw = raw.assign(series="batch loss")
    if len(raw) < 5:
        return _with_every_series(raw[LOSS_COLUMNS].reset_index(drop=True), "step", "loss", LOSS_SERIES)
    smooth = raw.assign(loss=raw["loss"].ewm(alpha=0.1).mean(), series="smoothed")
    return pd.concat([raw, smooth], ignore_index=True)[LOSS_COLUMNS]


def epoch_frame(epochs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`metric` ("loss" or "acc") per epoch in long format: one series for train, one for val."""
    if epochs is None or epochs.empty:
        return _empty("epoch", "value", EPOCH_SERIES)
    parts = []
    for split in ("train", "val"):
        column = f"{split}_{metric}"
        if column in epochs:
            part = epochs[["epoch", column]].dropna()
            parts.append(pd.DataFrame({"epoch": part["epoch"].astype(float),
                                       "value": part[column].astype(float), "series": split}))
    if not parts:
        return _empty("epoch", "value", EPOCH_SERIES)
    return _with_every_series(pd.concat(parts, ignore_index=True)[EPOCH_PLOT_COLUMNS], "epoch", "value",
                              EPOCH_SERIES)


# Points are drawn on the lines while a series has at most this many (an epoch curve; not a per-step loss).
MAX_MARKED_POINTS = 30


def whole_ticks(values: pd.Series, most: int = 8) -> list[int]:
    """Whole-number ticks 1, 2, 5, 10, 20... apart covering the values, at most `most` of them (Vega-Lite's
    tickMinStep still puts ticks at 1.5 and 2.5, which the "d" format shows as 2 and 3 twice)."""
    low, high = math.floor(float(values.min())), math.ceil(float(values.max()))
    step = 1
    while (high - low) // step + 1 > most:
        step = _next_step(step)
    first = math.ceil(low / step) * step
    return list(range(first, high + 1, step))


def _next_step(step: int) -> int:
    """1 -> 2 -> 5 -> 10 -> 20 -> 50 -> 100..."""
    digits = str(step)
    return step * 5 // 2 if digits[0] == "2" else step * 2


def line_chart(frame: pd.DataFrame, x: str, y: str, colors: dict[str, str], titles: tuple[str, str],
               height: int = 200, y_format: str | None = None, y_domain: list[float] | None = None) -> Any:
    """A Vega-Lite line chart for gr.Plot: whole-number x ticks ("d", at least 1 apart: epochs and steps
    have no halves), markers on short series (a one-epoch run shows its point), a legend naming every
    series in `colors` (its order and colours) whether it has data yet or not, axis titles kept inside
    the chart, and SVG rendering (text a browser test can read). `frame` has columns x, y and "series".

    gr.LinePlot draws its own fixed spec: fractional ticks, no markers and no way to change either.
    """
    from gradio.components.plot import AltairPlotData

    data = frame.dropna(subset=[x, y]) if frame is not None and not frame.empty else pd.DataFrame(columns=[x, y])
    records = [{x: float(row[x]), y: float(row[y]), "series": str(row["series"])} for _, row in data.iterrows()]
    longest = data.groupby("series").size().max() if len(data) else 0
    y_axis: dict[str, Any] = {"format": y_format} if y_format else {}
    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        # No width: Gradio sets the container's (for chart="line"), and themes the fonts and colours.
        "height": height, "background": "transparent",
        "usermeta": {"embedOptions": {"renderer": "svg", "actions": False}},
        "data": {"values": records},
        # Layers without their own colour: Gradio's line theme recolours a layer's colour scale. Markers are
        # filled circles (a point mark takes the theme's accent colour as its outline).
        "layer": [{"mark": {"type": "line", "strokeWidth": 2}, "encoding": {}}]
        + ([{"mark": {"type": "circle", "size": 45, "opacity": 1, "strokeWidth": 0}, "encoding": {}}]
           if longest <= MAX_MARKED_POINTS else []),
        # Room at the top for Gradio's label badge, which sits over the chart's corner.
        "padding": {"top": 44, "left": 4, "right": 8, "bottom": 4},
        "encoding": {
            "x": {"field": x, "type": "quantitative", "title": titles[0],
                  "axis": {"values": whole_ticks(data[x]) if len(data) else [], "format": "d"},
                  "scale": {"zero": False, "padding": 10}},
            "y": {"field": y, "type": "quantitative", "title": titles[1], "axis": y_axis,
                  "scale": {"zero": False, **({"domain": y_domain} if y_domain else {})}},
            "color": {"field": "series", "type": "nominal", "title": None,
                      "scale": {"domain": list(colors), "range": list(colors.values())},
                      "legend": {"orient": "top", "direction": "horizontal"}},
            "tooltip": [{"field": "series", "type": "nominal"}, {"field": x, "type": "quantitative", "format": "d"},
                        {"field": y, "type": "quantitative", "format": y_format or ".4g"}],
        },
    }
    return AltairPlotData(chart="line", plot=json.dumps(spec))


def counts_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """A class x split count table as long format (class, split, images) for a grouped bar chart."""
    if summary is None or summary.empty:
        return pd.DataFrame(columns=["class", "split", "images"])
    table = summary.copy()
    if "class" not in table.columns:
        table = table.reset_index().rename(columns={table.index.name or "index": "class"})
    splits = [c for c in table.columns if c in ("train", "val", "test")]
    long = table.melt(id_vars=["class"], value_vars=splits, var_name="split", value_name="images")
    return long[long["images"] > 0].reset_index(drop=True)


def progress_html(fraction: float, label: str) -> str:
    """A thin progress bar with a caption (plain HTML, styled by assets/style.css)."""
    pct = 0.0 if not math.isfinite(fraction) else max(0.0, min(1.0, fraction)) * 100
    return (
        f'<div class="ftui-progress"><div class="ftui-progress-fill" style="width:{pct:.1f}%"></div></div>'
        f'<div class="ftui-progress-label">{html.escape(label)}</div>'
    )


def confusion_html(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """A confusion matrix as a heat-map table: rows are true classes, columns predicted."""
    if not classes:
        return "<p>No confusion matrix yet.</p>"
    rows = [list(map(int, r)) for r in matrix]
    head = "".join(f"<th title='predicted {html.escape(c)}'>{html.escape(c)}</th>" for c in classes)
    body = []
    for i, (name, row) in enumerate(zip(classes, rows)):
        total = sum(row) or 1
        cells = []
        for j, count in enumerate(row):
            share = count / total
            diagonal = i == j
            # Correct predictions in green, mistakes in red; the shade is the share of the true class.
            colour = f"rgba(34,150,90,{0.12 + 0.78 * share:.2f})" if diagonal else (
                f"rgba(214,69,65,{0.08 + 0.8 * share:.2f})" if count else "transparent")
            # data-row/col: a click shows this cell's images (results_step.CELL_CLICK).
            cells.append(f"<td style='background:{colour};cursor:pointer' data-row='{i}' data-col='{j}' "
                         f"title='{count} of {total}: click to see them'>{count}</td>")
        body.append(f"<tr><th class='ftui-cm-true'>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return (
        "<div class='ftui-cm'><div class='ftui-cm-axis'>rows: true class &nbsp;·&nbsp; columns: predicted</div>"
        f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def format_duration(seconds: float | None) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


def format_count(n: int | None) -> str:
    """1.2M, 35.4K, 512."""
    if n is None:
        return "–"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:.1f}K"
    return f"{n:,}"
