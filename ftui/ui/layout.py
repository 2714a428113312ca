"""`build_app`: the six steps in tabs, wired to one server-side AppContext."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ftui.ui import (
    augment_step,
    data_step,
    form_restore,
    model_step,
    predict_step,
    results_step,
    train_step,
)
from ftui.ui.compare_view import build_compare_view
from ftui.ui.context import AppContext, AppSettings
from ftui.ui.doctor_view import build_doctor_section
from ftui.ui.ensemble_view import build_ensemble_view
from ftui.ui.fix_view import build_fix_panel, wire_fix_panel
from ftui.ui.guard import session_of
from ftui.ui.naming_view import build_naming_view

TITLE = "ftui · fine-tune an image classifier"
ASSETS = Path(__file__).resolve().parents[2] / "assets"
HEADER = """
<div class="ftui-header">
  <div class="ftui-title">ftui <span>fine-tune an image classifier</span></div>
  <div class="ftui-subtitle">Bring labeled images, pick a pretrained backbone, train in the background,
  check the mistakes, and try the model on new images. No code needed.</div>
</div>
"""


def build_app(settings: AppSettings) -> tuple[gr.Blocks, AppContext]:
    """The Gradio Blocks app and the server-side context it drives."""
    ctx = AppContext(settings)

    def dataset_for(source: str, fraction: float):
        return data_step.load(ctx, source, fraction)

    with gr.Blocks(title=TITLE, fill_width=False) as demo:
        gr.HTML(HEADER, padding=False)
        # Every step is mounted from the start (render_children): otherwise Gradio mounts a tab's components
        # when it is first opened, an unmounted dropdown fires no change, and a button's interactive update
        # sent before (Stop after a reload) was lost.
        with gr.Tabs(elem_id="ftui-steps"):
            with gr.Tab("1 · Data", id="data", render_children=True):
                data = data_step.build(ctx)
                with gr.Accordion("Dataset doctor: look for problems before training", open=False):
                    doctor = _doctor_section(ctx, data)
            with gr.Tab("2 · Augment", id="augment", render_children=True):
                # The resolution lives on the Model step; the preview needs it first, so render it later.
                image_size_proxy = gr.Number(settings.demo_image_size, visible=False)
                aug = augment_step.build(ctx, data.source, data.val_fraction, image_size_proxy, dataset_for)
            with gr.Tab("3 · Model", id="model", render_children=True):
                model = model_step.build(ctx, data.source, lambda s: data_step.num_classes(ctx, s))
            with gr.Tab("4 · Train", id="train", render_children=True):
                train = train_step.build(ctx, data.source, data.val_fraction, aug.aug_json, model)
            with gr.Tab("5 · Evaluate", id="evaluate", render_children=True):
                evaluate, compare_a, compare_b = _evaluate_tab(ctx, data, train.owner)
                eval_run = evaluate.run
            with gr.Tab("6 · Predict", id="predict", render_children=True) as predict_tab:
                predict = predict_step.build(ctx)
                predict_run = predict.run
        train.owner.render()  # outside the tabs, so the browser keeps it (see train_step)
        gr.HTML("<div class='ftui-footer'>Runs are saved on the server under "
                f"<code>{settings.runs_dir}</code> · the API is listed under “Use via API”.</div>")

        private = {"api_visibility": "private"}
        wire_fix_panel(ctx, doctor.fixes, doctor.gallery, data.source, data.val_fraction, data.load_outputs[:-1])

        _wire_doctor_model(ctx, demo, model, doctor)
        data.task.change(lambda t: t, data.task, train.form["task"], **private)  # Data step's task -> Train
        model.image_size.change(lambda v: v, model.image_size, image_size_proxy, **private)

        def opened_on(runs, owner_token=None):
            """The pickers list every run; Evaluate and Predict open on this browser's run just trained, else
            the best finished one (the compare pair is left to the person)."""
            choices = results_step.run_choices(ctx)
            value = results_step.preferred_run(ctx, owner_token)
            return (gr.update(choices=choices, value=value), gr.update(choices=choices, value=value),
                    gr.update(choices=choices), gr.update(choices=choices))

        # The owner token too: after a restart a browser's runs are still its own (their data is granted again).
        show_examples = (predict.on_run, [predict_run, train.owner], predict.run_outputs)
        evaluated = {**private, "concurrency_id": "heavy"}
        pickers = [eval_run, predict_run, compare_a, compare_b]
        train.runs_table.change(opened_on, [train.runs_table, train.owner], pickers, **private).then(
            *show_examples, **private).then(*evaluate.on_run, **evaluated)
        train.opened_run.change(lambda r: (gr.update(value=r), gr.update(value=r)), train.opened_run,
                                [eval_run, predict_run], **private).then(*show_examples, **private).then(
            *evaluate.on_run, **evaluated)
        predict_tab.select(*show_examples, **private)

        demo.load(train.attach, train.owner, [train.owner, train.job_id], **private)
        # Run pickers filled on load (not only when the runs table changes).
        demo.load(lambda owner_token: opened_on(None, owner_token), train.owner, pickers, **private).then(
            *show_examples, **private).then(*evaluate.on_run, **evaluated)
        # The form is restored from this browser's last job after the data and model defaults are in place.
        loaded = demo.load(data.on_load, data.load_inputs, data.load_outputs, **private).then(
            model.on_load, model.load_inputs, model.load_outputs, **private)
        targets = form_restore.Targets(train.form, dict(zip(augment_step.FIELDS, aug.controls)),
                                       data.load_outputs[:6], model.restored)
        form_restore.wire_restore(ctx, loaded, targets, train.owner, data.source)
        use_button, use_note = train.use_run
        form_restore.wire_use_run(ctx, use_button, train.opened_run, use_note, targets, train.owner, data.source)
        demo.load(lambda v: v, model.image_size, image_size_proxy, **private)
        demo.load(aug.on_load, aug.load_inputs, aug.load_outputs, **private)
    return demo, ctx


def _doctor_section(ctx: AppContext, data):
    """The doctor under the Data step: it reads the data as the Data step's task and refuses weights files
    this session may not read."""
    return build_doctor_section(data.source, task=data.task,
                                weights_check=lambda w, session: train_step.check_weights(ctx, w, session))


def _evaluate_tab(ctx: AppContext, data, owner: gr.BrowserState):
    """Evaluate (with the fix buttons under its mistakes), naming the model, comparing and combining runs."""
    evaluate = results_step.build_evaluate(ctx, fix_hook=lambda gallery, paths, source: wire_fix_panel(
        ctx, build_fix_panel("a misclassified image", "ftui-eval-fix", paths), gallery, source,
        data.val_fraction, data.load_outputs[:-1]))
    build_naming_view(ctx, evaluate.run, owner)
    compare_a, compare_b = build_compare_view(ctx)
    build_ensemble_view(ctx)
    return evaluate, compare_a, compare_b


def _wire_doctor_model(ctx: AppContext, demo: gr.Blocks, model, doctor) -> None:
    """The doctor embeds with the Model step's backbone and weights ("imagenet" when unset)."""
    private = {"api_visibility": "private"}

    def doctor_model(backbone: str, choice: str, uploaded: str | None, server_path: str,
                     request: gr.Request = None):
        try:
            weights = train_step.weights_source(ctx, choice, uploaded, server_path, session_of(request))
        except ValueError:
            weights = "imagenet"
        return backbone, weights

    model_choice = [model.backbone, model.weights, model.weights_file, model.weights_path]
    for component in model_choice:
        component.change(doctor_model, model_choice, [doctor.backbone, doctor.weights], **private)
    demo.load(doctor_model, model_choice, [doctor.backbone, doctor.weights], **private)


def blocked_paths(settings: AppSettings) -> list[str]:
    """The runs and work folders, unless one holds what Gradio must serve (its upload folder, the assets)."""
    from ftui.ui.paths import is_inside

    needed = [Path(gr.utils.get_upload_folder()), ASSETS]
    folders = [settings.runs_dir.resolve(), settings.workdir.resolve()]
    return [str(f) for f in folders if not any(is_inside(n, f) for n in needed)]


def launch_options(settings: AppSettings) -> dict:
    """Theme, CSS, what Gradio may serve (the assets only), the upload size limit and login throttling.

    The runs folder is not served: its config.json files name other clients' uploads. Downloads are private
    copies made per response (guard.private_download); the work dir (uploads, demo) is blocked outright.
    """
    import os

    from starlette.middleware import Middleware

    from ftui.ui.guard import LoginThrottle

    css = (ASSETS / "style.css").read_text() if (ASSETS / "style.css").is_file() else ""
    # uvicorn (under Gradio) rewrites the client address from X-Forwarded-For when the peer is in
    # FORWARDED_ALLOW_IPS (default: 127.0.0.1), so a same-host proxy let every request claim a new address and
    # the login throttle never counted twice. Only the operator's --trusted-proxy is believed.
    os.environ["FORWARDED_ALLOW_IPS"] = settings.trusted_proxy
    return {
        "theme": gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate"),
        "css": css,
        "allowed_paths": [str(ASSETS)],
        "blocked_paths": blocked_paths(settings),
        "max_file_size": settings.max_upload_bytes,
        "app_kwargs": {"middleware": [Middleware(LoginThrottle)]},
        # Gradio's run history records every call with its inputs (owner tokens included) and its footer
        # link looks like ftui's runs: off, and the footer keeps only the API docs, Gradio and settings.
        "run_history": False,
        "footer_links": ["api", "gradio", "settings"],
    }


def demo_launch_options(settings: AppSettings) -> dict:
    """The locked demo page: the app's options (nothing but assets served) and no API link in the footer."""
    options = launch_options(settings)
    # Gradio puts a "·" before "Built with Gradio" as if an API link preceded it: with none, it was a stray dot.
    css = options["css"] + "\nfooter .show-api-divider, footer .divider { display: none; }\n"
    return {**options, "css": css, "footer_links": ["gradio"]}
