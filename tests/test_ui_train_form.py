"""The Train step's form reaches TrainConfig by field name, through the app's real Gradio blocks."""

from __future__ import annotations

import json

from ftui.config import TrainConfig
from ftui.ui import AppSettings, build_app


def collect_config_handler(demo):
    """The Train button's first event: Gradio calls it with a dict {component: value} (a set of inputs)."""
    fns = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "collect_config"]
    assert fns and all(f.inputs_as_dict for f in fns)
    return fns[0].fn


def test_every_form_field_lands_in_its_config_field(tmp_path, class_folder):
    demo, ctx = build_app(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work"))
    collect = collect_config_handler(demo)
    form = collect.__self__.form
    values = {component: component.value for component in form.values()}
    changed = {"epochs": 7, "batch_size": 5, "lr": 0.0123, "optimizer": "sgd", "momentum": 0.8, "gamma": 0.5,
               "seed": 11, "early_stopping_patience": 2, "label_smoothing": 0.1, "class_weighted_loss": True,
               "run_name": "  mine  ", "val_fraction": 0.3, "data": str(class_folder)}
    for name, value in changed.items():
        values[form[name]] = value
    values[form["weights_choice"]] = "Random init"
    values[form["groups"]] = ["head"]  # the Model step fills its group list when the page loads
    text, error = collect(values)
    assert error == "", error
    config = TrainConfig.from_json(text)
    for name, value in changed.items():
        assert getattr(config, name) == (value.strip() if name == "run_name" else value), name
    assert config.weights == "none" and config.backbone == form["backbone"].value and config.train_groups == "head"
    assert json.loads(text)["runs_dir"] == str(ctx.settings.runs_dir)


def test_a_bad_value_is_a_message_not_an_exception(tmp_path):
    demo, _ = build_app(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work"))
    collect = collect_config_handler(demo)
    form = collect.__self__.form
    values = {component: component.value for component in form.values()}
    values[form["epochs"]], values[form["groups"]] = 0, ["head"]
    text, error = collect(values)
    assert text == "" and "epochs must be" in error
