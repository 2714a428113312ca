"""Step 2, Augment: a switch and strength for every augmentation, and a live preview grid."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ftui.config import AugConfig, ConfigError
from ftui.data.datasets import DatasetError
from ftui.errors import shown_message
from ftui.ui.context import AppContext
from ftui.ui.guard import number

log = logging.getLogger(__name__)

# field -> (label, minimum, maximum, step) for the strength sliders; booleans become checkboxes.
SLIDERS = {
    "crop_scale_min": ("Smallest crop (share of the image)", 0.05, 1.0, 0.05),
    "crop_scale_max": ("Largest crop", 0.05, 1.0, 0.05),
    "rotation_degrees": ("Max rotation (degrees)", 0.0, 180.0, 1.0),
    "brightness": ("Brightness", 0.0, 1.0, 0.05),
    "contrast": ("Contrast", 0.0, 1.0, 0.05),
    "saturation": ("Saturation", 0.0, 1.0, 0.05),
    "hue": ("Hue", 0.0, 0.5, 0.01),
    "grayscale_p": ("Probability", 0.0, 1.0, 0.05),
    "blur_sigma_max": ("Max blur sigma", 0.2, 5.0, 0.1),
    "erasing_p": ("Probability", 0.0, 1.0, 0.05),
}
# Each switch with the sliders it governs, in the order training applies them.
SECTIONS = [
    ("random_resized_crop", "Random resized crop", ["crop_scale_min", "crop_scale_max"]),
    ("hflip", "Horizontal flip", []),
    ("vflip", "Vertical flip", []),
    ("rotation", "Rotation", ["rotation_degrees"]),
    ("color_jitter", "Colour jitter", ["brightness", "contrast", "saturation", "hue"]),
    ("grayscale", "Random grayscale", ["grayscale_p"]),
    ("blur", "Gaussian blur", ["blur_sigma_max"]),
    ("random_erasing", "Random erasing", ["erasing_p"]),
]
FIELDS = [f.name for f in dataclasses.fields(AugConfig)]
MAX_CHOICES = 40
MAX_DRAWS = 16
PREVIEW_SIZES = (16, 1024)  # the same range TrainConfig.image_size allows


@dataclass
class AugmentView:
    """The Augment step's output the Train step reads: the settings as AugConfig JSON."""

    aug_json: gr.Textbox
    controls: list[gr.components.Component]
    on_load: Any
    load_inputs: list
    load_outputs: list


# Said where the preview is: the phases on cached features (the fine-tune recipe's head phase, head-only and
# last:N runs) see the unaugmented images with feature_cache_views=1 (ftui/bench/cacheviews.py, docs).
CACHED_PHASE_NOTE = ("Every phase that trains through the images sees these draws. A phase that trains on cached "
                     "features of frozen layers (the head phase of the fine-tune recipe, a head-only run) sees "
                     "each image unaugmented, once: *Feature cache views* > 1 adds augmented views to it.")


def aug_from_values(values: list) -> AugConfig:
    """AugConfig from the controls' values (in FIELDS order), validated."""
    aug = AugConfig(**dict(zip(FIELDS, values)))
    aug.validate()
    return aug


def aug_from_json(text: Any) -> AugConfig:
    """AugConfig from a client's JSON text; ConfigError (a message, no traceback in the log) names what is
    wrong: not text, not JSON, not an object, an unknown key, a value of the wrong type or range."""
    from ftui.config import TrainConfig

    if not isinstance(text, str) or len(text) > 10_000:
        raise ConfigError("aug_settings must be JSON text (at most 10,000 characters) of augmentation settings")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"aug_settings is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(raw, dict):
        raise ConfigError("aug_settings must be a JSON object of augmentation settings, e.g. {\"hflip\": true}")
    aug = TrainConfig.from_dict({"aug": raw}).aug  # unknown keys and wrong types are ConfigErrors there
    aug.validate()
    return aug


def image_choices(dataset) -> list[tuple[str, str]]:
    """(label, index into the train split) for a spread of training images, a few per class."""
    train = dataset.split("train")
    by_class: dict[int, list[int]] = {}
    for i, item in enumerate(train):
        by_class.setdefault(item.label, []).append(i)
    per_class = max(1, MAX_CHOICES // max(1, len(by_class)))
    picks = [i for label in sorted(by_class) for i in by_class[label][:per_class]]
    return [(f"{dataset.classes[train[i].label]} · {_name(train[i].path)}", str(i)) for i in picks]


def _name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def preview_images(dataset, aug: AugConfig, index: int, n: int, seed: int, size: int) -> list:
    """n augmented draws of one training image, exactly as training sees them."""
    from ftui.data.augment import preview
    from ftui.data.images import open_rgb

    train = dataset.split("train")
    if not train:
        raise DatasetError("the dataset has no training images")
    item = train[max(0, min(int(index), len(train) - 1))]
    image = open_rgb(item.path)
    return [(im, f"draw {k + 1}") for k, im in enumerate(preview(image, aug, int(n), int(seed), size=int(size)))]


def build(ctx: AppContext, source: gr.State, val_fraction: gr.Slider, image_size: gr.Slider,
          dataset_fn) -> AugmentView:
    """Lay out the Augment step; every setting change redraws the preview."""
    defaults = AugConfig()
    controls: dict[str, gr.components.Component] = {}
    gr.Markdown("Augmentations show the model a slightly different version of each image every epoch, "
                "so it learns the object rather than the exact pixels. Turn off what would change the "
                "meaning of your images (e.g. vertical flips for text or street scenes).",
                elem_classes="ftui-help")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            for switch, label, sliders in SECTIONS:
                with gr.Group(elem_classes="ftui-aug-group"):
                    controls[switch] = gr.Checkbox(value=getattr(defaults, switch), label=label)
                    for name in sliders:
                        text, lo, hi, step = SLIDERS[name]
                        controls[name] = gr.Slider(lo, hi, value=getattr(defaults, name), step=step, label=text)
        with gr.Column(scale=3, min_width=420):
            with gr.Row():
                image = gr.Dropdown(label="Training image", choices=[], scale=3, allow_custom_value=True,
                                    elem_id="ftui-aug-image")
                random_button = gr.Button("Random image", size="sm", scale=1)
                reseed = gr.Button("Reseed", size="sm", scale=1)
            with gr.Row():
                draws = gr.Slider(4, 16, value=8, step=1, label="Draws")
                seed = gr.Number(value=0, precision=0, label="Seed")
            gallery = gr.Gallery(label="What training sees", columns=4, height=420, object_fit="contain",
                         elem_id="ftui-aug-gallery")
            gr.Markdown(CACHED_PHASE_NOTE, elem_classes="ftui-help", elem_id="ftui-aug-cache-note")
            error = gr.Markdown(elem_classes="ftui-error")
    aug_json = gr.Textbox(json.dumps(dataclasses.asdict(defaults)), visible=False)
    ordered = [controls[name] for name in FIELDS]

    def collect(*values):
        try:
            return json.dumps(dataclasses.asdict(aug_from_values(list(values)))), ""
        except (ConfigError, TypeError) as exc:
            return gr.skip(), f"**Check the settings:** {exc}"

    def preview(aug_settings: str, image_index: str, n_draws: float, seed_value: float, size: float,
                source_path: str, fraction: float):
        """n augmented versions of one training image under the given AugConfig JSON."""
        try:
            # Bounded here, whoever calls: one call with size 20000 once took 6 GB of memory.
            n_draws = number("draws", n_draws, 1, MAX_DRAWS)
            size = number("size", size, *PREVIEW_SIZES)
            seed_value = number("seed", seed_value, 0, 2**32 - 1)
            index = number("image_index", image_index or 0, 0, 10**9)
            aug = aug_from_json(aug_settings)
            dataset = dataset_fn(source_path, fraction)
            return preview_images(dataset, aug, index, n_draws, seed_value, size), ""
        except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
            return gr.skip(), f"**Cannot preview:** {shown_message(log, exc, 'augment preview')}"

    def choices(source_path: str, fraction: float, pick=lambda options: options[0]):
        options = image_choices(dataset_fn(source_path, fraction))
        return gr.update(choices=options, value=pick(options)[1] if options else None)

    private = {"api_visibility": "private"}
    for control in ordered:
        control.change(collect, ordered, [aug_json, error], trigger_mode="always_last", **private)
    inputs = [aug_json, image, draws, seed, image_size, source, val_fraction]
    preview_options = {"concurrency_limit": 2, "concurrency_id": "preview", "trigger_mode": "always_last",
                       "show_progress": "minimal"}
    aug_json.change(preview, inputs, [gallery, error], api_name="preview", **preview_options)
    for trigger in (image, draws, seed):
        trigger.change(preview, inputs, [gallery, error], **preview_options, **private)
    reseed.click(lambda: random.randrange(1_000_000), None, seed, **private)
    random_button.click(lambda s, f: choices(s, f, random.choice), [source, val_fraction], image, **private)
    # A new dataset redraws the preview itself: its first image keeps index "0", so the picker would not.
    source.change(choices, [source, val_fraction], image, **private).then(
        preview, inputs, [gallery, error], **preview_options, **private)
    return AugmentView(aug_json=aug_json, controls=ordered, on_load=choices, load_inputs=[source, val_fraction],
                       load_outputs=[image])
