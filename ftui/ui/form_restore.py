"""The Train form restored when a browser comes back (reload, second tab): from this browser's running or
last job's TrainConfig, field by field (the reverse of train_step.config_from_form).

"This browser" is its owner token (kept in localStorage): the newest unfinished-or-finished job it started in
this app, else the newest run folder stamped with the token's hash (so it also works after an app restart).
Another browser's settings and uploads are never restored.

Restoring sets the backbone, weights and dataset, whose change events recompute defaults (weights, size,
groups, hyperparameter presets). Those handlers read the restored values (`matches`) and keep them instead,
whatever order the events run in.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gradio as gr

from ftui.config import TrainConfig
from ftui.ui.context import AppContext
from ftui.ui.presets import WEIGHTS_FILE, WEIGHTS_IMAGENET, WEIGHTS_NONE


def my_last_config(ctx: AppContext, owner_token: str | None) -> TrainConfig | None:
    """The config of the newest job (or run folder) this owner token started, or None."""
    from ftui.ui.guard import owner_stamp

    if not owner_token:
        return None
    mine = [job for job in ctx.jobs.jobs() if ctx.owners.get(job.id) == owner_token]
    if mine:
        return mine[-1].config
    stamp = owner_stamp(owner_token)["owner"]
    for run_id in ctx.store.list_runs()["id"]:
        folder = ctx.store.folder(ctx.settings.runs_dir / run_id)
        if folder.read_status().get("owner") == stamp:
            try:
                return TrainConfig.from_file(folder.path / "config.json")
            except (ValueError, OSError):
                return None
    return None


def groups_from_spec(spec: str, names: list[str]) -> list[str]:
    """The ticked layer groups for a TrainConfig.train_groups string (the reverse of train_groups_spec)."""
    if spec == "all":
        return list(names)
    if spec.startswith("last:"):
        n = int(spec.split(":", 1)[1] or 1)
        return names[-max(1, min(n, len(names))):]
    wanted = {g.strip() for g in spec.split(",")}
    return [g for g in names if g in wanted]


def form_values(config: TrainConfig, fields: list[str], group_names: list[str],
                upload_folder: str | Path) -> dict[str, Any]:
    """The form's values by name for a config: TrainConfig fields as they are, plus the Model step's weights
    choice, file and path, ticked groups and the Augment step's settings (key "aug", a dict)."""
    from ftui.ui.paths import is_inside

    values: dict[str, Any] = {name: getattr(config, name) for name in fields}
    values.update(data=config.data, val_fraction=config.val_fraction, backbone=config.backbone,
                  image_size=config.image_size, groups=groups_from_spec(config.train_groups, group_names),
                  aug=dataclasses.asdict(config.aug), weights_file=None, weights_path="")
    if config.weights in ("imagenet", "none"):
        values["weights_choice"] = WEIGHTS_IMAGENET if config.weights == "imagenet" else WEIGHTS_NONE
    else:
        values["weights_choice"] = WEIGHTS_FILE
        # An upload sits in Gradio's upload folder (the file box shows it again); a server file is a path.
        values["weights_file" if is_inside(config.weights, upload_folder) else "weights_path"] = config.weights
    return values


@dataclasses.dataclass
class Targets:
    """What a restore fills: train_step's form by name ("data" is the session's dataset State), the Augment
    controls by AugConfig field, the Data step's outputs (source, status, table, chart, gallery, skipped) and
    the State the change handlers read (model_step.matches)."""

    form: dict[str, Any]
    aug_controls: dict[str, Any]
    data_outputs: list
    pending: Any

    def outputs(self) -> set:
        return {*self.form.values(), *self.aug_controls.values(), *self.data_outputs, self.pending}


FORM_OWN = ("data", "val_fraction", "backbone", "image_size", "groups", "aug_json", "weights_choice",
            "weights_file", "weights_path")


def run_config_for(ctx: AppContext, run_id: str, owner_token: str | None, session: str | None) -> TrainConfig:
    """The config of a run this browser may take its data and settings from: one it started (its data is
    granted to the session), or one whose data and weights this session may read already. ValueError says why
    not (another browser's uploads are never handed over)."""
    from ftui.ui.results_step import run_folder

    if not run_id:
        raise ValueError("click a run in the runs table first")
    config = TrainConfig.from_file(run_folder(ctx, run_id).path / "config.json")
    if ctx.grant_owners_run(run_id, owner_token, session):
        return config
    if not ctx.readable(config.data, session) or (
            config.weights not in ("imagenet", "none") and not ctx.readable(config.weights, session)):
        raise ValueError("this run was trained on another browser's uploads: open it in Evaluate and Predict, "
                         "but its data is not yours to reuse")
    return config


def restore(ctx: AppContext, targets: Targets, owner_token: str | None, source: str, session: str | None,
            config: TrainConfig | None = None):
    """{component: value} restoring `config`, else this owner's last config (only `pending` when there is
    none): the form, the Augment settings, and the dataset with the Data step's view of it when it differs
    from `source`."""
    from ftui.models.backbones import list_backbones
    from ftui.ui.charts import format_count
    from ftui.ui.data_step import show
    from ftui.ui.model_step import structure

    nothing = {targets.pending: None}  # (an empty dict would read as one output value)
    config = config or my_last_config(ctx, owner_token)
    if config is None:
        return nothing
    try:
        groups, _total = structure(ctx, config.backbone, 2)
    except ValueError:  # a backbone this torchvision no longer has
        return nothing
    fields = [name for name in targets.form if name not in FORM_OWN]
    values = form_values(config, fields, [g for g, _ in groups], gr.utils.get_upload_folder())
    updates: dict[Any, Any] = {}
    if config.data != source and Path(config.data).exists():
        # The same browser (owner token) loaded it in an earlier page session: this session may read it too.
        ctx.grants.grant(session, config.data)
        try:
            updates.update(zip(targets.data_outputs, show(ctx, Path(config.data), config.val_fraction)))
        except ValueError:
            values["data"] = source
    else:
        values["data"] = source
    if values["weights_file"]:
        ctx.grants.grant(session, values["weights_file"])
    updates.update({component: values[name] for name, component in targets.form.items()
                    if name in values and name not in ("data", "groups")})
    if config.backbone not in list_backbones():  # picked from "All models"
        updates[targets.form["backbone"]] = gr.update(choices=list_backbones(all=True, timm=True),
                                                      value=config.backbone)
    # Same labels as the Model step's list ("layer4  ·  8.4M").
    labels = [(f"{g}  ·  {format_count(n)}", g) for g, n in groups]
    updates[targets.form["groups"]] = gr.update(choices=labels, value=values["groups"])
    updates.update({targets.aug_controls[k]: v for k, v in values["aug"].items() if k in targets.aug_controls})
    updates[targets.pending] = values
    return updates


def wire_restore(ctx: AppContext, after: Any, targets: Targets, owner: Any, source: Any) -> None:
    """Restore the form once the page load's own defaults (`after`, a load event chain) are in place."""
    from ftui.ui.guard import session_of

    def restore_form(owner_token: str | None, source_path: str, request: gr.Request = None):
        return restore(ctx, targets, owner_token, source_path, session_of(request))

    after.then(restore_form, [owner, source], list(targets.outputs()), show_progress="hidden",
               api_visibility="private")


def wire_use_run(ctx: AppContext, button: Any, opened_run: Any, note: Any, targets: Targets, owner: Any,
                 source: Any) -> None:
    """"Use this run's data and settings": the form, augmentations and dataset of the run opened in the table."""
    from ftui.ui.guard import session_of

    def use_run(run_id: str, owner_token: str | None, source_path: str, request: gr.Request = None):
        session = session_of(request)
        try:
            config = run_config_for(ctx, run_id, owner_token, session)
        except (ValueError, OSError) as exc:
            return {note: f"**Cannot use run {run_id or ''}:** {exc}"}
        updates = restore(ctx, targets, owner_token, source_path, session, config)
        updates[note] = f"The form now holds run `{run_id}`'s data and settings: press **Train** to train again."
        return updates

    button.click(use_run, [opened_run, owner, source], [*targets.outputs(), note], show_progress="hidden",
                 api_visibility="private")
