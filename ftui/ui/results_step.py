"""Step 5, Evaluate: measure a trained run (Predict, step 6, is in predict_step.py)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ftui.errors import shown_message
from ftui.ui.charts import confusion_html
from ftui.ui.context import AppContext
from ftui.ui.guard import InputError, session_of

log = logging.getLogger(__name__)

MISTAKES_SHOWN = 24
THUMB = 256  # the misclassified photos are to be judged, not glimpsed
RUN_ID_CHARS = 160
RUN_ID = re.compile(rf"[A-Za-z0-9_.\-]{{1,{RUN_ID_CHARS}}}")

# Gradio spots a parameter defaulting to a Progress and hands each call its own tracker.
PROGRESS = gr.Progress()


@dataclass
class ResultsView:
    """The run pickers, so a run opened elsewhere can be selected here."""

    eval_run: gr.Dropdown
    predict_run: gr.Dropdown


def run_choices(ctx: AppContext) -> list[str]:
    """Runs that saved a checkpoint, newest first."""
    table = ctx.store.list_runs()
    return [rid for rid in table["id"] if (ctx.settings.runs_dir / rid / "best.pt").is_file()
            or (ctx.settings.runs_dir / rid / "last.pt").is_file()]


def preferred_run(ctx: AppContext, owner_token: str | None = None) -> str | None:
    """The run Evaluate and Predict open on: this browser's newest finished run, else the finished run with the
    best val accuracy, else the newest run with a checkpoint (was: the newest, whoever's and however it ended)."""
    import math

    choices = run_choices(ctx)
    if not choices:
        return None
    if owner_token:
        for job in reversed(ctx.jobs.jobs()):
            snap = job.snapshot()
            if ctx.owners.get(job.id) == owner_token and snap["status"] == "done" and snap["run_id"] in choices:
                return snap["run_id"]
    table = ctx.store.list_runs()
    done = table[(table["status"] == "done") & table["id"].isin(choices)]
    scores = [(v if isinstance(v, (int, float)) and math.isfinite(v) else -1.0, rid)
              for rid, v in zip(done["id"], done["best_val_acc"])]
    return max(scores)[1] if scores else choices[0]


def run_folder(ctx: AppContext, run_id: str):
    """A run under the runs folder by id; ids are plain names, so no caller can point at other folders."""
    from ftui.runs import RunError

    # ASCII letters, digits, _ . - and at most RUN_ID_CHARS of them (what new_run_id makes): a 5000-character
    # or non-ASCII id would otherwise reach the file system and fail there as an internal error.
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id) or run_id.strip(".") == "":
        shown = repr(run_id[:40]) + ("..." if len(run_id) > 40 else "") if isinstance(run_id, str) else "that"
        raise RunError(f"{shown} is not a run id (at most {RUN_ID_CHARS} ASCII letters, digits, _ . -): "
                       "pick one from the runs table")
    return ctx.store.folder(ctx.settings.runs_dir / run_id)


def predictor(ctx: AppContext, run_id: str, tta: bool = False):
    """A warm Predictor per run (reloaded when the checkpoint file changes); tta=True: one averaging test-time
    augmentation views, sharing the plain one's loaded model."""
    from ftui.results.predict import Predictor

    folder = run_folder(ctx, run_id)
    checkpoint = folder.best_path if folder.best_path.is_file() else folder.last_path
    key = (str(folder.path), checkpoint.stat().st_mtime_ns if checkpoint.is_file() else 0)
    plain = ctx.predictors.get(key)
    if plain is None:
        plain = ctx.predictors.put(key, Predictor(folder.path))
    if not tta:
        return plain
    cached = ctx.predictors.get((*key, "tta"))
    return cached if cached is not None else ctx.predictors.put((*key, "tta"), Predictor(plain.run, tta=True))


def _thumb(path: str, size: int = THUMB):
    from ftui.data.images import open_rgb

    image = open_rgb(path, draft_size=size)
    image.thumbnail((size, size))
    return image


def explained_thumb(model, path: str, size: int = THUMB):
    """A thumbnail with the Grad-CAM of what the model predicted (why it said so); plain when there is none.
    (Here, not in predict_step, which imports this module: no import cycle.)"""
    from ftui.results.explain import ExplainError, explain

    try:
        return explain(model, path, size=size).overlay
    except ExplainError:
        return _thumb(path, size)


def mistake_gallery(ctx: AppContext, mistakes: pd.DataFrame, session: str | None = None,
                    model: Any = None, shown_paths: list[str] | None = None) -> list[tuple[Any, str]]:
    """The worst mistakes as (thumbnail, "true → predicted (confidence)"): only images this session may see.
    With the run's Predictor, each thumbnail carries the Grad-CAM of the wrong answer (why it said that).
    The paths shown are appended to `shown_paths` (same order), for the fix buttons."""
    from ftui.data.images import ImageError

    out = []
    for row in mistakes.head(MISTAKES_SHOWN).itertuples():
        # Another client's run may have trained on its own upload: those images are not shown to others.
        if not ctx.readable(row.path, session):
            continue
        try:
            picture = explained_thumb(model, row.path) if model is not None else _thumb(row.path)
            out.append((picture, f"{row.true} → {row.predicted} ({row.confidence:.0%})"))
            if shown_paths is not None:
                shown_paths.append(row.path)
        except ImageError:
            continue
    return out


def _why_not_shown(ctx: AppContext, mistakes: pd.DataFrame, session: str | None, shown: int) -> str:
    """Why fewer thumbnails than mistakes (was a bare "0 of 20 shown"): '' when all that fit are shown."""
    listed = mistakes.head(MISTAKES_SHOWN)
    if shown >= len(listed):
        return ""
    gone = sum(not Path(p).is_file() for p in listed["path"])
    hidden = sum(Path(p).is_file() and not ctx.readable(p, session) for p in listed["path"])
    reasons = []
    if gone:
        reasons.append(f"{gone} no longer on the server (the run's data folder was moved or removed)")
    if hidden:
        reasons.append(f"{hidden} from a dataset another browser uploaded, not shown to this one")
    return ": " + "; ".join(reasons) if reasons else ": the others could not be read as images"


def evaluation_outputs(ctx: AppContext, result: dict[str, Any], session: str | None = None,
                       model: Any = None, shown_paths: list[str] | None = None) -> tuple:
    """Markdown, per-class table, confusion matrix and mistakes gallery from an Evaluation dict."""
    per_class = pd.DataFrame(result["per_class"])
    mistakes = pd.DataFrame(result["mistakes"], columns=["path", "true", "predicted", "confidence", "loss"])
    wrong = len(mistakes)
    interval = ""
    if "accuracy_ci95" in result:
        lo, hi = result["accuracy_ci95"]
        interval = f" (95% interval {lo:.1%}–{hi:.1%})"
    gallery = mistake_gallery(ctx, mistakes, session, model, shown_paths)
    shown = f" ({len(gallery)} of {wrong} shown below, worst first{_why_not_shown(ctx, mistakes, session, len(gallery))})" if wrong else ""
    summary = (f"### Accuracy {result['accuracy']:.1%}{interval}\non {result['num_items']} {result['split']} images · "
               f"{wrong} misclassified{shown}")
    for line in result.get("warnings", []):
        summary += f"\n\n⚠ {line}"
    return (summary, per_class, confusion_html(result["confusion"], result["classes"]),
            gallery)


# Ten distinct colours for the per-class curves (Vega's "tableau10"), reused in turn beyond ten classes.
PALETTE = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
           "#bab0ac"]
# The confusion matrix sends the clicked cell (true row, predicted column) to the server.
CELL_CLICK = """element.addEventListener('click', (event) => {
  const cell = event.target.closest('td[data-row]');
  if (cell) trigger('click', {row: Number(cell.dataset.row), col: Number(cell.dataset.col)});
});"""


def pr_chart(result: dict[str, Any]) -> Any:
    """Per-class precision-recall curves from the evaluation's saved probabilities (None without them)."""
    from ftui.results.evaluate import pr_curves
    from ftui.ui.charts import line_chart

    if not result.get("probabilities"):
        return None
    true = [row["true"] for row in result["predictions"]]
    points, average = pr_curves(result["classes"], true, result["probabilities"])
    names = {name: f"{name} (AP {ap:.2f})" for name, ap in average.items()}
    frame = points.assign(series=points["class"].map(names))
    colors = {names[n]: PALETTE[i % len(PALETTE)] for i, n in enumerate(result["classes"]) if n in names}
    chart = line_chart(frame, "recall", "precision", colors, ("recall", "precision"), height=260,
                       y_format=".0%", y_domain=[0, 1.02])
    spec = json.loads(chart.plot)
    # Recall runs 0..1: percent ticks, not the whole-number ticks of epochs.
    spec["encoding"]["x"].update(axis={"format": ".0%"}, scale={"domain": [0, 1]})
    spec["encoding"]["color"]["legend"].update(columns=4, labelLimit=200)
    return chart.model_copy(update={"plot": json.dumps(spec)})


def cell_images(ctx: AppContext, cells: dict | None, row: int, col: int, session: str | None) -> tuple:
    """(title, gallery) of the images in one confusion-matrix cell: true class `row` predicted as `col`."""
    from ftui.data.images import ImageError

    if not cells or not 0 <= row < len(cells["classes"]) or not 0 <= col < len(cells["classes"]):
        return "**Evaluate a run first**, then click a cell of its confusion matrix.", []
    true, predicted = cells["classes"][row], cells["classes"][col]
    chosen = [p for p in cells["predictions"] if p["true"] == true and p["predicted"] == predicted]
    out = []
    for item in chosen[:MISTAKES_SHOWN * 2]:
        if not ctx.readable(item["path"], session):
            continue
        try:
            out.append((_thumb(item["path"]), f"{item['confidence']:.0%}"))
        except ImageError:
            continue
    what = "correctly predicted" if row == col else f"predicted as **{predicted}**"
    return f"**{len(chosen)}** images of **{true}** {what} ({len(out)} shown, confidence under each)", out


def evaluation_of(ctx: AppContext, run_id: str, split: str, progress=None) -> dict[str, Any]:
    """A run's Evaluation dict on `split` of its dataset as it is now.

    The job's saved val evaluation is reused only while it is current: after fixes to the dataset (its
    journal, in the edited copy when the source was read-only) it lists paths that moved or vanished, so the
    run is evaluated again on the fixed files, and the result says that the run trained before the fixes."""
    from ftui.data import fixes
    from ftui.results.evaluate import evaluate as run_evaluation

    folder = run_folder(ctx, run_id)
    run = predictor(ctx, run_id).run
    data = run.config.data
    checkpoint = folder.best_path if folder.best_path.is_file() else folder.last_path
    trained = checkpoint.stat().st_mtime if checkpoint.is_file() else 0.0
    editable = Path(data).is_dir() or Path(data).suffix.lower() == ".csv" and Path(data).is_file()
    root = fixes.current_root(data, ctx.settings.workdir) if editable else None
    saved = folder.evaluation_path
    current = saved.is_file() and (root is None or (
        root == Path(data) and not fixes.changes_since(root, saved.stat().st_mtime)))
    # The job already evaluated the val split when it finished: reuse it instead of recomputing.
    # (A file saved before the per-image probabilities were kept is recomputed.)
    if split == "val" and current and saved.stat().st_mtime >= trained:
        result = json.loads(saved.read_text())
        if result.get("probabilities") or result.get("outputs"):  # outputs: a multilabel / regression run
            return result
    if progress is not None:
        progress(0.2, desc=f"Evaluating on the {split} split...")
    result = run_evaluation(run, split=split, dataset=str(root) if root is not None else None).to_dict()
    since = fixes.changes_since(root, trained) if root is not None else []
    if since:
        result.setdefault("warnings", []).append(
            f"{len(since)} fix(es) to the dataset since this run trained: evaluated on the fixed files"
            f"{'' if root == Path(data) else ' (in the edited copy)'}; train again to learn from them")
    return result


MAX_OOD_FILES = 256


def with_ood(ctx: AppContext, run_id: str, result: dict[str, Any], files: list[str] | None) -> dict[str, Any]:
    """The evaluation with an "ood" report when images from none of the classes were uploaded: the run's
    score on them against its score on the evaluated images (AUROC, FPR at 95% TPR; the run's score, energy
    and MSP).
    Shown to this user only: nothing is written into the run folder."""
    from ftui.results.evaluate import ood_report_of

    paths = [str(f) for f in (files or [])]
    if not paths or "temperature" not in result:
        return result
    if len(paths) > MAX_OOD_FILES:
        raise InputError(f"none-of-these images: at most {MAX_OOD_FILES}, got {len(paths)}")
    model = predictor(ctx, run_id)
    report = ood_report_of(model, model.scored([p["path"] for p in result["predictions"]]), paths)
    return {**result, "ood": report}





@dataclass
class EvaluateView:
    """The Evaluate step's run picker and (fn, inputs, outputs) that evaluates the picked run."""

    run: gr.Dropdown
    on_run: tuple


def _mistakes_row() -> tuple[gr.Gallery, gr.Image]:
    """The misclassified photos themselves (a heat map alone hid what the image was): click one to enlarge it,
    see where the model looked for its wrong answer beside it, and fix its label below."""
    with gr.Row(equal_height=False):
        gallery = gr.Gallery(label="Misclassified images (true → predicted, confidence): click one", columns=5,
                             height=420, object_fit="contain", allow_preview=True, scale=3,
                             elem_id="ftui-eval-gallery")
        with gr.Column(scale=1, min_width=220):
            gr.Markdown("**Where the model looked** for its wrong answer (click an image)",
                        elem_classes="ftui-image-title")
            why = gr.Image(show_label=False, type="pil", height=256, width=256, interactive=False,
                           elem_id="ftui-eval-why")
    return gallery, why


def _wire_explain(ctx: AppContext, gallery: gr.Gallery, run: gr.Dropdown, paths: gr.State, why: gr.Image) -> None:
    """The heat map of the clicked mistake, computed on demand (one image, not every thumbnail)."""

    def explain_mistake(run_id: str, shown: list[str], evt: gr.SelectData, request: gr.Request = None):
        index = evt.index if isinstance(evt.index, int) else -1
        if not run_id or not 0 <= index < len(shown or []) or not ctx.readable(shown[index], session_of(request)):
            return None
        return explained_thumb(predictor(ctx, run_id), shown[index], size=256)

    gallery.select(explain_mistake, [run, paths], why, api_visibility="private", concurrency_id="heavy")


def evaluation_view(ctx: AppContext, run_id: str, split_name: str, none_of_these: list[str] | None,
                    session: str | None, progress=None) -> tuple:
    """The Evaluate step's outputs for a run (after its error box): summary, tables, charts, mistakes."""
    from ftui.results.reliability import reliability_html

    result = with_ood(ctx, run_id, evaluation_of(ctx, run_id, split_name, progress), none_of_these)
    shown_paths: list[str] = []
    if result.get("task", "classification") != "classification":  # multilabel / regression views
        from ftui.ui import task_results

        text, table, side, pictures, plot = task_results.outputs(ctx, result, session, shown_paths)
        # No reliability diagram: calibration is a single-label softmax tool.
        return ("", text, table, side, pictures, plot, shown_paths, predictor(ctx, run_id).run.config.data, None,
                "")
    parts = evaluation_outputs(ctx, result, session, None, shown_paths)
    picked = {"classes": result["classes"], "predictions": result.get("predictions", [])}
    return ("", *parts, pr_chart(result), shown_paths, predictor(ctx, run_id).run.config.data, picked,
            reliability_html(result))


def build_evaluate(ctx: AppContext, fix_hook=None) -> EvaluateView:
    """Lay out the Evaluate step; `fix_hook(gallery, paths, source)` lays the fix buttons under the gallery."""
    gr.Markdown("How well does a run do on images it did not train on? Precision: of the images called X, how "
                "many are X. Recall: of the X images, how many were found.", elem_classes="ftui-help")
    with gr.Row():
        run = gr.Dropdown(run_choices(ctx), label="Run", scale=3, elem_id="ftui-eval-run",
                          allow_custom_value=True)
        split = gr.Radio(["val", "train", "test", "all"], value="val", label="Split", scale=2)
        refresh = gr.Button("↻", size="sm", scale=0, min_width=40)
        button = gr.Button("Evaluate", variant="primary", scale=1)
    error = gr.Markdown(elem_classes="ftui-error")
    summary = gr.Markdown("Pick a run: it is evaluated on its validation images as soon as it is chosen.",
                          elem_classes="ftui-card", elem_id="ftui-eval-summary")
    with gr.Row(equal_height=False):
        # Named empty columns, not Gradio's "1 2 3" placeholder header.
        table = gr.Dataframe(pd.DataFrame(columns=["class", "precision", "recall", "f1", "support"]),
                             label="Per class", interactive=False, scale=1, elem_id="ftui-eval-table")
        confusion = gr.HTML(label="Confusion matrix", js_on_load=CELL_CLICK, elem_id="ftui-confusion")
    with gr.Accordion("Calibration and \"none of these\"", open=True), gr.Row(equal_height=False):
        reliability = gr.HTML(elem_id="ftui-reliability")
        ood_files = gr.File(label="Optional: images from none of these classes (scores how well the model "
                            "says \"unknown\" to them)", file_count="multiple", file_types=["image"],
                            height=140, elem_id="ftui-ood-files")
    with gr.Row(equal_height=False):
        pr_plot = gr.Plot(label="Precision-recall per class (one vs rest)", elem_id="ftui-pr-plot")
        with gr.Column():
            cell_title = gr.Markdown("Click a cell of the confusion matrix to see its images.",
                                     elem_id="ftui-cell-title")
            cell_gallery = gr.Gallery(label="Images of the clicked cell", columns=6, height=240,
                                      object_fit="cover", elem_id="ftui-cell-gallery")
    gallery, why = _mistakes_row()
    # Server-side: the paths behind the thumbnails and the run's dataset, for the fix buttons.
    shown_paths, data_source, cells = gr.State([]), gr.State(""), gr.State(None)
    if fix_hook is not None:
        fix_hook(gallery, shown_paths, data_source)

    def evaluate(run_id: str, split_name: str, none_of_these: list[str] | None = None,
                 request: gr.Request = None, progress=PROGRESS):
        """Accuracy, per-class precision/recall/F1, confusion matrix, the worst mistakes, the reliability
        diagram and (with images from none of the classes) how well the run tells them apart."""
        if not run_id:
            return "**Pick a run first.**", *([gr.skip()] * 9)
        try:  # the views too: an exception there reached the client as Gradio's bare "AppError" (load test)
            return evaluation_view(ctx, run_id, split_name, none_of_these, session_of(request), progress)
        except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
            return f"**Could not evaluate:** {shown_message(log, exc, 'evaluate')}", *([gr.skip()] * 9)

    def show_cell(picked: dict | None, evt: gr.EventData, request: gr.Request = None):
        data = getattr(evt, "_data", None) or {}
        return cell_images(ctx, picked, int(data.get("row", -1)), int(data.get("col", -1)), session_of(request))

    confusion.click(show_cell, cells, [cell_title, cell_gallery], api_visibility="private")
    _wire_explain(ctx, gallery, run, shown_paths, why)
    outputs = [error, summary, table, confusion, gallery, pr_plot, shown_paths, data_source, cells, reliability]
    button.click(evaluate, [run, split, ood_files], outputs, api_name="evaluate", concurrency_id="heavy")
    # A run picked here is evaluated at once; one set by the app (the run just trained, or the best) is too,
    # through `EvaluateView.on_run` chained after it (a value set by code does not always fire .change).
    run.input(evaluate, [run, split], outputs, api_visibility="private", concurrency_id="heavy")
    refresh.click(lambda: gr.update(choices=run_choices(ctx)), None, run, api_visibility="private")

    def evaluate_opened(run_id: str, split_name: str, request: gr.Request = None, progress=PROGRESS):
        """`evaluate` for a run the app opened; nothing (not "pick a run") when there is none yet."""
        if not run_id:
            return tuple(gr.skip() for _ in outputs)
        return evaluate(run_id, split_name, None, request, progress)

    return EvaluateView(run=run, on_run=(evaluate_opened, [run, split], outputs))
