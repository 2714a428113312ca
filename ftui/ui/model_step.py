"""Step 3, Model: backbone, input resolution, weights source, and which layer groups train."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ftui.config import ConfigError
from ftui.errors import shown_message
from ftui.ui.charts import format_count
from ftui.ui.context import AppContext
from ftui.ui.presets import WEIGHTS_CHOICES, WEIGHTS_FILE, WEIGHTS_IMAGENET, WEIGHTS_NONE, image_size_for

log = logging.getLogger(__name__)

_online: bool | None = None
_online_lock = threading.Lock()

# Gradio spots a parameter defaulting to a Progress and hands each call its own tracker.
PROGRESS = gr.Progress()


@dataclass
class ModelView:
    """The Model step's components the Train step reads."""

    backbone: gr.Dropdown
    image_size: gr.Slider
    weights: gr.Radio
    weights_file: gr.File
    weights_path: gr.Textbox
    groups: gr.CheckboxGroup
    on_load: Any
    load_inputs: list
    load_outputs: list
    # The form values a page load restored from this browser's last job (form_restore), or None.
    restored: gr.State | None = None


def online() -> bool:
    """Whether torchvision's download server is reachable (checked once, quickly)."""
    global _online
    with _online_lock:
        if _online is None:
            try:
                socket.create_connection(("download.pytorch.org", 443), timeout=1.5).close()
                _online = True
            except OSError:
                _online = False
        return _online


def structure(ctx: AppContext, backbone: str, num_classes: int) -> tuple[list[tuple[str, int]], int]:
    """[(group name, parameters)] input -> output, and the total; built once per backbone on the meta device."""
    import torch

    from ftui.models.backbones import build, layer_groups

    key = (backbone, num_classes)
    cached = ctx.structures.get(key)
    if cached is None:
        # The meta device allocates no memory and skips initialisation: only shapes are needed here.
        with torch.device("meta"):
            model = build(backbone, num_classes, weights="none")
        groups = [(g.name, g.num_params) for g in layer_groups(model, backbone)]
        total = sum(p.numel() for p in model.parameters())
        cached = ctx.structures.put(key, (groups, total))
    return cached


def info_markdown(backbone: str) -> str:
    """Size, native input resolution, published ImageNet accuracy and whether the weights are here."""
    from ftui.models.backbones import backbone_info

    info = backbone_info(backbone)
    acc = f"{info.imagenet_acc1:.1f}%" if info.imagenet_acc1 is not None else "–"
    return (f"**{info.name}** ({info.family}) · {format_count(info.num_params)} parameters · "
            f"native input {info.input_size} px · ImageNet top-1 {acc}")


def weights_note(backbone: str) -> str:
    """Say plainly whether ImageNet weights are available, and what happens when they are not."""
    from ftui.models.backbones import backbone_info

    if backbone.startswith("timm:"):
        from ftui.models.timm_models import missing_weights_message

        return missing_weights_message(backbone) + "."
    info = backbone_info(backbone)
    if info.weights_cached:
        return f"ImageNet weights for {backbone} are on this machine ({info.weights_file})."
    if online():
        return (f"ImageNet weights for {backbone} are not downloaded yet: they download when training "
                "starts, or now with **Download weights**.")
    return (f"ImageNet weights for {backbone} are not downloaded and this machine is offline: "
            "training from random init. (Or upload a weights file, or put "
            f"`{info.weights_file}` into torch's hub cache.)")


def file_fit_note(name: str, path: str, num_classes: int) -> str:
    """Whether a weights file fits the backbone and what loaded ("100 of 102 tensors, head replaced")."""
    from ftui.models.backbones import build_with_report

    try:
        model, report = build_with_report(name, num_classes, weights=str(path))
    except Exception as exc:  # noqa: BLE001 - WeightsError: nothing fits, or unreadable; else logged
        return f"**This file does not fit {name}:** {shown_message(log, exc, 'weights file')}"
    total = len(model.state_dict())
    # The file's head is kept only when it has this dataset's number of classes (load_head_if_fits).
    kept = report.message.endswith("(same classes)")
    head = "head loaded from the file (same classes)" if kept else "head replaced for this dataset's classes"
    # Head tensors that fit the stock 1000-class head were loaded, then replaced with the new head.
    loaded = report.loaded_keys if kept else report.loaded_keys - _file_head_keys(path, name, report)
    extra = []
    if report.missing:
        extra.append(f"{len(report.missing)} left at random init")
    if report.mismatched:
        extra.append(f"{len(report.mismatched)} with another shape ignored")
    more = f" ({'; '.join(extra)})" if extra else ""
    return f"The file fits {name}: {loaded} of {total} tensors loaded, {head}{more}."


def _file_head_keys(path: str, name: str, report) -> int:
    """How many of the file's head tensors went into the stock model (and were then replaced)."""
    from ftui.models.backbones import head_path
    from ftui.models.weights import read_state_dict

    prefix = head_path(name) + "."
    in_file = sum(1 for key in read_state_dict(path) if key.removeprefix("module.").startswith(prefix))
    return max(0, in_file - len(report.skipped_head_keys))


def default_weights_choice(backbone: str) -> str:
    """ImageNet when it can be had, random init otherwise, so Train always works."""
    from ftui.models.backbones import backbone_info

    if backbone.startswith("timm:"):  # ftui never downloads timm weights: a file, or random init
        return WEIGHTS_NONE
    return WEIGHTS_IMAGENET if backbone_info(backbone).weights_cached or online() else WEIGHTS_NONE


def train_groups_spec(selected: list[str], all_groups: list[str]) -> str:
    """The TrainConfig.train_groups string for the ticked layer groups."""
    chosen = [g for g in all_groups if g in set(selected or [])]
    if not chosen:
        raise ConfigError("tick at least one layer group to train (the head is the usual choice)")
    if chosen == ["head"]:
        return "head"
    if chosen == all_groups:
        return "all"
    return ",".join(chosen)


def params_markdown(groups: list[tuple[str, int]], total: int, selected: list[str]) -> str:
    """Trainable / total parameters for the ticked groups."""
    trainable = sum(n for name, n in groups if name in set(selected or []))
    share = trainable / total if total else 0.0
    return (f"<div class='ftui-params'><b>{format_count(trainable)}</b> trainable of "
            f"{format_count(total)} parameters ({share:.1%})</div>")


def _choice_column(ctx: AppContext) -> dict[str, Any]:
    """The left column: backbone, its facts, input resolution and the starting weights."""
    from ftui.models.backbones import backbone_info, list_backbones

    start = ctx.settings.demo_backbone
    first = backbone_info(start)
    c: dict[str, Any] = {}
    with gr.Row():
        c["backbone"] = gr.Dropdown(list_backbones(), value=start, label="Backbone", scale=3)
        c["show_all"] = gr.Checkbox(label="All models (torchvision + timm)", value=False, scale=1)
    c["info"] = gr.Markdown(info_markdown(start), elem_classes="ftui-card")
    c["image_size"] = gr.Slider(first.min_input_size, 512, value=ctx.settings.demo_image_size, step=8,
                                label="Input resolution (px)", elem_id="ftui-image-size",
                                info="Smaller is faster; the backbone's native size is usually most accurate.")
    c["weights"] = gr.Radio(WEIGHTS_CHOICES, value=default_weights_choice(start), label="Starting weights")
    c["note"] = gr.Markdown(weights_note(start), elem_classes="ftui-note")
    with gr.Group(visible=False) as c["file_group"]:
        c["weights_file"] = gr.File(label="Upload a weights file (.pth / .pt / .safetensors, a state_dict)",
                                    file_types=[".pth", ".pt", ".bin", ".safetensors"], height=110)
        c["weights_path"] = gr.Textbox(label="...or a weights file on the server (under --data-root)",
                                       interactive=ctx.settings.data_root is not None)
    # Offline the button could only fail: the note already says where to put the file instead.
    c["download"] = gr.Button("Download ImageNet weights", size="sm", visible=not first.weights_cached and online())
    return c


def _groups_column() -> dict[str, Any]:
    """The right column: the layer groups to train, quick presets and the trainable-parameter count."""
    c: dict[str, Any] = {}
    c["groups"] = gr.CheckboxGroup(label="Layer groups to train (input → output; unticked = frozen)")
    with gr.Row():
        c["head_only"] = gr.Button("Head only", size="sm")
        c["all_layers"] = gr.Button("All layers", size="sm")
        c["last_n"] = gr.Number(value=2, minimum=1, precision=0, label="N", scale=0, min_width=70)
        c["last_button"] = gr.Button("Last N groups", size="sm")
    c["params"] = gr.HTML()
    return c


def matches(pending: dict[str, Any] | None, **current: Any) -> bool:
    """Whether values restored from the last job (ui/form_restore.py) belong to what a change handler sees
    (same backbone, weights, data...). Here, not in form_restore: that module reads this one's `structure`."""
    return bool(pending) and all(pending.get(k) == v for k, v in current.items())


def file_group_visible(choice: str):
    """The weights-file inputs show only for the "file" choice."""
    return gr.update(visible=choice == WEIGHTS_FILE)


class _Handlers:
    """The Model step's live updates, sharing the app context and the dataset's class count."""

    def __init__(self, ctx: AppContext, num_classes_fn) -> None:
        self.ctx = ctx
        self.num_classes = num_classes_fn  # source path -> number of classes

    def refresh(self, name: str, source_path: str, selected: list[str] | None, preset: str | None = None):
        """The layer-group choices for a backbone, ticked by preset ("head"/"all") or kept when still valid."""
        groups, total = structure(self.ctx, name, self.num_classes(source_path))
        names = [g for g, _ in groups]
        if preset is None and (not selected or not set(selected) <= set(names)):
            # Every layer: random features must learn; pretrained ones are fine-tuned after the head is fitted
            # (the fine-tune recipe), which beat the head alone on data unlike ImageNet (bench-recipes).
            preset = "all"
        if preset is not None:
            selected = ["head"] if preset == "head" else names
        labels = [(f"{g}  ·  {format_count(n)}", g) for g, n in groups]
        return gr.update(choices=labels, value=selected), params_markdown(groups, total, selected)

    def head_only(self, name: str, source_path: str, selected: list[str] | None):
        return self.refresh(name, source_path, selected, "head")

    def all_layers(self, name: str, source_path: str, selected: list[str] | None):
        return self.refresh(name, source_path, selected, "all")

    def size_update(self, name: str, source_path: str, weights_choice: str):
        """The preselected resolution: the demo from scratch stays small, everything else goes native."""
        from ftui.models.backbones import backbone_info

        info_b = backbone_info(name)
        demo = str(source_path) == str(self.ctx.demo_source())
        size = image_size_for(weights_choice, demo, info_b.input_size, info_b.min_input_size,
                              self.ctx.settings.demo_image_size)
        return gr.update(minimum=info_b.min_input_size, value=size, interactive=not info_b.fixed_input_size)

    def kept(self, restored: dict | None, name: str, source_path: str, choice: str, **match):
        """(groups box, counts, size) of a form just restored from the last job (form_restore), else None:
        the restore changed backbone and dataset, whose handlers would otherwise put the defaults back."""
        if not matches(restored, backbone=name, **match):
            return None
        box, counts = self.refresh(name, source_path, restored["groups"])
        size = self.size_update(name, source_path, choice)
        return box, counts, {**size, "value": restored["image_size"] or size["value"]}

    def on_backbone(self, name: str, source_path: str, restored: dict | None = None):
        from ftui.models.backbones import backbone_info

        info_b = backbone_info(name)
        choice = restored["weights_choice"] if restored and restored["backbone"] == name else \
            default_weights_choice(name)
        kept = self.kept(restored, name, source_path, choice)
        if kept is None:
            kept = (*self.refresh(name, source_path, None), self.size_update(name, source_path, choice))
        box, counts, size = kept
        return (info_markdown(name), weights_note(name), choice, size,
                gr.update(visible=not info_b.weights_cached and online()), box, counts)

    def on_weights(self, name: str, source_path: str, selected: list[str], choice: str):
        box, counts = self.refresh(name, source_path, selected, "all")
        return box, counts, self.size_update(name, source_path, choice)

    def on_source(self, name: str, source_path: str, selected: list[str] | None, choice: str,
                  restored: dict | None = None):
        # Your own data gets the backbone's native resolution; the demo keeps its small, fast one.
        kept = self.kept(restored, name, source_path, choice, data=source_path)
        if kept:
            return kept
        box, counts = self.refresh(name, source_path, selected)
        return box, counts, self.size_update(name, source_path, choice)

    def on_load(self, name: str, source_path: str, choice: str):
        return self.on_source(name, source_path, None, choice)

    def on_groups(self, name: str, source_path: str, selected: list[str]):
        groups, total = structure(self.ctx, name, self.num_classes(source_path))
        return params_markdown(groups, total, selected)

    def preset_last(self, name: str, source_path: str, n: float):
        groups, total = structure(self.ctx, name, self.num_classes(source_path))
        names = [g for g, _ in groups]
        chosen = names[-max(1, min(int(n or 1), len(names))):]
        return gr.update(value=chosen), params_markdown(groups, total, chosen)

    def on_show_all(self, everything: bool, name: str):
        from ftui.models.backbones import list_backbones

        return gr.update(choices=list_backbones(all=everything, timm=everything), value=name)

    def download_weights(self, name: str, progress=PROGRESS):
        from ftui.models.weights import download_imagenet

        try:
            download_imagenet(name, progress=lambda f, m: progress(f, desc=m))
        except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
            return f"**Download failed:** {shown_message(log, exc, 'download')}", gr.skip(), gr.skip()
        return weights_note(name), WEIGHTS_IMAGENET, gr.update(visible=False)

    def on_weights_file(self, name: str, source_path: str, uploaded: str | None, server_path: str):
        """Check an uploaded (or server) weights file against the backbone as soon as it is chosen."""
        from ftui.ui.paths import resolve_under

        try:
            if uploaded:
                path = uploaded
            elif server_path and server_path.strip():
                roots = [self.ctx.settings.data_root] if self.ctx.settings.data_root else []
                path = str(resolve_under(server_path, roots, what="weights file"))
            else:
                return weights_note(name)
        except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
            return f"**Cannot use that file:** {shown_message(log, exc, 'weights path')}"
        return file_fit_note(name, path, self.num_classes(source_path))


def build(ctx: AppContext, source: gr.State, num_classes_fn) -> ModelView:
    """Lay out the Model step and wire its live updates."""
    gr.Markdown("A **backbone** pretrained on ImageNet already knows edges, textures and shapes; a new head "
                "learns your classes. Small models train fastest on a CPU.", elem_classes="ftui-help")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            c = _choice_column(ctx)
        with gr.Column(scale=2):
            c.update(_groups_column())
    h = _Handlers(ctx, num_classes_fn)
    private = {"api_visibility": "private"}
    backbone, weights, groups, params = c["backbone"], c["weights"], c["groups"], c["params"]
    file_inputs = [backbone, source, c["weights_file"], c["weights_path"]]
    c["weights_file"].change(h.on_weights_file, file_inputs, c["note"], **private)
    c["weights_path"].submit(h.on_weights_file, file_inputs, c["note"], **private)
    restored = gr.State(None)
    for clear in (backbone.input, weights.input):  # the person's own choice ends the restored form
        clear(lambda: None, None, restored, **private)
    backbone.change(h.on_backbone, [backbone, source, restored],
                    [c["info"], c["note"], weights, c["image_size"], c["download"], groups, params], **private)
    c["show_all"].change(h.on_show_all, [c["show_all"], backbone], backbone, **private)
    groups.input(h.on_groups, [backbone, source, groups], params, **private)
    c["head_only"].click(h.head_only, [backbone, source, groups], [groups, params], **private)
    c["all_layers"].click(h.all_layers, [backbone, source, groups], [groups, params], **private)
    c["last_button"].click(h.preset_last, [backbone, source, c["last_n"]], [groups, params], **private)
    weights.change(file_group_visible, weights, c["file_group"], **private)
    weights.input(h.on_weights, [backbone, source, groups, weights], [groups, params, c["image_size"]], **private)
    c["download"].click(h.download_weights, backbone, [c["note"], weights, c["download"]], **private)
    source.change(h.on_source, [backbone, source, groups, weights, restored], [groups, params, c["image_size"]],
                  **private)
    return ModelView(backbone, c["image_size"], weights, c["weights_file"], c["weights_path"], groups,
                     on_load=h.on_load, load_inputs=[backbone, source, weights],
                     load_outputs=[groups, params, c["image_size"]], restored=restored)
