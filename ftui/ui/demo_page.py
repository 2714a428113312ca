"""`python app.py --demo RUN_DIR`: a locked, predict-only page for one run (upload, webcam, top-k bars,
Grad-CAM) with its model card. No training, no other runs, no files served but the predictions."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from ftui.ui.context import AppContext, AppSettings
from ftui.ui.predict_step import (
    LIVE_CONCURRENCY,
    OVERLAY,
    VERDICT_PLACEHOLDER,
    example_items,
    predict_example,
    predict_single,
)


def demo_settings(run_dir: Path, workdir: Path) -> AppSettings:
    """Settings that see only this run (its parent as the runs folder) and read only its own data folder."""
    from ftui.results.loading import load_run

    run = load_run(run_dir)
    data = Path(run.config.data).expanduser().resolve()
    return AppSettings(runs_dir=run.path.parent.resolve(), workdir=workdir,
                       data_root=data if data.is_dir() else data.parent)


def build_demo_page(run_dir: Path, workdir: Path) -> tuple[gr.Blocks, AppContext]:
    """The locked page and its context; writes `model_card.html` into the run folder on the way."""
    from ftui.results.modelcard import build_card, card_body, card_html
    from ftui.runs import write_text_atomic

    run_dir = Path(run_dir).resolve()
    ctx = AppContext(demo_settings(run_dir, workdir))
    run_id = run_dir.name
    card = build_card(run_dir)
    write_text_atomic(run_dir / "model_card.html", card_html(card))
    description = f"<div class='ftui-subtitle'>{html.escape(card.description)}</div>" if card.description else ""
    with gr.Blocks(title=card.heading, fill_width=False) as demo:
        gr.HTML(f"<div class='ftui-header'><div class='ftui-title'>{html.escape(card.heading)} "
                f"<span>try it on your own images</span></div>{description}</div>", padding=False)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                with gr.Tabs():
                    with gr.Tab("Upload"):
                        upload = gr.Image(sources=["upload", "clipboard"], type="pil", label="An image",
                                          height=260, elem_id="ftui-demo-upload")
                    with gr.Tab("Webcam"):
                        webcam = gr.Image(sources=["webcam"], type="pil", label="Take a photo", height=260,
                                          elem_id="ftui-webcam")
                    with gr.Tab("Live"):
                        live = gr.Image(sources=["webcam"], type="pil", streaming=True, height=260,
                                        label="Live: predicts about twice a second", elem_id="ftui-live")
                # A heading, not the gallery's label badge (it was clipped); captions say the truth and the
                # model's answer for each example.
                gr.Markdown("**Examples from the validation images**: click one", elem_classes="ftui-image-title")
                examples = gr.Gallery(example_items(ctx, run_id, None), show_label=False, columns=4,
                                      height=300, object_fit="cover", allow_preview=False, elem_id="ftui-examples")
            with gr.Column(scale=3, min_width=420):
                error = gr.Markdown(elem_classes="ftui-error")
                verdict = gr.Markdown(VERDICT_PLACEHOLDER, elem_classes="ftui-card", elem_id="ftui-verdict")
                with gr.Row(equal_height=False):
                    label = gr.Label(label="Top predictions", num_top_classes=5, elem_id="ftui-label")
                    with gr.Column(min_width=OVERLAY):
                        # A heading above the heat map, not a label badge over its toolbar.
                        gr.Markdown("**Where the model looked** (Grad-CAM)", elem_classes="ftui-image-title")
                        overlay = gr.Image(show_label=False, type="pil", height=OVERLAY, width=OVERLAY,
                                           interactive=False, elem_id="ftui-gradcam", buttons=["download"])
        with gr.Accordion("Model card", open=True):
            gr.HTML(card_body(card), elem_id="ftui-modelcard")

        single = [error, label, verdict, overlay]

        def predict_image(image):
            """Top-5 labels, the confidence in words and a Grad-CAM overlay for one image."""
            return predict_single(ctx, run_id, image, 5)

        def on_example(evt: gr.SelectData):
            return predict_example(ctx, run_id, evt.index, 5, None)

        upload.change(predict_image, upload, single, api_name="predict_image", concurrency_id="heavy")
        webcam.change(predict_image, webcam, single, api_visibility="private", concurrency_id="heavy")
        # No progress overlay per frame: it greyed the results out and flashed a timer twice a second.
        live.stream(predict_image, live, single, stream_every=0.5, time_limit=120,
                    concurrency_limit=LIVE_CONCURRENCY, concurrency_id="live", api_name="predict_live",
                    api_visibility="undocumented", show_progress="hidden")
        examples.select(on_example, None, single, api_visibility="private", concurrency_id="heavy")
    return demo, ctx
