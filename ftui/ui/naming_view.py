"""Evaluate step: the run's owner names and describes the model (issue 23 item 11).

The name and description title the run's demo page (`python app.py --demo runs/<id>`) and its model card, which
otherwise read "5-class classifier". Runs are visible to every user by design, so only the browser (or API
client) whose owner token started the run may rename it.
"""

from __future__ import annotations

import logging

import gradio as gr

from ftui.errors import shown_message
from ftui.results.modelcard import MAX_DESCRIPTION, MAX_TITLE, read_card_text, write_card_text
from ftui.ui.context import AppContext
from ftui.ui.guard import InputError, started_by, token

log = logging.getLogger(__name__)


def _text(name: str, value, limit: int) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name} must be text")
    if len(value) > limit:
        raise InputError(f"{name}: at most {limit} characters, got {len(value)}")
    return value.strip()


def name_model(ctx: AppContext, run_id: str, title: str, description: str, owner_token: str | None) -> str:
    """Save the owner's name and description for the run; a message saying what happened."""
    from ftui.ui.results_step import run_folder

    try:
        folder = run_folder(ctx, run_id)
        title, description = _text("name", title, MAX_TITLE), _text("description", description, MAX_DESCRIPTION)
        if not owner_token or not started_by(folder, token(owner_token)):
            raise InputError("only the browser (or owner token) that trained this run may name it")
        write_card_text(folder.path, title, description)
    except Exception as exc:  # noqa: BLE001 - a user error's message, else logged as an internal error
        return f"**Not saved:** {shown_message(log, exc, 'name model')}"
    shown = f"“{title}”" if title else "its default name"
    return f"Saved: the demo page and model card of `{run_id}` now show {shown}. Serve it with " \
           f"`python app.py --demo {ctx.settings.runs_dir / run_id}`."


def current_text(ctx: AppContext, run_id: str):
    """The run's saved name and description, to edit."""
    from ftui.ui.results_step import run_folder

    try:
        return read_card_text(run_folder(ctx, run_id).path) if run_id else ("", "")
    except (ValueError, OSError):
        return "", ""


def build_naming_view(ctx: AppContext, run: gr.Dropdown, owner: gr.BrowserState) -> None:
    """An accordion under Evaluate: name, description, Save; filled with the picked run's saved text."""
    with gr.Accordion("Name this model (its demo page and model card)", open=False):
        with gr.Row():
            title = gr.Textbox(label="Name", placeholder="e.g. Bee or ant?", max_length=MAX_TITLE, scale=1,
                               elem_id="ftui-model-title")
            description = gr.Textbox(label="Description", placeholder="one line for the people you show it to",
                                     max_lines=3, scale=2, elem_id="ftui-model-description")
        save = gr.Button("Save", size="sm", elem_id="ftui-model-name-save")
        note = gr.Markdown(elem_classes="ftui-note", elem_id="ftui-model-name-note")
    run.change(lambda r: current_text(ctx, r), run, [title, description], api_visibility="private")
    save.click(lambda r, t, d, o: name_model(ctx, r, t, d, o), [run, title, description, owner], note,
               api_name="name_model")
