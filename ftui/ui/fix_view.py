"""Fix buttons under a gallery of images (the doctor's flagged files, Evaluate's mistakes): move the
clicked image to another class, remove it (into `_removed/`), merge classes, undo the last change.

Every change goes through `ftui.data.fixes` (journaled in the dataset folder). Paths never come from the
browser: the gallery's paths live in server-side state, and every path is checked again to lie inside the
dataset, and the dataset inside the folders this session may read."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from ftui.errors import shown_message
from ftui.ui.context import AppContext
from ftui.ui.guard import session_of

if TYPE_CHECKING:
    from ftui.data.fixes import CopyPolicy

log = logging.getLogger(__name__)

JOURNAL_COLUMNS = ["#", "change", "files", "undone"]


@dataclass
class FixPanel:
    """The panel's components; `paths` is filled by whoever fills the gallery (same order)."""

    paths: gr.State
    selected: gr.State
    selected_box: gr.Textbox
    target: gr.Dropdown
    relabel: gr.Button
    remove: gr.Button
    undo: gr.Button
    merge_from: gr.Dropdown
    merge_into: gr.Dropdown
    merge: gr.Button
    status: gr.Markdown
    journal: gr.Dataframe
    # {path: class the checks suggest}: "Move to class" starts on it when that image is clicked.
    suggested: gr.State


def dataset_root_of(ctx: AppContext, source: str, val_fraction: float, session: str | None) -> Path:
    """The folder a loaded dataset lives in (a CSV dataset: the CSV), refused unless this session may read it."""
    from ftui.data.fixes import FixError
    from ftui.ui import data_step

    if not source:
        raise FixError("load a dataset first")
    root = Path(data_step.load(ctx, source, val_fraction).root)
    if Path(source).suffix.lower() == ".csv":
        root = Path(source)  # a CSV's fixes edit its rows (in a copy beside it), not the image folder
    if not ctx.readable(root, session):
        raise FixError("this dataset is not one this session may change")
    return root


def copy_policy(ctx: AppContext, root: Path, session: str | None) -> CopyPolicy:
    """How a fix from this session treats `root`: a shared dataset is copied for this session alone on its
    first fix (lazily; the copy counts against the work quota), anything else is edited where it is."""
    from ftui.data.fixes import CopyPolicy, FixError

    if not ctx.shared_dataset(root):
        return CopyPolicy(ctx.settings.workdir)
    if root.suffix.lower() == ".csv":  # its edited copy would have to sit beside it, in the operator's folder
        raise FixError("a CSV dataset under the server's data folder cannot be fixed from the app (the folder is "
                       "read-only to it): upload the CSV and its images to fix them, or ask the operator")
    return CopyPolicy(ctx.settings.workdir, copy=True, owner=session or "", space=ctx.quota_left())


def _inside(path: Path, root: Path) -> bool:
    from ftui.ui.paths import is_inside

    return is_inside(path, root)


def journal_frame(root: str | Path) -> pd.DataFrame:
    """The journal newest first, as a small table."""
    from ftui.data.fixes import history

    rows = []
    for e in history(root):
        what = {"relabel": f"relabel to {e.get('to_class', '')}", "remove": "remove",
                "merge": f"merge {e.get('from_class', '')} into {e.get('to_class', '')}",
                "undo": f"undo #{e.get('undoes', '')}"}[e["op"]]
        rows.append({"#": e["id"], "change": what, "files": ", ".join(b for _, b in e["moves"][:3])
                     + (" ..." if len(e["moves"]) > 3 else ""), "undone": "yes" if e["undone"] else ""})
    return pd.DataFrame(rows, columns=JOURNAL_COLUMNS)


def build_fix_panel(label: str, elem_prefix: str, paths: gr.State | None = None) -> FixPanel:
    """Lay the panel out (inside the current Blocks) under a gallery; wire it with `wire_fix_panel`.
    `paths` is the gallery's server-side list of paths (a new State when not given)."""
    paths = paths if paths is not None else gr.State([])
    selected = gr.State("")
    with gr.Group():
        gr.Markdown(f"**Fix {label}**: click an image above, then move it to its right class or remove it "
                    "from the dataset (it goes to `_removed/`). Every change is journaled and can be undone.")
        with gr.Row(equal_height=True):
            selected_box = gr.Textbox(label="Selected image", interactive=False, scale=3,
                                      elem_id=f"{elem_prefix}-selected")
            target = gr.Dropdown([], label="Move to class", scale=2, elem_id=f"{elem_prefix}-target")
            relabel = gr.Button("Move to class", scale=1, elem_id=f"{elem_prefix}-relabel")
            remove = gr.Button("Remove from dataset", variant="stop", scale=1, elem_id=f"{elem_prefix}-remove")
            undo = gr.Button("Undo last fix", scale=1, elem_id=f"{elem_prefix}-undo")
        with gr.Row(equal_height=True):
            # Choices are filled from the dataset when a box gets focus (classes change with every fix).
            merge_from = gr.Dropdown([], label="Merge every image of class", scale=2,
                                     elem_id=f"{elem_prefix}-merge-from")
            merge_into = gr.Dropdown([], label="into class", scale=2, elem_id=f"{elem_prefix}-merge-into")
            merge = gr.Button("Merge classes", scale=1, elem_id=f"{elem_prefix}-merge")
        status = gr.Markdown(elem_id=f"{elem_prefix}-status")
        journal = gr.Dataframe(headers=JOURNAL_COLUMNS, label="Fix journal (newest first)", interactive=False,
                               max_height=200)
    return FixPanel(paths, selected, selected_box, target, relabel, remove, undo, merge_from, merge_into, merge,
                    status, journal, gr.State({}))


class _Handlers:
    """The panel's event handlers: one dataset change each, then the Data step reloads."""

    def __init__(self, ctx: AppContext, data_outputs: list):
        self.ctx, self.data_outputs = ctx, data_outputs

    def on_select(self, paths: list[str], suggested: dict, source_path: str, fraction: float,
                  evt: gr.SelectData):
        from ftui.ui import data_step

        index = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not paths or not 0 <= index < len(paths):
            return "", "", gr.skip()
        path = paths[index]
        try:
            dataset = data_step.load(self.ctx, source_path, fraction)
            classes, rel = list(dataset.classes), str(Path(path).relative_to(dataset.root))
        except ValueError:
            classes, rel = [], Path(path).name
        hint = (suggested or {}).get(path)
        return path, rel, gr.update(choices=classes, value=hint if hint in classes else None)

    def apply(self, change, source_path: str, fraction: float, shown: list[str], request: gr.Request | None):
        """Run `change(root, options) -> FixResult` on the dataset, then reload the Data step."""
        from ftui.data import fixes
        from ftui.ui import data_step

        ctx = self.ctx
        try:
            root = dataset_root_of(ctx, source_path, fraction, session_of(request))
            result = change(root, {"policy": copy_policy(ctx, root, session_of(request))})
        except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
            return (f"**Could not apply the fix:** {html.escape(shown_message(log, exc, 'fix'))}", gr.skip(), gr.skip(), gr.skip(),
                    gr.skip(), *[gr.skip()] * len(self.data_outputs))
        new_source = result.root if result.copied_from else source_path
        if result.copied_from:
            ctx.grants.grant(session_of(request), result.root)
        ctx.datasets.discard(lambda key: key[0] == str(source_path))
        reloaded = data_step.show(ctx, Path(new_source), fraction)
        # The thumbnails above stay as they were: their paths follow the files, so a second click on a moved
        # image acts on where it is now (a removed one says it is already removed).
        note = " The gallery above predates this change: run it again to refresh." if shown else ""
        return (f"✓ {html.escape(result.message)}.{note}", journal_frame(result.root), "", "",
                fixes.follow_moves(list(shown or []), result), *reloaded)

    def relabel(self, source_path: str, path: str, target: str, fraction: float, shown: list[str],
                request: gr.Request = None):
        from ftui.data import fixes

        def change(root, opts):
            if not target:
                raise fixes.FixError("pick the class to move it to")
            return fixes.relabel(root, _clicked(path), target, **opts)
        return self.apply(change, source_path, fraction, shown, request)

    def remove(self, source_path: str, path: str, target: str, fraction: float, shown: list[str],
               request: gr.Request = None):
        from ftui.data import fixes

        return self.apply(lambda root, opts: fixes.remove(root, _clicked(path), **opts), source_path, fraction,
                          shown, request)

    def undo(self, source_path: str, path: str, target: str, fraction: float, shown: list[str],
             request: gr.Request = None):
        from ftui.data import fixes

        return self.apply(lambda root, opts: fixes.undo(root, **opts), source_path, fraction, shown, request)

    def merge(self, source_path: str, from_class: str, into_class: str, fraction: float, shown: list[str],
              request: gr.Request = None):
        from ftui.data import fixes

        def change(root, opts):
            if not from_class or not into_class:
                raise fixes.FixError("pick the class to merge and the class to merge it into")
            return fixes.merge(root, from_class, into_class, **opts)
        return self.apply(change, source_path, fraction, shown, request)

    def class_choices(self, source_path: str, fraction: float):
        from ftui.ui import data_step

        try:
            return gr.update(choices=list(data_step.load(self.ctx, source_path, fraction).classes))
        except ValueError:
            return gr.update(choices=[])


def _clicked(path: str) -> str:
    from ftui.data.fixes import FixError

    if not path:
        raise FixError("click an image in the gallery first")
    return path


def wire_fix_panel(ctx: AppContext, panel: FixPanel, gallery: gr.Gallery, source: gr.State,
                   val_fraction: gr.Slider, data_outputs: list) -> None:
    """Events: select an image; relabel / remove / undo / merge classes, then reload the Data step.
    `data_outputs` are the Data step's (source, status, table, chart, gallery, skipped) components."""
    h = _Handlers(ctx, data_outputs)
    private = {"api_visibility": "private"}
    gallery.select(h.on_select, [panel.paths, panel.suggested, source, val_fraction],
                   [panel.selected, panel.selected_box, panel.target], **private)
    outputs = [panel.status, panel.journal, panel.selected, panel.selected_box, panel.paths, *data_outputs]
    inputs = [source, panel.selected, panel.target, val_fraction, panel.paths]
    for button, fn in ((panel.relabel, h.relabel), (panel.remove, h.remove), (panel.undo, h.undo)):
        button.click(fn, inputs, outputs, **private)
    panel.merge.click(h.merge, [source, panel.merge_from, panel.merge_into, val_fraction, panel.paths], outputs,
                      **private)
    for box in (panel.merge_from, panel.merge_into):
        box.focus(h.class_choices, [source, val_fraction], box, **private)
