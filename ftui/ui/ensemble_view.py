"""Combine finished runs into an ensemble from the app (ftui/results/ensemble.py; the CLI is `ftui ensemble`):
a new run that averages their calibrated probabilities, listed with the others for Evaluate and Predict."""

from __future__ import annotations

import html
import logging

import gradio as gr

from ftui.errors import shown_message
from ftui.ui.context import AppContext
from ftui.ui.guard import InputError

PROGRESS = gr.Progress()
log = logging.getLogger(__name__)


def combine(ctx: AppContext, run_ids: list[str] | None) -> tuple[str, str]:
    """(error, summary): the new ensemble run's id, accuracy and gain over its best member with its interval."""
    from ftui.results.ensemble import MAX_MEMBERS, make_ensemble
    from ftui.runs import new_run_id
    from ftui.ui.results_step import run_folder

    try:
        ids = [str(r) for r in (run_ids or []) if isinstance(r, str)]
        if not 2 <= len(ids) <= MAX_MEMBERS or len(set(ids)) != len(ids):
            raise InputError(f"pick 2 to {MAX_MEMBERS} different runs")
        folders = [run_folder(ctx, r).path for r in ids]
        out = ctx.settings.runs_dir / new_run_id("ensemble")
        report = make_ensemble(folders, out)
    except Exception as exc:  # noqa: BLE001 - a user error's message, else logged as an internal error
        return f"**Could not combine:** {html.escape(shown_message(log, exc, 'ensemble'))}", ""
    low, high = report["gain_ci95"]
    return "", (f"**Ensemble `{out.name}`**: val accuracy {report['accuracy']:.1%}; best member "
                f"{report['best_member_accuracy']:.1%}, gain {report['gain'] * 100:+.1f} points (95% interval "
                f"{low * 100:+.1f} to {high * 100:+.1f}); {report['wrong->right']} images wrong->right, "
                f"{report['right->wrong']} right->wrong of {report['n']}. Pick it in Evaluate or Predict like any run.")


def build_ensemble_view(ctx: AppContext) -> gr.Dropdown:
    """Lay out the ensemble accordion and wire it; returns its run picker."""
    from ftui.ui.results_step import run_choices

    with gr.Accordion("Combine runs into an ensemble (averaged calibrated probabilities)", open=False):
        with gr.Row():
            runs = gr.Dropdown(run_choices(ctx), multiselect=True, label="Runs (same classes and image size)",
                               elem_id="ftui-ensemble-runs", scale=4)
            refresh = gr.Button("↻", size="sm", scale=0, min_width=40)
            button = gr.Button("Combine", variant="primary", elem_id="ftui-ensemble")
        error = gr.Markdown(elem_classes="ftui-error")
        summary = gr.Markdown(elem_classes="ftui-card", elem_id="ftui-ensemble-summary")

    def on_combine(run_ids: list[str] | None, progress=PROGRESS):
        progress(0.1, desc="Combining the runs and evaluating the ensemble on val...")
        return combine(ctx, run_ids)

    button.click(on_combine, runs, [error, summary], api_name="make_ensemble", concurrency_id="heavy")
    refresh.click(lambda: gr.update(choices=run_choices(ctx)), None, runs, api_visibility="private")
    return runs
