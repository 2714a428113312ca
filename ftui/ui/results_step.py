"""Steps 5 and 6, Evaluate and Predict: measure a trained run, then use it on new images."""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ftui.ui.charts import confusion_html
from ftui.ui.context import AppContext
from ftui.runs import write_bytes_atomic
from ftui.ui.guard import InputError, number, private_download, session_of

MISTAKES_SHOWN = 24
MAX_TOP_K = 100
MAX_PREDICT_FILES = 256
THUMB = 128
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"

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


def run_folder(ctx: AppContext, run_id: str):
    """A run under the runs folder by id; ids are plain names, so no caller can point at other folders."""
    from ftui.runs import RunError

    if not re.fullmatch(r"[\w.\-]+", run_id or "") or run_id.strip(".") == "":
        raise RunError(f"{run_id!r} is not a run id: pick one from the runs table")
    return ctx.store.folder(ctx.settings.runs_dir / run_id)


def predictor(ctx: AppContext, run_id: str):
    """A warm Predictor per run (reloaded when the checkpoint file changes)."""
    from ftui.predict import Predictor

    folder = run_folder(ctx, run_id)
    checkpoint = folder.best_path if folder.best_path.is_file() else folder.last_path
    key = (str(folder.path), checkpoint.stat().st_mtime_ns if checkpoint.is_file() else 0)
    cached = ctx.predictors.get(key)
    return cached if cached is not None else ctx.predictors.put(key, Predictor(folder.path))


def _thumb(path: str):
    from ftui.images import open_rgb

    image = open_rgb(path, draft_size=THUMB)
    image.thumbnail((THUMB, THUMB))
    return image


def mistake_gallery(ctx: AppContext, mistakes: pd.DataFrame, session: str | None = None) -> list[tuple[Any, str]]:
    """The worst mistakes as (thumbnail, "true → predicted (confidence)"): only images this session may see."""
    from ftui.images import ImageError

    out = []
    for row in mistakes.head(MISTAKES_SHOWN).itertuples():
        # Another client's run may have trained on its own upload: those images are not shown to others.
        if not ctx.readable(row.path, session):
            continue
        try:
            out.append((_thumb(row.path), f"{row.true} → {row.predicted} ({row.confidence:.0%})"))
        except ImageError:
            continue
    return out


def evaluation_outputs(ctx: AppContext, result: dict[str, Any], session: str | None = None) -> tuple:
    """Markdown, per-class table, confusion matrix and mistakes gallery from an Evaluation dict."""
    per_class = pd.DataFrame(result["per_class"])
    mistakes = pd.DataFrame(result["mistakes"], columns=["path", "true", "predicted", "confidence", "loss"])
    wrong = len(mistakes)
    interval = ""
    if "accuracy_ci95" in result:
        lo, hi = result["accuracy_ci95"]
        interval = f" (95% interval {lo:.1%}–{hi:.1%})"
    summary = (f"### Accuracy {result['accuracy']:.1%}{interval}\non {result['num_items']} {result['split']} images · "
               f"{wrong} misclassified")
    for line in result.get("warnings", []):
        summary += f"\n\n⚠ {line}"
    return (summary, per_class, confusion_html(result["confusion"], result["classes"]),
            mistake_gallery(ctx, mistakes, session))


def build_evaluate(ctx: AppContext) -> gr.Dropdown:
    """Lay out the Evaluate step."""
    gr.Markdown("How well does a run do on images it did not train on? Precision: of the images called X, how "
                "many are X. Recall: of the X images, how many were found.", elem_classes="ftui-help")
    with gr.Row():
        run = gr.Dropdown(run_choices(ctx), label="Run", scale=3, elem_id="ftui-eval-run",
                          allow_custom_value=True)
        split = gr.Radio(["val", "train", "test", "all"], value="val", label="Split", scale=2)
        refresh = gr.Button("↻", size="sm", scale=0, min_width=40)
        button = gr.Button("Evaluate", variant="primary", scale=1)
    error = gr.Markdown(elem_classes="ftui-error")
    summary = gr.Markdown(elem_classes="ftui-card")
    with gr.Row(equal_height=False):
        table = gr.Dataframe(label="Per class", interactive=False, scale=1)
        confusion = gr.HTML(label="Confusion matrix")
    gallery = gr.Gallery(label="Misclassified images (true → predicted, confidence)", columns=8, height=300,
                         object_fit="cover")

    def evaluate(run_id: str, split_name: str, request: gr.Request = None, progress=PROGRESS):
        """Accuracy, per-class precision/recall/F1, confusion matrix and the worst mistakes of a run."""
        from ftui.evaluate import evaluate as run_evaluation

        if not run_id:
            return "**Pick a run first.**", *([gr.skip()] * 4)
        try:
            folder = run_folder(ctx, run_id)
            saved = folder.evaluation_path
            # The job already evaluated the val split when it finished: reuse it instead of recomputing.
            if split_name == "val" and saved.is_file() and saved.stat().st_mtime >= folder.best_path.stat().st_mtime:
                result = json.loads(saved.read_text())
            else:
                progress(0.2, desc=f"Evaluating on the {split_name} split...")
                result = run_evaluation(predictor(ctx, run_id).run, split=split_name).to_dict()
        except (ValueError, OSError) as exc:
            return f"**Could not evaluate:** {exc}", *([gr.skip()] * 4)
        return "", *evaluation_outputs(ctx, result, session_of(request))

    outputs = [error, summary, table, confusion, gallery]
    button.click(evaluate, [run, split], outputs, api_name="evaluate", concurrency_id="heavy")
    refresh.click(lambda: gr.update(choices=run_choices(ctx)), None, run, api_visibility="private")
    return run


def build_predict(ctx: AppContext) -> gr.Dropdown:
    """Lay out the Predict step."""
    gr.Markdown("Drop new images to see what a run thinks they are. Download the predictions as CSV, or the "
                "trained model itself (its classes and preprocessing travel inside the file).",
                elem_classes="ftui-help")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            with gr.Row():
                run = gr.Dropdown(run_choices(ctx), label="Run", scale=4, elem_id="ftui-predict-run",
                              allow_custom_value=True)
                refresh = gr.Button("↻", size="sm", scale=0, min_width=40)
            images = gr.File(label="Images", file_count="multiple", file_types=["image"], height=160,
                             elem_id="ftui-predict-files")
            examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in
                              (".png", ".jpg", ".jpeg", ".webp"))
            if examples:
                gr.Examples([[[p]] for p in examples[:8]], inputs=images, label="Example images")
            top_k = gr.Slider(1, 10, value=3, step=1, label="Top k")
            button = gr.Button("Predict", variant="primary", elem_id="ftui-predict")
            error = gr.Markdown(elem_classes="ftui-error")
            model_file = gr.DownloadButton("Download the trained model (.pt)", visible=False)
        with gr.Column(scale=3, min_width=420):
            label = gr.Label(label="Top predictions (first image)", elem_id="ftui-label")
            gallery = gr.Gallery(label="All images (top-1 label)", columns=6, height=240, object_fit="cover")
            table = gr.Dataframe(label="Predictions", interactive=False, max_height=240)
            csv_file = gr.File(label="Predictions as CSV", visible=False)

    def predict(run_id: str, files: list[str] | None, k: float, progress=PROGRESS):
        """Top-k labels with probabilities for each image, a CSV of them, and the run's checkpoint."""
        from ftui.images import ImageError

        if not run_id:
            return "**Pick a run first** (train one in step 4).", *([gr.skip()] * 5)
        paths = [str(f) for f in (files or [])]
        if not paths:
            return "**Add at least one image.**", *([gr.skip()] * 5)
        try:
            k = number("k", k, 1, MAX_TOP_K)
            if len(paths) > MAX_PREDICT_FILES:
                raise InputError(f"files: at most {MAX_PREDICT_FILES} images per call, got {len(paths)}")
            progress(0.1, desc="Loading the model...")
            model = predictor(ctx, run_id)
            progress(0.3, desc=f"Predicting {len(paths)} image{'s' if len(paths) != 1 else ''}...")
            results = model.predict(paths, top_k=int(k))
            table = model.predictions_table(paths, top_k=int(k))
        except ImageError as exc:
            return f"**Not an image we can read:** {exc}", *([gr.skip()] * 5)
        except ValueError as exc:
            return f"**Could not predict:** {exc}", *([gr.skip()] * 5)
        table["path"] = [Path(p).name for p in paths]
        # A unique name written atomically: parallel calls never share (and truncate) one file.
        out = model.run.path / "predictions" / f"predictions-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.csv"
        write_bytes_atomic(out, table.to_csv(index=False).encode())
        thumbs = [(_thumb(p), f"{top[0][0]} ({top[0][1]:.0%})") for p, top in zip(paths, results)]
        checkpoint = model.run.path / f"{model.run.checkpoint}.pt"
        # Each response gets private copies; the runs folder itself is never served.
        upload_folder = gr.utils.get_upload_folder()
        return ("", {name: prob for name, prob in results[0]}, thumbs, table,
                gr.update(value=private_download(out, upload_folder), visible=True),
                gr.update(value=private_download(checkpoint, upload_folder), visible=True))

    def on_run(run_id: str):
        if not run_id:
            return gr.update(visible=False)
        try:
            folder = run_folder(ctx, run_id)
        except ValueError:
            return gr.update(visible=False)
        path = folder.best_path if folder.best_path.is_file() else folder.last_path
        if not path.is_file():
            return gr.update(visible=False)
        return gr.update(value=private_download(path, gr.utils.get_upload_folder()), visible=True)

    outputs = [error, label, gallery, table, csv_file, model_file]
    button.click(predict, [run, images, top_k], outputs, api_name="predict", concurrency_id="heavy")
    run.change(on_run, run, model_file, api_visibility="private")
    refresh.click(lambda: gr.update(choices=run_choices(ctx)), None, run, api_visibility="private")
    return run
