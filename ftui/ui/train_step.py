"""Step 4, Train: hyperparameters, Train/Stop, live curves polled with gr.Timer, and the runs table.

The job belongs to the server (`ctx.jobs`), not to the browser tab: a reloaded page or a second tab finds
the running job and its curves again. A per-browser token (gr.BrowserState) records who started a job;
only that browser may stop it, so a second visitor can watch but not steal or stop someone else's run.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from ftui.config import OPTIMIZERS, SCHEDULERS, AugConfig, ConfigError, TrainConfig
from ftui.errors import shown_message
from ftui.stats import wilson_interval
from ftui.train.callbacks import EARLY
from ftui.ui.charts import batch_loss_frame, epoch_frame, format_duration, line_chart, progress_html
from ftui.ui.context import AppContext
from ftui.ui.data_step import SPLIT_SEED
from ftui.ui.eta import epoch_kinds, progress_and_eta
from ftui.ui.guard import (
    InputError,
    address_of,
    client_quota,
    job_size,
    new_owner_token,
    owner_quota,
    owner_stamp,
    public_snapshot,
    session_of,
    token,
)
from ftui.ui.model_step import WEIGHTS_IMAGENET, WEIGHTS_NONE, ModelView, train_groups_spec
from ftui.ui.paths import is_inside, resolve_under
from ftui.ui.presets import preset_for
from ftui.ui.train_resume import resume_run

log = logging.getLogger(__name__)

FINISHED = ("done", "stopped", "failed")
# Gradio spots a parameter defaulting to a Progress and hands each call its own tracker.
PROGRESS = gr.Progress()
MAX_PLOT_POINTS = 1500


@dataclass
class TrainView:
    """The Train step's components other steps and page load need."""

    job_id: gr.Textbox
    owner: gr.BrowserState
    runs_table: gr.Dataframe
    opened_run: gr.Textbox
    poll_outputs: list
    attach: Any
    form: dict  # TrainConfig field (or Model/Augment control) name -> component, for form_restore
    use_run: tuple = ()  # ("Use this run's data and settings" button, its note), wired by the layout


def weights_source(ctx: AppContext, choice: str, uploaded: str | None, server_path: str,
                   session: str | None = None) -> str:
    """TrainConfig.weights from the Model step's choice; a file must be an upload or under --data-root.

    An uploaded file is granted to the uploading session only: no other client can train from it.
    """
    if choice == WEIGHTS_NONE:
        return "none"
    if choice == WEIGHTS_IMAGENET:
        return "imagenet"
    if uploaded:
        ctx.grants.grant(session, uploaded)
        return str(uploaded)
    if server_path and server_path.strip():
        roots = [ctx.settings.data_root] if ctx.settings.data_root else []
        return str(resolve_under(server_path, roots, what="weights file"))
    raise ConfigError("choose a weights file to upload (or pick ImageNet or random init)")


def check_weights(ctx: AppContext, weights: str, session: str | None = None) -> None:
    """Refuse a weights path that is neither this session's upload nor under --data-root (API callers included)."""
    if weights in ("imagenet", "none"):
        return
    mine = is_inside(weights, gr.utils.get_upload_folder()) and ctx.grants.allows(session, weights)
    shared = ctx.settings.data_root is not None and is_inside(weights, ctx.settings.data_root)
    if not (mine or shared):
        raise ConfigError("weights must be 'imagenet', 'none', a file this session uploaded or a file under "
                          "--data-root")


def preset_hint(weights_choice: str, backbone: str) -> str:
    """One line explaining the preselected settings (random init for lack of weights is said plainly)."""
    from ftui.ui.model_step import default_weights_choice

    unavailable = weights_choice == WEIGHTS_NONE and default_weights_choice(backbone) == WEIGHTS_NONE
    return f"<div class='ftui-hint'>{preset_for(weights_choice, offline_no_weights=unavailable).hint}</div>"


PRESET_FIELDS = ("recipe", "bn_mode", "optimizer", "lr", "scheduler", "batch_size", "epochs")


def apply_preset(weights_choice: str, backbone: str, restored: dict | None = None) -> tuple:
    """Train-step values for a weights choice: (recipe, bn_mode, optimizer, lr, scheduler, batch, epochs, hint).

    Random weights have no features or statistics worth protecting: train everything from the start and
    let BatchNorm learn the data's statistics. Pretrained ones are kept: head first, statistics frozen.
    A form just restored from this browser's last job (form_restore) keeps that job's values instead.
    """
    from ftui.ui.model_step import matches

    hint = preset_hint(weights_choice, backbone)
    if matches(restored, weights_choice=weights_choice, backbone=backbone):
        return (*(restored[name] for name in PRESET_FIELDS), hint)
    p = preset_for(weights_choice)
    return (p.recipe, p.bn_mode, p.optimizer, p.lr, p.scheduler, p.batch_size, p.epochs, hint)


def eta_seconds(snap: dict[str, Any], fraction: float) -> float | None:
    """The engine's ETA after an epoch, else extrapolated from the elapsed time."""
    if snap.get("eta_s") is not None and snap.get("step") == snap.get("steps_per_epoch"):
        return snap["eta_s"]
    elapsed = snap.get("elapsed_s")
    if not elapsed or fraction <= 0.02:
        return None
    return elapsed * (1 - fraction) / fraction


def images_per_second(batches: pd.DataFrame) -> float | None:
    """Mean throughput over the last few batches (single batches are noisy)."""
    if batches.empty:
        return None
    recent = batches["images_per_s"].dropna().tail(10)
    return float(recent.mean()) if len(recent) else None


def badge(kind: str, text: str) -> str:
    """A small coloured status label (styled in assets/style.css)."""
    return f"<span class='ftui-badge ftui-badge-{kind}'>{text}</span>"


def status_markdown(snap: dict[str, Any] | None, mine: bool, ips: float | None) -> str:
    """One glance: what the job is doing, for whom, and how far it is."""
    if not snap:
        return "No training yet. Check the settings, then press **Train**."
    who = "" if mine else " *(started from another browser)*"
    status = snap["status"]
    name = f"**{snap.get('backbone')}**"
    if status == "queued":
        return (f"{badge('queued', 'Queued')} Position {snap.get('queue_position') or 1}{who}: another run is training on "
                "this machine; this one starts when it finishes.")
    if status in ("running", "stopping"):
        parts = [f"{badge('running', 'Stopping' if status == 'stopping' else 'Training')} {name}{who}"]
        if snap.get("steps_per_epoch"):
            parts.append(f"epoch {snap.get('epoch')}/{snap.get('epochs')}")
            parts.append(f"step {snap.get('step')}/{snap.get('steps_per_epoch')}")
        else:
            parts.append(str(snap.get("message") or "starting"))
        if ips:
            parts.append(f"{ips:,.0f} images/s")
        return " · ".join(parts)
    best = snap.get("best_val_acc")
    best_text = f" · best val accuracy **{best:.1%}**" if isinstance(best, (int, float)) and math.isfinite(best) else ""
    task = snap.get("task") or "classification"
    if best_text and task != "classification":  # mAP, or the score -MAE: no Wilson interval for them
        best_text = f" · best val {task_best(task, best)}"
    elif best_text and snap.get("num_val"):
        # How far the number could be off on this few images (95% Wilson interval).
        lo, hi = wilson_interval(round(best * snap["num_val"]), snap["num_val"])
        best_text += f" ({lo:.1%}–{hi:.1%} at 95%, {snap['num_val']} val images)"
    if best_text and (snap.get("head_alone") or {}).get("best_at_end"):
        best_text += ", the head trained alone (it beat every all-layer epoch on val)"
    took = format_duration(snap.get("elapsed_s"))
    if status == "done":
        early = f" · {snap['message']}" if str(snap.get("message") or "").startswith(EARLY) else ""
        return f"{badge('done', 'Finished')} {name} in {took}{early}{best_text} · run `{snap.get('run_id')}`{who}"
    if status == "stopped":
        return f"{badge('stopped', 'Stopped')} {name} after {took}{best_text}{who}"
    return f"{badge('failed', 'Failed')}{who} {snap.get('error') or snap.get('message')}"


def task_best(task: str, score: float) -> str:
    """The best val score as the task's metric: 'mAP **87.5%**' or 'MAE **3.21**' (the score is -MAE)."""
    return f"mAP **{score:.1%}**" if task == "multilabel" else f"MAE **{-score:.4g}**"


def progress_caption(snap: dict[str, Any], fraction: float, eta: float | None = None) -> str:
    """"42% · 0 min 21 s elapsed · about 14 s left"."""
    parts = [f"{fraction:.0%}", f"{format_duration(snap.get('elapsed_s'))} elapsed"]
    if snap.get("status") in ("running", "stopping"):
        eta = eta if eta is not None else eta_seconds(snap, fraction)
        if eta is not None:
            parts.append(f"about {format_duration(eta)} left")
        if snap.get("message") and not snap.get("steps_per_epoch"):
            parts.append(str(snap["message"]))
    return " · ".join(parts)


def thin(frame: pd.DataFrame, limit: int = MAX_PLOT_POINTS) -> pd.DataFrame:
    """Every k-th row so a long run's plot stays light in the browser."""
    if len(frame) <= limit:
        return frame
    return frame.iloc[:: math.ceil(len(frame) / limit)]


def lr_frame(table: pd.DataFrame | None) -> pd.DataFrame:
    """The finder's (lr, loss) table with log10(lr) as the x axis (the plot has no log scale of its own)."""
    if table is None or table.empty:
        return pd.DataFrame({"log10 lr": pd.Series(dtype=float), "loss": pd.Series(dtype=float)})
    return pd.DataFrame({"log10 lr": table["lr"].astype(float).map(math.log10), "loss": table["loss"].astype(float)})


LOSS_COLORS = {"batch loss": "#9db4d6", "smoothed": "#1f4e99"}
EPOCH_COLORS = {"train": "#1f4e99", "val": "#e07b22"}


def loss_chart(batches: pd.DataFrame | None) -> Any:
    """Training loss per optimizer step: each batch (light) and the smoothed trend (dark)."""
    return line_chart(thin(batch_loss_frame(batches)), "step", "loss", LOSS_COLORS, ("step", "training loss"),
                      height=220)


# The epoch chart of each task's live metric: (name, y format, y domain). The history's "acc" columns hold the
# trainer's higher-is-better score: accuracy, mAP, or -MAE (shown as the MAE, in the user's units).
TASK_METRICS = {"classification": ("accuracy", ".0%", [0, 1]), "multilabel": ("mAP", ".0%", [0, 1]),
                "regression": ("MAE", None, None)}


def metric_name(task: str | None) -> str:
    return TASK_METRICS.get(task or "classification", TASK_METRICS["classification"])[0]


def epoch_charts(history: pd.DataFrame | None, task: str | None = None) -> tuple:
    """(loss, the task's metric) per epoch, train and val, from the job's or a run's epoch history."""
    name, y_format, y_domain = TASK_METRICS.get(task or "classification", TASK_METRICS["classification"])
    metric = epoch_frame(history, "acc")
    if task == "regression":
        metric = metric.assign(value=-metric["value"])
    return (line_chart(epoch_frame(history, "loss"), "epoch", "value", EPOCH_COLORS, ("epoch", "loss")),
            line_chart(metric, "epoch", "value", EPOCH_COLORS, ("epoch", name),
                       y_format=y_format, y_domain=y_domain))


def run_task(run_dir) -> str:
    """The task a run folder's config.json records ("classification" when it says none or cannot be read)."""
    import json
    from pathlib import Path

    try:
        task = json.loads((Path(run_dir) / "config.json").read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return "classification"
    return task if task in TASK_METRICS else "classification"


def job_task(ctx: AppContext, job, snap: dict[str, Any]) -> str:
    """The task a job trains: its config's, or once "auto" is resolved, what its run folder's config.json says
    (the job thread resolves the task on its own copy of the config)."""
    task = getattr(job.config, "task", "classification")
    if task in TASK_METRICS:
        return task
    folder = snap.get("run_dir") or (ctx.settings.runs_dir / snap["run_id"] if snap.get("run_id") else None)
    return run_task(folder) if folder else "classification"


def metric_chart(history: pd.DataFrame | None, task: str | None) -> tuple:
    """epoch_charts with the metric plot's label naming the task's metric ("mAP per epoch")."""
    loss, metric = epoch_charts(history, task)
    return loss, gr.update(value=metric, label=f"{metric_name(task).replace('accuracy', 'Accuracy')} per epoch")


def clear_view(config: str) -> tuple:
    """Status, progress and empty curves for a run about to start (nothing when the settings were refused)."""
    if not config:
        return (gr.skip(),) * 5
    return ("Starting a new run...", progress_html(0, "starting"), loss_chart(None), *epoch_charts(None))


def runs_frame(ctx: AppContext) -> pd.DataFrame:
    """Past runs, newest first, for the runs table; a run that stopped early says so and which epoch it kept."""
    table = ctx.store.list_runs()
    if not table.empty:
        table["status"] = [_status_words(ctx, run_id, status) for run_id, status in zip(table["id"], table["status"])]
    if "best_val_acc" in table:
        table["best_val_acc"] = table["best_val_acc"].map(
            lambda v: f"{v:.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else "")
    return table


def _status_words(ctx: AppContext, run_id: str, status: str) -> str:
    """"done", or "stopped early at epoch 5; kept epoch 2" from the run's status.json message."""
    if status != "done":
        return status
    try:
        message = str(ctx.store.folder(run_id).read_status().get("message") or "")
    except (OSError, ValueError):
        return status
    if not message.startswith(EARLY):
        return status
    head, _, kept = message.partition(";")
    return head.split(":")[0] + (f";{kept}" if kept else "")


# The form's TrainConfig fields converted by their default's type; image_size's default (None) is an int too.
_DEFAULTS = TrainConfig()


def _coerce(name: str, value: Any) -> Any:
    """A form value as its TrainConfig field's type; an API caller's text where a number belongs is a user
    error with the field's name, not an internal one."""
    default = getattr(_DEFAULTS, name)
    try:
        if isinstance(default, bool):
            return bool(value)
        if isinstance(default, int) or name == "image_size":
            return int(value or 0)
        if isinstance(default, float):
            return float(value or 0)
        return (value or "").strip() if name == "run_name" else value
    except (TypeError, ValueError, AttributeError):
        raise ConfigError(f"{name} must be a {type(default).__name__}, got {str(value)[:40]!r}") from None


def _aug_from_json(text: Any) -> AugConfig:
    try:
        return AugConfig(**json.loads(text))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the augmentation settings are not valid: {str(exc)[:120]}") from None


def config_from_form(ctx: AppContext, values: dict[str, Any], session: str | None = None) -> TrainConfig:
    """TrainConfig from the form's values keyed by field name; weights, groups and aug need the Model and
    Augment steps' own controls (keys weights_choice, weights_file, weights_path, groups, aug_json)."""
    from ftui.ui.model_step import structure

    own = {"weights_choice", "weights_file", "weights_path", "groups", "aug_json"}
    fields = {name: _coerce(name, value) for name, value in values.items() if name not in own}
    names = [g for g, _ in structure(ctx, values["backbone"], 2)[0]]
    config = TrainConfig(
        **fields, runs_dir=str(ctx.settings.runs_dir),
        weights=weights_source(ctx, values["weights_choice"], values["weights_file"], values["weights_path"],
                               session),
        train_groups=train_groups_spec(values["groups"], names), aug=_aug_from_json(values["aug_json"]),
    )
    config.validate()
    return config


def _settings_column(ctx: AppContext, model: ModelView) -> dict[str, Any]:
    """The left column: the hyperparameters (keyed by TrainConfig field), buttons and the lr finder."""
    d, start = TrainConfig(), preset_for(model.weights.value)
    c: dict[str, Any] = {}
    c["hint"] = gr.HTML(preset_hint(model.weights.value, model.backbone.value), elem_id="ftui-preset-hint")
    # Train and its status on the first screen (at 1400x900 they were below the fold, so pressing Train
    # showed nothing happening): buttons first, the settings under them.
    with gr.Row():
        c["train_button"] = gr.Button("Train", variant="primary", elem_id="ftui-train")
        c["stop_button"] = gr.Button("Stop", variant="stop", interactive=False, elem_id="ftui-stop")
        c["resume_button"] = gr.Button("Resume opened run", elem_id="ftui-resume")
    c["error"] = gr.Markdown(elem_classes="ftui-error")
    with gr.Group():
        with gr.Row():
            c["epochs"] = gr.Number(start.epochs, precision=0, minimum=1, label="Epochs",
                                    elem_id="ftui-epochs")
            c["batch_size"] = gr.Number(start.batch_size, precision=0, minimum=1, label="Batch size",
                                        elem_id="ftui-batch")
        with gr.Row():
            c["lr"] = gr.Number(start.lr, minimum=0, label="Learning rate", elem_id="ftui-lr")
            c["optimizer"] = gr.Dropdown(list(OPTIMIZERS), value=start.optimizer, label="Optimizer")
        with gr.Row():
            c["scheduler"] = gr.Dropdown(list(SCHEDULERS), value=start.scheduler, label="LR schedule")
            c["recipe"] = gr.Dropdown([("fine-tune", "fine_tune"), ("plain", "plain")], value=start.recipe,
                                      label="Recipe",
                                      info="plain: the ticked groups from the start; fine-tune: head first, then them")
    with gr.Accordion("More settings", open=False):
        with gr.Row():
            c["freeze_epochs"] = gr.Number(d.freeze_epochs, precision=0, minimum=0,
                                           label="Head-only epochs (fine-tune)")
            c["weight_decay"] = gr.Number(d.weight_decay, minimum=0, label="Weight decay")
            c["label_smoothing"] = gr.Slider(0, 0.5, value=d.label_smoothing, step=0.05, label="Label smoothing")
        with gr.Row():
            c["momentum"] = gr.Number(d.momentum, label="Momentum (SGD)")
            c["lr_step_size"] = gr.Number(d.lr_step_size, precision=0, minimum=1, label="Epochs between rate drops",
                                          info=TrainConfig.hint("lr_step_size"))
            c["lr_gamma"] = gr.Number(d.lr_gamma, label="Rate drop factor", info=TrainConfig.hint("lr_gamma"))
        with gr.Row():
            c["warmup_epochs"] = gr.Number(d.warmup_epochs, minimum=0, label="Warm-up epochs")
            c["early_stopping_patience"] = gr.Number(d.early_stopping_patience, precision=0, minimum=0,
                                                     label="Early stopping patience (0 = off)")
            c["seed"] = gr.Number(d.seed, precision=0, label="Seed")
        with gr.Row():
            c["bn_mode"] = gr.Dropdown(["frozen", "train"], value=start.bn_mode, label="BatchNorm statistics")
            c["device"] = gr.Dropdown(["auto", "cpu", "cuda", "mps"], value=d.device, label="Device")
        with gr.Row():
            c["class_weighted_loss"] = gr.Checkbox(d.class_weighted_loss, label="Class-weighted loss")
            c["mixed_precision"] = gr.Checkbox(d.mixed_precision, label="Mixed precision (GPU)")
            c["feature_cache"] = gr.Checkbox(d.feature_cache, label="Cache frozen features")
        with gr.Row():
            # What the head predicts: detected from a CSV's columns (the Data step says which), or forced.
            c["task"] = gr.Dropdown(["auto", "classification", "multilabel", "regression"], value=d.task,
                                    label="Task", info="auto: from the data (a CSV's labels / number columns)",
                                    elem_id="ftui-task")
    c["run_name"] = gr.Textbox(label="Run name (optional)", max_length=40)
    with gr.Accordion("Learning-rate finder", open=False):
        gr.Markdown("A short sweep with a rising learning rate on your data (fastai's `lr_find`); the "
                    "suggestion goes into the learning-rate box.", elem_classes="ftui-help")
        c["find_button"] = gr.Button("Find learning rate", size="sm", elem_id="ftui-find-lr")
        c["lr_message"] = gr.Markdown(elem_id="ftui-lr-message")
        c["lr_plot"] = gr.LinePlot(lr_frame(None), x="log10 lr", y="loss", label="Loss vs learning rate "
                                   "(log10 scale)", height=200, elem_id="ftui-lr-plot")
    return c


def _progress_column() -> dict[str, Any]:
    """The right column: status, progress bar and the live curves."""
    c: dict[str, Any] = {}
    c["status"] = gr.Markdown("No training yet.", elem_classes="ftui-card", elem_id="ftui-train-status")
    c["progress"] = gr.HTML(progress_html(0, "not started"), elem_id="ftui-progress")
    # Vega-Lite charts in gr.Plot (charts.line_chart): whole-number ticks, markers and legends.
    c["loss_plot"] = gr.Plot(loss_chart(None), label="Training loss per step", elem_id="ftui-loss-plot")
    with gr.Row():
        loss, acc = epoch_charts(None)
        c["epoch_loss"] = gr.Plot(loss, label="Loss per epoch", elem_id="ftui-loss-epoch-plot")
        c["epoch_acc"] = gr.Plot(acc, label="Accuracy per epoch", elem_id="ftui-acc-plot")
    with gr.Accordion("Job details", open=False):
        c["job_json"] = gr.JSON(label="Job status (what the API's poll returns)")
    return c


def admit(ctx: AppContext, cfg: TrainConfig, owner_token: str, request: Any) -> Any:
    """Queue a job for this client when its size and its client's caps allow (checked and started under one
    lock: parallel starts from one client must not all pass the caps); returns the job."""
    from ftui.ui.data_step import load

    settings = ctx.settings
    job_size(cfg.epochs, len(load(ctx, cfg.data, cfg.val_fraction).split("train")), settings.max_job_images)
    with ctx.admit_lock:
        owner_quota(ctx.jobs.jobs(), ctx.owners, owner_token)
        client = (address_of(request), session_of(request))
        client_quota(ctx.jobs.jobs(), ctx.clients, *client,
                     (settings.max_jobs_per_address, settings.max_jobs_per_session))
        job = ctx.jobs.start(cfg, stamp=owner_stamp(owner_token))
        ctx.owners[job.id], ctx.clients[job.id] = owner_token, client
    return job


class _Handlers:
    """The Train step's event handlers (the app's API endpoints among them), sharing the app context."""

    def __init__(self, ctx: AppContext, form: dict[str, Any]) -> None:
        self.ctx = ctx
        self.form = form  # TrainConfig field (or Model/Augment control) name -> component

    def collect_config(self, values: dict, request: gr.Request = None):
        """The form (a dict of component -> value, as Gradio passes a set of inputs) as TrainConfig JSON."""
        try:
            named = {name: values[component] for name, component in self.form.items()}
            config = config_from_form(self.ctx, named, session_of(request))
        except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
            return "", f"**Check the settings:** {shown_message(log, exc, 'train form')}"
        return config.to_json(), ""

    def start_training(self, config: str, source_path: str, owner_token: str | None, request: gr.Request = None):
        """Start a background training job from TrainConfig JSON (missing keys take their defaults).

        The dataset is the one this session loaded (load_data / upload_data; the demo by default).
        Returns the job id and a message; the job queues when another job is running.
        """
        if not config:
            return gr.skip(), gr.skip()
        if not owner_token:
            # Without a token anyone could stop the job (an empty token would match every other empty one).
            return gr.skip(), ("**Could not start training:** no owner token. Reload the page; API clients "
                               "pass the `owner_token` that /new_token issued.")
        try:
            token(owner_token)
            cfg = TrainConfig.from_json(config)
            # The data and runs folder are the server's choice, never the caller's; the split is the one the
            # Data step showed (its seed, whatever the training seed).
            cfg = cfg.replace(data=source_path, runs_dir=str(self.ctx.settings.runs_dir), split_seed=SPLIT_SEED)
            check_weights(self.ctx, cfg.weights, session_of(request))
            cfg.validate()
            job = admit(self.ctx, cfg, owner_token, request)
        except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
            return gr.skip(), f"**Could not start training:** {shown_message(log, exc, 'start training')}"
        return job.id, ""

    def find_learning_rate(self, config: str, source_path: str, request: gr.Request = None, progress=PROGRESS):
        """Sweep the learning rate for TrainConfig JSON on this session's dataset; fill the lr box with the suggestion.

        Returns a message, the loss-vs-log10(lr) curve and the suggested learning rate.
        """
        from ftui.train.lrfind import find_lr
        from ftui.ui.data_step import load

        if not config:
            return gr.skip(), gr.skip(), gr.skip()
        if self.ctx.jobs.active() is not None:
            return ("**A run is training on this machine:** find the learning rate when it has finished "
                    "(both would compete for the CPU)."), gr.skip(), gr.skip()
        try:
            cfg = TrainConfig.from_json(config).replace(data=source_path, runs_dir=str(self.ctx.settings.runs_dir),
                                                        split_seed=SPLIT_SEED)
            check_weights(self.ctx, cfg.weights, session_of(request))
            cfg.validate()
            dataset = load(self.ctx, source_path, cfg.val_fraction)  # the split the Data step showed
            result = find_lr(cfg, dataset=dataset, progress=lambda f, m: progress(f, desc=m))
        except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
            return f"**Could not find a learning rate:** {shown_message(log, exc, 'lr finder')}", gr.skip(), gr.skip()
        message = (f"Suggested learning rate **{result.suggestion:.2g}** (steepest descent at "
                   f"{result.steepest:.2g}); it is now in the learning-rate box.")
        return message, lr_frame(result.table), float(f"{result.suggestion:.2g}")

    def resume(self, run_id: str, owner_token: str | None, request: gr.Request = None):
        """Resume an interrupted or stopped run (by id) from its last.pt; only the client that started it may."""
        try:
            return resume_run(self.ctx, run_id, owner_token, request), ""
        except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
            return gr.skip(), f"**Could not resume:** {shown_message(log, exc, 'resume')}"

    def stop(self, job: str, owner_token: str | None):
        """Stop a job; only the browser (or API client token) that started it may."""
        from ftui.jobs import JobError

        try:
            target = self.ctx.jobs.get(job)
        except JobError as exc:
            return f"**Nothing to stop:** {exc}"
        if not owner_token or self.ctx.owners.get(job) != owner_token:
            return "**Not yours to stop:** this run was started from another browser; only that browser can stop it."
        target.stop()
        return ""

    def poll(self, job: str, owner_token: str | None, seen: Any):
        """The job's status, progress and curves; unchanged outputs are skipped."""
        from ftui.jobs import JobError

        try:
            target = self.ctx.jobs.get(job) if job else None
        except JobError:
            target = None
        if target is None:
            # Once said, "no training yet" is not repeated every tick (it would hide a run opened from the table).
            if seen == ["none"]:
                return tuple([gr.skip()] * 9) + (seen,)
            return (None, status_markdown(None, True, None), progress_html(0, "not started"),
                    *([gr.skip()] * 3), gr.update(interactive=True), gr.update(interactive=False), gr.skip(), ["none"])
        snap = target.snapshot()
        snap["task"] = job_task(self.ctx, target, snap)
        batches, epochs_frame = target.batch_history(), target.history()
        key = [job, snap["status"], len(batches), len(epochs_frame), snap.get("message"), snap.get("queue_position"),
               snap.get("run_id")]
        if seen == key:
            return tuple([gr.skip()] * 9) + (seen,)
        mine = self.ctx.owners.get(job, "") == (owner_token or "")
        if not mine:
            snap = public_snapshot(snap)  # no server paths, notes or error details for other clients
        # Weighted by what each epoch costs (a cached head epoch is cheap): ftui/ui/eta.py.
        fraction, eta = progress_and_eta(snap, epoch_kinds(target.config), epochs_frame)
        active = snap["status"] not in FINISHED
        finished_now = not active and (not seen or seen[0] != job or seen[1] not in FINISHED)
        # The runs table lists the running run as soon as its folder exists, not only once it has finished.
        folder_now = bool(snap.get("run_id")) and (not seen or seen[0] != job or seen[-1] != snap.get("run_id"))
        return (
            snap, status_markdown(snap, mine, images_per_second(batches)),
            progress_html(fraction, progress_caption(snap, fraction, eta)),
            loss_chart(batches), *metric_chart(epochs_frame, snap["task"]),
            gr.update(interactive=not (active and mine)), gr.update(interactive=active and mine),
            runs_frame(self.ctx) if finished_now or folder_now else gr.skip(), key,
        )

    def attach(self, owner_token: str | None):
        """On page load: give this browser a token, and show its unfinished job, the running one, or the last."""
        try:  # a browser keeps its token; one too short to be secret (older ftui made 64-bit ones) is replaced
            token_ok = bool(owner_token) and token(owner_token) == owner_token
        except InputError:
            token_ok = False
        token_text = owner_token if token_ok else new_owner_token()
        jobs = self.ctx.jobs.jobs()
        mine = [j for j in jobs if self.ctx.owners.get(j.id) == token_text and not j.done()]
        job = (mine[-1] if mine else None) or self.ctx.jobs.active() or self.ctx.jobs.latest()
        return token_text, job.id if job else ""

    def open_run(self, evt: gr.SelectData, table: pd.DataFrame):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return str(table.iloc[int(row)]["id"])

    def show_run(self, run_id: str):
        """A past run's epoch curves (its metrics.csv) in the epoch plots, with a note saying whose they are."""
        from ftui.ui.results_step import run_folder

        if not run_id:
            return (gr.skip(),) * 4
        try:
            folder = run_folder(self.ctx, run_id)
            metrics, task = folder.metrics(), run_task(folder.path)
        except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
            return f"**Could not open run {run_id}:** {shown_message(log, exc, 'open run')}", *([gr.skip()] * 3)
        note = (f"Showing run `{run_id}`: its epoch curves are below; it is open in **Evaluate** and "
                "**Predict**." if not metrics.empty else f"Run `{run_id}` finished no epoch: no curves to show.")
        return (note, loss_chart(None), *metric_chart(metrics, task))



def issue_token() -> str:
    """A fresh owner token (128 random bits): pass it as owner_token to start_training, stop and resume."""
    return new_owner_token()


def build(ctx: AppContext, source: gr.State, val_fraction: gr.Slider, aug_json: gr.Textbox,
          model: ModelView) -> TrainView:
    """Lay out the Train step and wire Train, Stop, the poll timer and the runs table."""
    gr.Markdown("Press **Train**: the defaults suit most small datasets. Training runs on the server, so you "
                "can reload or close this page and come back.", elem_classes="ftui-help")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            c = _settings_column(ctx, model)
        with gr.Column(scale=3, min_width=420):
            c.update(_progress_column())
    gr.Markdown("### Runs")
    runs_table = gr.Dataframe(runs_frame(ctx), interactive=False, max_height=260, elem_id="ftui-runs",
                              label="Past runs (click a row to open it in Evaluate and Predict)")
    with gr.Row():
        use_run = gr.Button("Use this run's data and settings", size="sm", scale=0, elem_id="ftui-use-run")
        use_note = gr.Markdown(elem_id="ftui-use-run-note")
    opened_run = gr.Textbox(visible=False)
    job_id = gr.Textbox(visible=False, elem_id="ftui-job-id")
    # Rendered by the layout outside the tabs: a BrowserState inside a tab never reaches localStorage (a
    # reload then lost the owner token and Stop).
    owner = gr.BrowserState("", storage_key="ftui-owner", secret=ctx.browser_secret(), render=False)
    config_json = gr.Textbox(visible=False)
    last_seen = gr.State(None)
    timer = gr.Timer(1.0)

    fields = ("epochs", "batch_size", "lr", "optimizer", "scheduler", "recipe", "freeze_epochs", "weight_decay",
              "label_smoothing", "momentum", "lr_step_size", "lr_gamma", "warmup_epochs", "early_stopping_patience",
              "seed", "bn_mode", "device", "class_weighted_loss", "mixed_precision", "feature_cache", "run_name",
              "task")
    form = {name: c[name] for name in fields} | {
        "data": source, "val_fraction": val_fraction, "aug_json": aug_json, "backbone": model.backbone,
        "weights_choice": model.weights, "weights_file": model.weights_file, "weights_path": model.weights_path,
        "image_size": model.image_size, "groups": model.groups}
    h = _Handlers(ctx, form)
    poll_outputs = [c["job_json"], c["status"], c["progress"], c["loss_plot"], c["epoch_loss"], c["epoch_acc"],
                    c["train_button"], c["stop_button"], runs_table, last_seen]
    private = {"api_visibility": "private"}
    # The previous run's card and curves give way at once (before the job starts), not at the next poll.
    c["train_button"].click(h.collect_config, set(form.values()), [config_json, c["error"]], **private).then(
        clear_view, config_json, [c["status"], c["progress"], c["loss_plot"], c["epoch_loss"], c["epoch_acc"]],
        show_progress="hidden", **private).then(
        h.start_training, [config_json, source, owner], [job_id, c["error"]], api_name="start_training").then(
        lambda: None, None, last_seen, **private)  # the next tick redraws the current job (the old one if refused)
    c["find_button"].click(h.collect_config, set(form.values()), [config_json, c["lr_message"]], **private).then(
        h.find_learning_rate, [config_json, source], [c["lr_message"], c["lr_plot"], c["lr"]], api_name="find_lr",
        concurrency_id="heavy")
    c["stop_button"].click(h.stop, [job_id, owner], c["error"], api_name="stop", concurrency_limit=None)
    # API clients ask the server for an owner token (128 random bits) instead of making one up.
    gr.api(issue_token, api_name="new_token", concurrency_limit=None)
    c["resume_button"].click(h.resume, [opened_run, owner], [job_id, c["error"]], api_name="resume_training")
    # The API's poll always answers in full; the timer's skips what the browser already shows.
    job_id.change(lambda job, token: h.poll(job, token, None), [job_id, owner], poll_outputs, api_name="poll",
                  show_progress="hidden", concurrency_limit=None)
    timer.tick(h.poll, [job_id, owner, last_seen], poll_outputs, show_progress="hidden", concurrency_limit=None,
               **private)
    model.weights.change(apply_preset, [model.weights, model.backbone, model.restored],
                         [c[k] for k in ("recipe", "bn_mode", "optimizer", "lr", "scheduler", "batch_size", "epochs",
                                         "hint")],
                         **private)
    model.backbone.change(preset_hint, [model.weights, model.backbone], c["hint"], **private)
    runs_table.select(h.open_run, runs_table, opened_run, **private)
    opened_run.change(h.show_run, opened_run, [c["status"], c["loss_plot"], c["epoch_loss"], c["epoch_acc"]],
                      **private)
    from ftui.ui.sweep_view import TrainParts, build_sweep_panel

    build_sweep_panel(ctx, TrainParts(h.collect_config, set(form.values()), source, owner, runs_table,
                                      check_weights, runs_frame))
    return TrainView(job_id=job_id, owner=owner, runs_table=runs_table, opened_run=opened_run,
                     poll_outputs=poll_outputs, attach=h.attach, form=form, use_run=(use_run, use_note))
