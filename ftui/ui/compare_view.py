"""Compare two runs in the app (after a fix and a retrain): accuracy curves overlaid, per-class recall
deltas, and thumbnails of the val images that flipped right->wrong and wrong->right (`ftui.results.compare`)."""

from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr
import pandas as pd

from ftui.errors import shown_message
from ftui.ui.context import AppContext
from ftui.ui.guard import session_of

log = logging.getLogger(__name__)

MAX_FLIPS = 48
# Gradio spots a parameter defaulting to a Progress and hands each call its own tracker.
PROGRESS = gr.Progress()


def curve_frame(curves: pd.DataFrame) -> pd.DataFrame:
    """Validation and training accuracy per epoch, one line per run and metric ("A val_acc", ...)."""
    rows = curves[curves["metric"].isin(["val_acc", "train_acc"])].dropna(subset=["value"])
    return pd.DataFrame({"epoch": rows["epoch"], "accuracy": rows["value"].astype(float),
                         "series": rows["run"] + " " + rows["metric"]})


# Run A in blues, run B in oranges; validation dark, training light.
CURVE_COLORS = {"A val_acc": "#1f4e99", "A train_acc": "#9db4d6", "B val_acc": "#e07b22", "B train_acc": "#f3c08f"}


def curve_chart(frame: pd.DataFrame) -> Any:
    """Both runs' accuracy curves as a chart (whole-number epochs, markers, a legend naming each line)."""
    from ftui.ui.charts import line_chart

    return line_chart(frame, "epoch", "accuracy", CURVE_COLORS, ("epoch", "accuracy"), height=240,
                      y_format=".0%")


def flip_gallery(ctx: AppContext, flipped: pd.DataFrame, change: str, session: str | None) -> list[tuple[Any, str]]:
    """Thumbnails of the flipped images of one kind (only images this session may see)."""
    from ftui.data.images import ImageError
    from ftui.ui.results_step import _thumb

    out = []
    for row in flipped[flipped["change"] == change].head(MAX_FLIPS).itertuples():
        if not ctx.readable(row.path, session):
            continue
        try:
            out.append((_thumb(row.path), f"{row.true}: A said {row.predicted_a}, B says {row.predicted_b}"))
        except ImageError:
            continue
    return out


def compare(ctx: AppContext, run_a: str, run_b: str, session: str | None) -> tuple:
    """Outputs: error, summary, curves, per-class table, right->wrong gallery, wrong->right gallery."""
    from ftui.results.compare import RIGHT_TO_WRONG, WRONG_TO_RIGHT, compare_runs
    from ftui.ui.results_step import run_folder

    if not run_a or not run_b:
        return ("**Pick two runs.**", *[gr.skip()] * 5)
    try:
        result = compare_runs(run_folder(ctx, run_a).path, run_folder(ctx, run_b).path)
    except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
        return (f"**Could not compare:** {html.escape(shown_message(log, exc, 'compare'))}", *[gr.skip()] * 5)
    summary = f"### {html.escape(result.summary())}\nA = `{run_a}` · B = `{run_b}` (judged on B's dataset)"
    if result.left_out:
        summary += f"  \n{result.left_out} images left out: their class is unknown to one of the runs"
    return ("", summary, curve_chart(curve_frame(result.curves)), result.per_class,
            flip_gallery(ctx, result.flipped, RIGHT_TO_WRONG, session),
            flip_gallery(ctx, result.flipped, WRONG_TO_RIGHT, session))


def build_compare_view(ctx: AppContext) -> tuple:
    """Lay out the compare view (inside the current Blocks) and wire it; returns its two run pickers."""
    from ftui.ui.results_step import run_choices

    with gr.Accordion("Compare two runs (e.g. before and after fixing the data)", open=False):
        with gr.Row():
            choices = run_choices(ctx)
            run_a = gr.Dropdown(choices, label="Run A (before)", allow_custom_value=True, elem_id="ftui-compare-a")
            run_b = gr.Dropdown(choices, label="Run B (after)", allow_custom_value=True, elem_id="ftui-compare-b")
            refresh = gr.Button("↻", size="sm", scale=0, min_width=40)
            button = gr.Button("Compare", variant="primary", elem_id="ftui-compare")
        error = gr.Markdown(elem_classes="ftui-error")
        summary = gr.Markdown(elem_classes="ftui-card", elem_id="ftui-compare-summary")
        with gr.Row(equal_height=False):
            curves = gr.Plot(label="Accuracy per epoch, both runs", elem_id="ftui-compare-curves")
            per_class = gr.Dataframe(label="Per-class recall (delta = B - A)", interactive=False)
        with gr.Row():
            broke = gr.Gallery(label="Right -> wrong (A was right, B is wrong)", columns=6, height=240,
                               object_fit="cover", elem_id="ftui-compare-broke")
            fixed = gr.Gallery(label="Wrong -> right (A was wrong, B is right)", columns=6, height=240,
                               object_fit="cover", elem_id="ftui-compare-fixed")

    def on_compare(a: str, b: str, request: gr.Request = None, progress=PROGRESS):
        progress(0.1, desc="Predicting the val images with both runs...")
        return compare(ctx, a, b, session_of(request))

    button.click(on_compare, [run_a, run_b], [error, summary, curves, per_class, broke, fixed],
                 api_name="compare_runs", concurrency_id="heavy")

    def fresh():
        choices = run_choices(ctx)
        return gr.update(choices=choices), gr.update(choices=choices)

    refresh.click(fresh, None, [run_a, run_b], api_visibility="private")
    return run_a, run_b
