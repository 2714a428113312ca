"""Step 6, Predict: use a trained run on new images (files, the run's own val examples, a webcam), see why
with Grad-CAM, and download the model (checkpoint, torch.export .pt2, ONNX) under the run's name."""

from __future__ import annotations

import html
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ftui.errors import shown_message
from ftui.ui.context import LRU, AppContext
from ftui.ui.guard import InputError, number, private_download, session_of

EXAMPLES = 12
MAX_TOP_K = 100
MAX_PREDICT_FILES = 256
OVERLAY = 256
THUMB = 128
LIVE_CONCURRENCY = 4
PROGRESS = gr.Progress()
_examples_cache = LRU(8)
log = logging.getLogger(__name__)


@dataclass
class PredictView:
    """What other steps and the demo page reach: the run picker and the single-image outputs."""

    run: gr.Dropdown
    examples: gr.Gallery
    # on_run(run_id) -> run_outputs: chained after code sets the run, since a component in a tab that was
    # never opened is not mounted and fires no change event.
    on_run: Any
    run_outputs: list


def _thumb(path: str, size: int = THUMB):
    from ftui.data.images import open_rgb

    image = open_rgb(path, draft_size=size)
    image.thumbnail((size, size))
    return image


def run_examples(ctx: AppContext, run_id: str, session: str | None) -> list[tuple[str, str]]:
    """(path, true class) of the run's own val images that this session may read (the demo, --data-root,
    its own uploads), the run's list cached per checkpoint."""
    from ftui.results.predict import val_examples
    from ftui.ui.results_step import predictor

    model = predictor(ctx, run_id)
    key = (str(model.run.path), model.run.checkpoint)
    cached = _examples_cache.get(key)
    if cached is None:
        cached = _examples_cache.put(key, val_examples(model.run, EXAMPLES * 2))
    return [(p, c) for p, c in cached if ctx.readable(p, session)][:EXAMPLES]


VERDICT_PLACEHOLDER = "Drop an image or click an example: the answer and where the model looked appear here."


def labelled_examples(ctx: AppContext, run_id: str, session: str | None) -> list[dict]:
    """The run's examples with the truth and the model's answer: {path, true, predicted, probability}
    (predicted once per checkpoint; the examples are val images, so their labels are known)."""
    from ftui.ui.results_step import predictor

    picked = run_examples(ctx, run_id, session)
    if not picked:
        return []
    model = predictor(ctx, run_id)
    key = ("answers", str(model.run.path), model.run.checkpoint, tuple(p for p, _ in picked))
    answers = _examples_cache.get(key)
    if answers is None:
        paths = [p for p, _ in picked]
        if model.kind != "classification":
            from ftui.ui.task_predict import example_answers

            answers = _examples_cache.put(key, example_answers(model, paths))
        else:
            answers = _examples_cache.put(key, [top[0] for top in model.predict(paths, top_k=1)])
    return [{"path": p, "true": c, "predicted": a[0], "probability": a[1], "kind": model.kind}
            for (p, c), a in zip(picked, answers)]


def example_items(ctx: AppContext, run_id: str, session: str | None) -> list[tuple[Any, str]]:
    """Gallery items: a thumbnail and "✓ true: daisy, predicted: daisy" / "✗ true: daisy, predicted: rose"."""
    from ftui.results.modelcard import truth_caption

    try:
        rows = labelled_examples(ctx, run_id, session)
    except (ValueError, OSError) as exc:
        log.warning("examples for %s: %s", run_id, exc)
        return []
    from ftui.ui.task_predict import example_caption

    return [(_thumb(r["path"]), html.unescape(truth_caption(r)) if r["kind"] == "classification"
             else example_caption(r, r["kind"])) for r in rows]


def predict_example(ctx: AppContext, run_id: str, index: int, k: int, session: str | None,
                    tta: bool = False) -> tuple:
    """predict_single on the clicked example (looked up on the server: the browser only sends an index),
    its verdict led by the truth."""
    picked = run_examples(ctx, run_id, session) if run_id else []
    if not isinstance(index, int) or not 0 <= index < len(picked):
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    path, true = picked[index]
    error, top, verdict, overlay = predict_single(ctx, run_id, path, k, tta)
    probs = top.get("value") if isinstance(top, dict) and "__type__" in top else top  # a gr.update or a dict
    kind = predictor_kind(ctx, run_id)
    if kind != "classification" and not error:
        from ftui.ui.results_step import predictor
        from ftui.ui.task_predict import example_answers, truth_line

        (predicted, _), = example_answers(predictor(ctx, run_id), [path])
        return error, top, f"{truth_line(kind, true, predicted)}\n\n{verdict}", overlay
    if probs:
        guess = max(probs, key=probs.get)
        mark = "✓ right" if guess == true else f"✗ wrong: predicted **{guess}**"
        verdict = f"**True class: {true}** · {mark}\n\n{verdict}"
    return error, top, verdict, overlay


def predictor_kind(ctx: AppContext, run_id: str) -> str:
    """The run's task ("classification" when it cannot be loaded: the caller's own error says why)."""
    from ftui.ui.results_step import predictor

    try:
        return predictor(ctx, run_id).kind
    except Exception:  # noqa: BLE001 - predict_single already reported the failure
        return "classification"


def download(path: Path) -> str:
    """A private copy for one response (the runs folder itself is never served), keeping the file's name."""
    return private_download(path, gr.utils.get_upload_folder())


def checked(name: str, value: Any) -> bool:
    """A checkbox's value from an API client: true or false (None: false), anything else an InputError."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise InputError(f"{name} must be true or false, got {str(value)[:40]!r}")


def verdict_text(verdict) -> str:
    """The sentence for a prediction: "unknown: ..." below the run's abstain threshold, "unsure between A and
    B" when the top two are close, else the calibrated confidence in words (ftui/results/trust.py)."""
    from ftui.results.explain import confidence_words

    return verdict.words() or confidence_words(verdict.top if len(verdict.top) > 1 else verdict.pair)


def label_value(verdict) -> dict:
    """The Top predictions box: calibrated probabilities, titled with the verdict when it is not a class."""
    title = {"unknown": "Closest classes (none fits: unknown)",
             "unsure": "Top predictions (unsure)"}.get(verdict.kind, "Top predictions")
    # No big headline naming one class when the answer is "unknown" or "unsure": the bars stay, titled so.
    return gr.update(value={name: prob for name, prob in verdict.top}, label=title,
                     show_heading=verdict.kind == "class")


def explain_one(model, image, verdict) -> tuple[str, Any]:
    """The sentence for a prediction and its Grad-CAM overlay (None with a note when it cannot be drawn)."""
    from ftui.results.explain import ExplainError, explain

    words = verdict_text(verdict)
    try:
        overlay = explain(model, image, size=OVERLAY).overlay
    except ExplainError as exc:
        return f"{words}\n\n_{exc}_", None
    return words + "\n\nThe heat map shows where the model looked for this answer (red = most).", overlay


def predict_single(ctx: AppContext, run_id: str, image, k: int, tta: bool = False) -> tuple:
    """error, label dict, verdict and overlay for one image (path or PIL); tta: averaged over the
    test-time augmentation views (ftui.results.predict.tta_views)."""
    from ftui.data.images import ImageError
    from ftui.ui.results_step import predictor

    if not run_id:
        return "**Pick a run first** (train one in step 4).", None, "", None
    if image is None:
        return "", None, "", None
    try:
        k = number("k", k, 1, MAX_TOP_K)
        model = predictor(ctx, run_id, tta=checked("tta", tta))
        if model.kind != "classification":  # every label's probability, or the value
            from ftui.ui.task_predict import task_single

            return "", *task_single(model, image)
        (verdict,) = model.verdicts([image], top_k=k)
        words, overlay = explain_one(model, image, verdict)
    except ImageError as exc:
        return f"**Not an image we can read:** {exc}", None, "", None
    except Exception as exc:  # noqa: BLE001 - a user error's message, else logged as an internal error
        return f"**Could not predict:** {shown_message(log, exc, 'predict')}", None, "", None
    return "", label_value(verdict), words, overlay


def predict_files(ctx: AppContext, run_id: str, files: list[str] | None, k: float, progress=PROGRESS,
                  tta: bool = False):
    """Top-k labels for every file, Grad-CAM overlays, a CSV of them, and the checkpoint named after the run."""
    from ftui.data.images import ImageError
    from ftui.results.export import named_checkpoint
    from ftui.runs import write_bytes_atomic
    from ftui.ui.results_step import predictor

    skip = [gr.skip()] * 7
    if not run_id:
        return "**Pick a run first** (train one in step 4).", *skip
    paths = [str(f) for f in (files or [])]
    if not paths:
        return "**Add at least one image.**", *skip
    try:
        k = number("k", k, 1, MAX_TOP_K)
        if len(paths) > MAX_PREDICT_FILES:
            raise InputError(f"files: at most {MAX_PREDICT_FILES} images per call, got {len(paths)}")
        progress(0.1, desc="Loading the model...")
        model = predictor(ctx, run_id, tta=checked("tta", tta))
        progress(0.3, desc=f"Predicting {len(paths)} image{'s' if len(paths) != 1 else ''}...")
        if model.kind != "classification":
            first, words, overlay, thumbs, table = task_files(model, paths)
        else:
            verdicts = model.verdicts(paths, top_k=int(k))
            table = model.predictions_table(paths, top_k=int(k), verdicts=verdicts)
            # Photos first (issue 23 item 7): the gallery shows what was sent; a click shows that image's heat
            # map in the result pane (on_gallery_pick). Only the first image's Grad-CAM is computed up front.
            words, overlay = explain_one(model, paths[0], verdicts[0])
            thumbs = [(_thumb(p), v.label if v.kind != "class" else f"{v.top[0][0]} ({v.top[0][1]:.0%})")
                      for p, v in zip(paths, verdicts)]
            first = label_value(verdicts[0])
        table["path"] = [Path(p).name for p in paths]
        # A unique name written atomically: parallel calls never share (and truncate) one file.
        out = model.run.path / "predictions" / f"predictions-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.csv"
        write_bytes_atomic(out, table.to_csv(index=False).encode())
    except ImageError as exc:
        return f"**Not an image we can read:** {exc}", *skip
    except Exception as exc:  # noqa: BLE001 - a user error's message, else logged as an internal error
        return f"**Could not predict:** {shown_message(log, exc, 'predict files')}", *skip
    return ("", first, words, overlay, thumbs, table,
            gr.update(value=download(out), visible=True),
            gr.update(value=download(named_checkpoint(model.run)), visible=True))


def task_files(model, paths: list[str]) -> tuple:
    """A multilabel or regression run on several files: (first label box, its verdict, its overlay, the
    thumbnails captioned with each answer, the table: labels + p_<label> + thresholds, or the values)."""
    from ftui.ui.task_predict import answers, explain_task, label_update, verdict_markdown

    found = answers(model, paths)
    explained, overlay = explain_task(model, paths[0], found[0])  # the others' on a click (on_gallery_pick)
    thumbs = [(_thumb(p), a["text"]) for p, a in zip(paths, found)]
    return (label_update(model, found[0]), verdict_markdown(model, found[0], explained), overlay, thumbs,
            model.predictions_table(paths))


def export_download(ctx: AppContext, run_id: str, fmt: str, progress=PROGRESS):
    """Export the run and hand the file over as a download named after the run."""
    from ftui.results.export import export_run
    from ftui.ui.results_step import predictor

    if not run_id:
        return "**Pick a run first.**", gr.skip()
    try:
        progress(0.2, desc=f"Exporting {fmt} and checking it against PyTorch...")
        result = export_run(predictor(ctx, run_id).run, fmt)
    except Exception as exc:  # noqa: BLE001 - a user error's message, else logged as an internal error
        return f"**Could not export:** {shown_message(log, exc, f'export {fmt}')}", gr.skip()
    return (f"{fmt} export ready: {result.note}.",
            gr.update(value=download(result.path), visible=True, label=f"Download {result.path.name}"))


def _controls_column(ctx: AppContext) -> dict[str, Any]:
    """The left column: run picker, image sources, examples, top k and the model downloads."""
    from ftui.ui.results_step import run_choices

    c: dict[str, Any] = {}
    with gr.Row():
        c["run"] = gr.Dropdown(run_choices(ctx), label="Run", scale=4, elem_id="ftui-predict-run",
                               allow_custom_value=True)
        c["refresh"] = gr.Button("↻", size="sm", scale=0, min_width=40)
    with gr.Tabs():
        with gr.Tab("Files"):
            c["images"] = gr.File(label="Images", file_count="multiple", file_types=["image"], height=140,
                                  elem_id="ftui-predict-files")
            c["button"] = gr.Button("Predict", variant="primary", elem_id="ftui-predict")
        with gr.Tab("Webcam", elem_id="ftui-webcam-tab"):
            c["webcam"] = gr.Image(sources=["webcam"], type="pil", label="Take a photo", height=260,
                                   elem_id="ftui-webcam")
        with gr.Tab("Live", elem_id="ftui-live-tab"):
            c["live"] = gr.Image(sources=["webcam"], type="pil", streaming=True, height=260,
                                 label="Live: predicts about twice a second", elem_id="ftui-live")
    c["examples"] = gr.Gallery(label="Examples from this run's validation images: click one", columns=4,
                               height=300, object_fit="cover", allow_preview=False, elem_id="ftui-examples")
    c["top_k"] = gr.Slider(1, 10, value=3, step=1, label="Top k")
    c["tta"] = gr.Checkbox(False, label="Test-time augmentation: average the image, its mirror and 4 corner crops "
                           "(6x the work; not for the live stream)", elem_id="ftui-tta")
    c["error"] = gr.Markdown(elem_classes="ftui-error")
    with gr.Accordion("Download the model", open=False):
        gr.Markdown("`.pt`: the checkpoint (`torch.load(weights_only=True)`). `.pt2`: a torch.export "
                    "program that runs without ftui. `.onnx`: for onnxruntime and other runtimes.",
                    elem_classes="ftui-note")
        c["model_file"] = gr.DownloadButton("Download the checkpoint (.pt)", visible=False,
                                            elem_id="ftui-download-pt")
        with gr.Row():
            c["pt2_button"] = gr.Button("Export .pt2", size="sm", elem_id="ftui-export-pt2")
            # Always shown: when the onnx packages are missing, pressing it says which and how to install.
            c["onnx_button"] = gr.Button("Export .onnx", size="sm", elem_id="ftui-export-onnx")
        c["export_note"] = gr.Markdown(elem_classes="ftui-note")
        c["export_file"] = gr.DownloadButton("Download", visible=False, elem_id="ftui-export-file")
    return c


def _results_column() -> dict[str, Any]:
    """The right column: the verdict, top labels, Grad-CAM, and every image's result."""
    c: dict[str, Any] = {}
    c["verdict"] = gr.Markdown(VERDICT_PLACEHOLDER, elem_classes="ftui-card", elem_id="ftui-verdict")
    with gr.Row(equal_height=False):
        c["label"] = gr.Label(label="Top predictions", elem_id="ftui-label", scale=1)
        with gr.Column(scale=1, min_width=OVERLAY):
            # A heading instead of Gradio's label badge, which sat over the top of the heat map.
            gr.Markdown("**Where the model looked** (Grad-CAM)", elem_classes="ftui-image-title")
            c["overlay"] = gr.Image(show_label=False, type="pil", height=OVERLAY, width=OVERLAY,
                                    interactive=False, elem_id="ftui-gradcam", buttons=["download"])
    c["gallery"] = gr.Gallery(label="All images (top-1 label): click one for its heat map", columns=6, height=240,
                              object_fit="cover", elem_id="ftui-predict-gallery")
    c["table"] = gr.Dataframe(label="Predictions", interactive=False, max_height=240)
    c["csv_file"] = gr.File(label="Predictions as CSV", visible=False)
    return c


class _Handlers:
    """The Predict step's event handlers (the app's predict and export API endpoints among them)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def on_run(self, run_id: str, owner_token: str | None = None, request: gr.Request = None):
        """The run's own val images as examples and its checkpoint download."""
        from ftui.results.export import named_checkpoint

        if not run_id:
            return gr.update(value=[]), gr.update(visible=False)
        self.ctx.grant_owners_run(run_id, owner_token, session_of(request))
        try:
            items = example_items(self.ctx, run_id, session_of(request))
            checkpoint = gr.update(value=download(named_checkpoint(run_folder_path(self.ctx, run_id))),
                                   visible=True)
        except (ValueError, OSError) as exc:
            log.warning("examples for %s: %s", run_id, exc)
            return gr.update(value=[]), gr.update(visible=False)
        return items, checkpoint

    def on_example(self, run_id: str, k: float, tta: bool, evt: gr.SelectData, request: gr.Request):
        """Predict the clicked example, its truth beside the answer."""
        return predict_example(self.ctx, run_id, evt.index, int(k), session_of(request), tta)

    def predict(self, run_id: str, files: list[str] | None, k: float, tta: bool = False, progress=PROGRESS):
        """Top-k labels with probabilities for each image, Grad-CAM, a CSV of them, and the run's checkpoint;
        tta: each image's answer averaged over it, its mirror and 4 corner crops."""
        return predict_files(self.ctx, run_id, files, k, progress, tta)

    def on_gallery_pick(self, run_id: str, files: list[str] | None, k: float, tta: bool, evt: gr.SelectData):
        """The clicked photo's own answer and heat map in the result pane (the files are the ones just sent)."""
        paths = [str(f) for f in (files or [])]
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(paths):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return predict_single(self.ctx, run_id, paths[evt.index], int(k), tta)

    def predict_image(self, run_id: str, image, k: float, tta: bool = False):
        """Top-k labels, the confidence in words and a Grad-CAM overlay for one image; tta as in predict."""
        return predict_single(self.ctx, run_id, image, k, tta)

    def export_pt2(self, run_id: str, progress=PROGRESS):
        """The run as a torch.export program (.pt2), checked against PyTorch on its val images."""
        return export_download(self.ctx, run_id, "pt2", progress)

    def export_onnx(self, run_id: str, progress=PROGRESS):
        """The run as ONNX, checked with onnxruntime against PyTorch on its val images."""
        return export_download(self.ctx, run_id, "onnx", progress)

    def run_list(self):
        from ftui.ui.results_step import run_choices

        return gr.update(choices=run_choices(self.ctx))


def build(ctx: AppContext) -> PredictView:
    """Lay out the Predict step and wire predict, examples, webcam, live and the exports."""
    gr.Markdown("Try a run on new images: drop files, click one of the run's own validation images, or use a "
                "webcam. The heat map shows which part of the image decided the answer.", elem_classes="ftui-help")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            c = _controls_column(ctx)
        with gr.Column(scale=3, min_width=420):
            c.update(_results_column())
    h = _Handlers(ctx)
    private = {"api_visibility": "private"}
    run, top_k, tta = c["run"], c["top_k"], c["tta"]
    single = [c[k] for k in ("error", "label", "verdict", "overlay")]
    outputs = single + [c[k] for k in ("gallery", "table", "csv_file", "model_file")]
    export_outputs = [c["export_note"], c["export_file"]]
    c["button"].click(h.predict, [run, c["images"], top_k, tta], outputs, api_name="predict",
                      concurrency_id="heavy")
    c["examples"].select(h.on_example, [run, top_k, tta], single, concurrency_id="heavy", **private)
    c["gallery"].select(h.on_gallery_pick, [run, c["images"], top_k, tta], single, concurrency_id="heavy",
                        **private)
    c["webcam"].change(h.predict_image, [run, c["webcam"], top_k, tta], single, api_name="predict_image",
                       concurrency_id="heavy")
    # No progress overlay per frame (it greyed the results out and flashed a timer). Live frames from every viewer share a queue of their own: at most LIVE_CONCURRENCY frames are worked on
    # at once (Grad-CAM is a forward and a backward pass), later frames wait their turn instead of failing.
    # Callable by API clients (undocumented) so load tests can drive it like a browser does.
    c["live"].stream(h.predict_image, [run, c["live"], top_k], single, stream_every=0.5, time_limit=120,
                     concurrency_limit=LIVE_CONCURRENCY, concurrency_id="live", api_name="predict_live",
                     api_visibility="undocumented", show_progress="hidden")
    c["pt2_button"].click(h.export_pt2, run, export_outputs, api_name="export_pt2", concurrency_id="heavy")
    c["onnx_button"].click(h.export_onnx, run, export_outputs, api_name="export_onnx", concurrency_id="heavy")
    run.change(h.on_run, run, [c["examples"], c["model_file"]], **private)
    c["refresh"].click(h.run_list, None, run, **private)
    return PredictView(run=run, examples=c["examples"], on_run=h.on_run,
                       run_outputs=[c["examples"], c["model_file"]])


def run_folder_path(ctx: AppContext, run_id: str) -> Path:
    from ftui.ui.results_step import run_folder

    return run_folder(ctx, run_id).path
