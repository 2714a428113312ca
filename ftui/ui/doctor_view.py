"""The dataset doctor in the app: a "Check dataset" button, a summary card, a table per check, thumbnails of
the flagged files and the class-balance chart."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from ftui.doctor import DEFAULT_BACKBONE, Report, check
from ftui.errors import shown_message
from ftui.ui.charts import counts_frame

log = logging.getLogger(__name__)

CHECK_TITLES = {
    "unreadable": "Unreadable files",
    "balance": "Class balance",
    "duplicates": "Duplicates",
    "properties": "Image properties",
    "labels": "Label problems (look at these first)",
}
MAX_THUMBS = 48
# Big enough to judge a label by (they were 100 px with a caption over most of them); a click enlarges.
THUMB_SIZE = 384
CAPTION_CHARS = 28
STATUS_STYLE = {
    "green": ("#e8f5e9", "#2e7d32", "All clear"),
    "warnings": ("#fff8e1", "#b26a00", "Warnings: worth a look before training"),
    "errors": ("#ffebee", "#c62828", "Errors: fix these before training"),
}
SEVERITY_MARK = {"ok": "✓", "warning": "⚠", "error": "✗"}
# What the balance and label checks are called for multilabel and regression datasets.
TASK_TITLES = {
    "multilabel": {"balance": "Label balance", "labels": "Label sets worth a second look"},
    "regression": {"balance": "Value distribution", "labels": "Values worth a second look"},
}


def check_title(name: str, task: str = "classification") -> str:
    return TASK_TITLES.get(task, {}).get(name, CHECK_TITLES.get(name, name))

# Gradio spots a parameter defaulting to a Progress and hands each call its own tracker.
PROGRESS = gr.Progress()


def card_html(report: Report) -> str:
    """The summary card: overall status colour, then one line per check."""
    background, colour, title = STATUS_STYLE[report.status]
    lines = []
    for result in report.checks:
        mark = SEVERITY_MARK[result.severity] if result.ran else "–"
        tips = "".join(f"<div style='margin-left:1.6em;opacity:.8'>→ {html.escape(t)}</div>"
                       for t in result.suggestions)
        lines.append(f"<div><b>{mark} {html.escape(check_title(result.name, report.task))}</b>: "
                     f"{html.escape(result.summary)}{tips}</div>")
    return (f"<div class='ftui-doctor-card' style='background:{background};border-left:6px solid {colour};"
            f"padding:10px 14px;border-radius:6px'>"
            f"<div style='color:{colour};font-size:1.15em;font-weight:600'>{title}</div>"
            f"<div style='opacity:.8;margin-bottom:6px'>{report.num_files} files · {html.escape(report.task_text())}"
            f"{len(report.classes)} {report.class_word}"
            f" · checked in {report.seconds:.1f} s</div>{''.join(lines)}</div>")


def display_table(report: Report, name: str) -> pd.DataFrame:
    """A check's rows for the UI: paths relative to the dataset, internal columns left out."""
    table = report.check(name).table.copy()
    if "path" in table.columns:
        table["path"] = table["path"].map(report.relative)
    return table


def gallery_items(report: Report, limit: int = MAX_THUMBS, shown: list[str] | None = None) -> list[tuple[Any, str]]:
    """(thumbnail, "label · reason") for flagged files that decode; errors first, one entry per file.
    The paths shown are appended to `shown` (same order), for the fix buttons."""
    from ftui.data.images import ImageError, open_rgb

    flagged = report.flagged()
    flagged = flagged.sort_values("level", key=lambda s: s.map({"error": 0, "warning": 1}), kind="stable")
    reasons: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    for row in flagged.itertuples(index=False):
        reasons.setdefault(row.path, []).append(row.reason)
        labels.setdefault(row.path, row.label)
    items = []
    shown = [] if shown is None else shown
    for path, why in reasons.items():
        if len(items) >= limit:
            break
        try:
            # Thumbnails, not the originals: the app never serves dataset files directly.
            image = open_rgb(path, draft_size=THUMB_SIZE)
        except ImageError:
            continue  # unreadable files are listed in their table; there is nothing to show
        image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        items.append((image, short_caption(labels[path], list(dict.fromkeys(why)))))
        shown.append(path)
    return items


def short_caption(label: str, reasons: list[str]) -> str:
    """One short line under a thumbnail ("daisy · looks like 'rose'"); the tables below hold the full reasons.
    A long caption wrapped over most of the picture it describes."""
    first = reasons[0].removeprefix("look at this first: ") if reasons else ""
    first = first.split(" (")[0]
    text = f"{label or '?'} · {first}"
    more = f" +{len(reasons) - 1}" if len(reasons) > 1 else ""
    if len(text) > CAPTION_CHARS:
        text = text[:CAPTION_CHARS - 1].rstrip() + "…"
    return text + more


def balance_chart(report: Report) -> pd.DataFrame:
    """The balance chart: images per class (or label) and split; a regression set's value histogram."""
    if report.task == "regression":
        from ftui.doctor.tasks import chart_rows

        rows = chart_rows(report.check("balance"))
        return pd.DataFrame(rows, columns=["class", "split", "images"])
    return counts_frame(report.check("balance").table)


def run_check(source: str | None, label_check: bool, backbone: str, weights_file: str | None,
              progress: Any = None, task: str | None = None) -> tuple:
    """Run the doctor on the loaded dataset; outputs: card, one table per check, chart, gallery, error."""
    empty = (gr.skip(),) * (len(CHECK_TITLES) + 3)
    if not source:
        return (*empty, "**Load a dataset first.**", gr.skip(), gr.skip())

    def report_progress(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, desc=message)

    try:
        report = check(source, labels=bool(label_check), backbone=backbone or DEFAULT_BACKBONE,
                       weights=weights_file or "imagenet", progress=report_progress, task=task)
    except Exception as exc:  # noqa: BLE001 - DoctorError, DatasetError...: a message; anything else: logged
        return (*empty, f"**Could not check the data:** {html.escape(shown_message(log, exc, 'doctor'))}",
                gr.skip(), gr.skip())
    tables = [display_table(report, name) for name in CHECK_TITLES]
    chart = balance_chart(report)
    shown: list[str] = []
    gallery = gallery_items(report, shown=shown)
    return (card_html(report), *tables, chart, gallery, "", shown, suggestions_of(report))


def suggestions_of(report: Report) -> dict[str, str]:
    """{path: the class the label check suggests} for the fix panel's "Move to class"."""
    table = report.check("labels").table
    if table.empty or "suggested" not in table.columns:
        return {}
    return {row.path: row.suggested for row in table.itertuples(index=False) if row.suggested}


@dataclass
class DoctorView:
    """What the layout wires later: the Model step's choice into `backbone`/`weights`, the fix panel."""

    backbone: gr.Textbox
    weights: gr.Textbox
    gallery: gr.Gallery
    fixes: Any


def build_doctor_section(source: gr.State, weights_check=None, task: gr.Dropdown | None = None) -> DoctorView:
    """Lay out the doctor inside the current gr.Blocks; `source` holds the loaded dataset's server path.

    Embeddings (label check, duplicates) use the Model step's backbone and weights: the layout keeps the
    hidden `backbone`/`weights` boxes in step with it (a weights file, "imagenet" or "none").
    `weights_check(weights, session)` refuses a file this session may not read (API callers included).
    `task`: the Data step's task choice ("auto", or the task the data is read as)."""
    from ftui.ui.fix_view import build_fix_panel
    from ftui.ui.guard import session_of

    with gr.Group():
        gr.Markdown("### Dataset doctor\nUnreadable files, class balance, duplicates and leakage, odd images, "
                    "and labels worth a second look. Findings are hints ranked for you, not verdicts. "
                    "Embeddings come from the backbone and weights chosen in **3 · Model** (any downloaded "
                    "ImageNet weights when it has none).")
        with gr.Row(equal_height=True):
            button = gr.Button("Check dataset", variant="secondary", scale=1, elem_id="ftui-doctor-check")
            label_check = gr.Checkbox(True, label="Label check (pretrained features)", scale=1)
            backbone = gr.Textbox(DEFAULT_BACKBONE, visible=False)
            weights = gr.Textbox("imagenet", visible=False)
    error = gr.Markdown(elem_classes="ftui-error")
    card = gr.HTML(elem_id="ftui-doctor-card")
    chart = gr.BarPlot(x="class", y="images", color="split", label="Class balance", height=240, sort=None)
    # Full width, five to a row (~250 px each), so a flagged photo can be judged without opening it.
    gallery = gr.Gallery(label="Flagged files (label · reason): click one to enlarge it and fix it below",
                         columns=5, height=520, object_fit="contain", allow_preview=True,
                         elem_id="ftui-doctor-gallery")
    panel = build_fix_panel("a flagged file", "ftui-doctor-fix")
    tables = []
    with gr.Tabs():
        for title in CHECK_TITLES.values():
            with gr.Tab(title):
                tables.append(gr.Dataframe(interactive=False, max_height=300, wrap=True))

    task_choice = task if task is not None else gr.Textbox("auto", visible=False)

    def on_click(source_path: str | None, labels_on: bool, backbone_name: str, weights_source: str | None,
                 task_name: str = "auto", request: gr.Request = None, progress=PROGRESS):
        weights_source = (weights_source or "imagenet").strip()
        if weights_source not in ("imagenet", "none"):
            if weights_check is None:
                return (*(gr.skip(),) * (len(CHECK_TITLES) + 3), "**Weights files are not accepted here.**",
                        gr.skip(), gr.skip())
            try:
                weights_check(weights_source, session_of(request))
            except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
                message = html.escape(shown_message(log, exc, "doctor weights"))
                return (*(gr.skip(),) * (len(CHECK_TITLES) + 3), f"**{message}**", gr.skip(), gr.skip())
        chosen = task_name if task_name in ("classification", "multilabel", "regression") else None
        return run_check(source_path, labels_on, backbone_name, weights_source, progress, chosen)

    button.click(on_click, [source, label_check, backbone, weights, task_choice],
                 [card, *tables, chart, gallery, error, panel.paths, panel.suggested], api_name="check_dataset")
    return DoctorView(backbone, weights, gallery, panel)
