"""The Train step's sweep panel: start an Optuna sweep (ftui/bench/sweep.py) with the form's settings as its
base, watch its trials (a table and a val accuracy / learning-rate scatter) while every trial lands in the runs
table, and stop it. One sweep at a time on a server (a sweep is many training runs); only the browser (owner
token) that started it may stop it. Trials and budget are bounded here more tightly than on the CLI."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from ftui.config import TrainConfig
from ftui.errors import shown_message
from ftui.ui.context import AppContext
from ftui.ui.guard import InputError, session_of, token

log = logging.getLogger(__name__)
MAX_APP_TRIALS = 30
MAX_APP_BUDGET_MINUTES = 120
SCATTER_COLUMNS = ["log10_lr", "val_acc", "state", "trial"]


class SweepRunner:
    """The server's one sweep: its thread, stop event and owner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sweep = None
        self.owner = ""
        self.thread: threading.Thread | None = None

    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, settings, owner: str) -> str:
        from ftui.bench.sweep import Sweep

        settings.validate()
        with self._lock:
            if self.busy():
                raise InputError("a sweep is already running on this server: wait for it or stop it")
            self.sweep, self.owner = Sweep(settings), owner
            self.thread = threading.Thread(target=self._run, name="ftui-sweep", daemon=True)
            self.thread.start()
        return settings.sweep_id

    def _run(self) -> None:
        try:
            self.sweep.run()
        except Exception as exc:
            log.exception("sweep failed")
            self.sweep.status, self.sweep.message = "failed", str(exc)[:300]

    def stop(self, owner: str) -> str:
        if self.sweep is None or not self.busy():
            return "**Nothing to stop:** no sweep is running."
        if not owner or owner != self.owner:
            return "**Not yours to stop:** this sweep was started from another browser."
        self.sweep.stop_event.set()
        return "Stopping after the current trial's batch..."

    def snapshot(self) -> dict[str, Any] | None:
        return self.sweep.snapshot() if self.sweep is not None else None


def scatter_frame(snapshot: dict[str, Any] | None) -> pd.DataFrame:
    """One point per finished trial: log10(lr) against its best val accuracy, coloured by state."""
    rows = [{"log10_lr": math.log10(t["params"]["lr"]), "val_acc": t["best_val_acc"], "state": t["state"],
             "trial": t["number"]}
            for t in (snapshot or {}).get("trials", []) if t["best_val_acc"] is not None]
    return pd.DataFrame(rows, columns=SCATTER_COLUMNS)


def status_text(snapshot: dict[str, Any] | None) -> str:
    if snapshot is None:
        return "No sweep yet on this server."
    done = sum(t["state"] != "running" for t in snapshot["trials"])
    return f"**Sweep {snapshot['sweep']}: {snapshot['status']}** · {done} trial(s) finished. {snapshot['message']}"


@dataclass
class TrainParts:
    """What the panel uses of the Train step (passed in: the Train step builds the panel)."""

    collect_config: Callable  # (form values, request) -> (TrainConfig JSON, error)
    form_inputs: set
    source: gr.State
    owner: gr.BrowserState
    runs_table: gr.Dataframe
    check_weights: Callable  # (ctx, weights, session): refuses a weights file this session may not read
    runs_frame: Callable  # (ctx) -> the runs table


def build_sweep_panel(ctx: AppContext, train: TrainParts) -> None:
    """Lay out and wire the panel (inside the Train step)."""
    from ftui.bench.sweep import SweepSettings, trials_table
    from ftui.ui.data_step import SPLIT_SEED

    source, owner, runs_table, check_weights = train.source, train.owner, train.runs_table, train.check_weights

    runner = SweepRunner()
    with gr.Accordion("Sweep: let Optuna search lr, epochs, trained layers, image size, augmentation",
                      open=False):
        gr.Markdown("Each trial is a run (in the table above) of the settings on this page with five of them "
                    "varied; trial 0 is exactly these settings, weak trials are stopped early on val loss. "
                    "The best trial is marked ★.", elem_classes="ftui-help")
        with gr.Row():
            trials = gr.Slider(2, MAX_APP_TRIALS, value=10, step=1, label="Trials")
            budget = gr.Slider(1, MAX_APP_BUDGET_MINUTES, value=30, step=1, label="Budget (minutes)")
            start = gr.Button("Start sweep", variant="secondary")
            stop = gr.Button("Stop sweep")
        message = gr.Markdown()
        status = gr.Markdown(status_text(None), elem_id="ftui-sweep-status")
        table = gr.Dataframe(interactive=False, max_height=260, elem_id="ftui-sweep-trials", label="Trials")
        plot = gr.ScatterPlot(scatter_frame(None), x="log10_lr", y="val_acc", color="state",
                              x_title="log10 learning rate", y_title="best val accuracy", height=240)
    timer = gr.Timer(2.0)

    def start_sweep(config_json: str, source_path: str, owner_token: str | None, n: float, minutes: float,
                    request: gr.Request = None):
        if not config_json:
            return gr.skip()
        try:
            token(owner_token)
            if not owner_token:
                raise InputError("no owner token: reload the page")
            n, minutes = int(n), float(minutes)
            if not (2 <= n <= MAX_APP_TRIALS and 1 <= minutes <= MAX_APP_BUDGET_MINUTES):
                raise InputError(f"trials must be 2..{MAX_APP_TRIALS}, budget 1..{MAX_APP_BUDGET_MINUTES} minutes")
            base = TrainConfig.from_json(config_json).replace(
                data=source_path, runs_dir=str(ctx.settings.runs_dir), split_seed=SPLIT_SEED)
            check_weights(ctx, base.weights, session_of(request))
            sweep_id = runner.start(SweepSettings(base=base, trials=n, budget_minutes=minutes), owner_token)
        except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
            return f"**Could not start the sweep:** {shown_message(log, exc, 'sweep')}"
        return f"Sweep {sweep_id} started."

    def poll(seen: Any):
        """Redraws only when a trial started or ended (the runs table is read from disk then, not every tick)."""
        snap = runner.snapshot()
        key = None if snap is None else [snap["sweep"], snap["status"], [t["state"] for t in snap["trials"]]]
        if key is None or key == seen:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), seen
        return status_text(snap), trials_table(snap), scatter_frame(snap), train.runs_frame(ctx), key

    config_json = gr.Textbox(visible=False)
    seen = gr.State(None)
    private = {"api_visibility": "private"}
    start.click(train.collect_config, train.form_inputs, [config_json, message], **private).then(
        start_sweep, [config_json, source, owner, trials, budget], message, api_name="start_sweep")
    stop.click(lambda owner_token: runner.stop(owner_token), owner, message, api_name="stop_sweep")
    timer.tick(poll, seen, [status, table, plot, runs_table, seen], show_progress="hidden", concurrency_limit=None,
               **private)
    gr.Button(visible=False).click(lambda: poll(None)[:4], None, [status, table, plot, runs_table],
                                   api_name="poll_sweep")
