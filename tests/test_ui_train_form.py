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
    changed = {"epochs": 7, "batch_size": 5, "lr": 0.0123, "optimizer": "sgd", "momentum": 0.8, "lr_gamma": 0.5,
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
    # An API caller's text where a number or the augmentation JSON belongs: a user error naming the field.
    values[form["epochs"]], values[form["lr"]] = 3, "fast please"
    text, error = collect(values)
    assert text == "" and error == "**Check the settings:** lr must be a float, got 'fast please'"
    values[form["lr"]], values[form["aug_json"]] = 0.01, '{"no_such_step": 1}'
    text, error = collect(values)
    assert text == "" and "augmentation settings are not valid" in error and "internal" not in error


def test_the_job_trains_the_split_the_data_step_showed_whatever_the_training_seed(tmp_path):
    import threading

    from conftest import make_class_folder

    from ftui.data.datasets import load_dataset
    from ftui.jobs import run_training
    from ftui.results.loading import load_run
    from ftui.runs import RunStore
    from ftui.train.callbacks import Callback, CancelFit
    from ftui.ui.data_step import SPLIT_SEED, load

    data = make_class_folder(tmp_path / "data", per_class=10, size=24)
    demo, ctx = build_app(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work", data_root=data))
    shown = load(ctx, str(data), 0.3)  # what the Data step loaded and showed
    files = {split: sorted(i.path for i in shown.split(split)) for split in ("train", "val")}
    seed = 7
    other = load_dataset(str(data), val_fraction=0.3, seed=seed)
    assert sorted(i.path for i in other.split("val")) != files["val"]  # the training seed alone splits otherwise

    fns = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "start_training"]
    start = fns[0].fn
    config = TrainConfig(seed=seed, val_fraction=0.3, backbone="mobilenet_v3_small", weights="none",
                         image_size=32, batch_size=8, epochs=1, train_groups="head", recipe="plain")
    from ftui.ui.guard import new_owner_token

    job_id, message = start(config.to_json(), str(data), new_owner_token())  # a server-issued token
    assert message == "", message
    job = ctx.jobs.get(job_id)
    assert job.wait(180) and job.status == "done", job.snapshot()
    run = load_run(job.run_dir)
    assert run.config.seed == seed and run.config.split_seed == SPLIT_SEED
    evaluation = json.loads((run.path / "evaluation.json").read_text())
    assert evaluation["num_items"] == len(files["val"])

    class Capture(Callback):
        """The train and val files the job's own loading code hands the trainer (then stops)."""

        def on_fit_start(self, info):
            data = info["trainer"].data
            self.files = {"train": sorted(i.path for i in data.train_items),
                          "val": sorted(i.path for i in data.val_items)}
            raise CancelFit("seen enough")

    capture = Capture()
    run_training(run.config, RunStore(tmp_path / "again"), threading.Event(), callbacks=[capture])
    assert capture.files == files


def test_a_config_restores_the_form_it_came_from(tmp_path, class_folder):
    """form_restore.form_values is config_from_form in reverse: form -> TrainConfig -> the same form values."""
    from ftui.ui.form_restore import form_values, groups_from_spec
    from ftui.ui.model_step import structure

    demo, ctx = build_app(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work"))
    collect = collect_config_handler(demo)
    form = collect.__self__.form
    names = [g for g, _ in structure(ctx, form["backbone"].value, 2)[0]]
    values = {component: component.value for component in form.values()}
    changed = {"epochs": 7, "batch_size": 5, "lr": 0.0123, "optimizer": "sgd", "scheduler": "step", "lr_gamma": 0.5,
               "seed": 11, "label_smoothing": 0.1, "class_weighted_loss": True, "val_fraction": 0.3,
               "data": str(class_folder), "image_size": 96, "weights_choice": "Random init",
               "groups": names[-2:], "feature_cache": False, "bn_mode": "train", "recipe": "plain"}
    for name, value in changed.items():
        values[form[name]] = value
    text, error = collect(values)
    assert error == "", error
    fields = [n for n in form if n not in ("data", "val_fraction", "backbone", "image_size", "groups", "aug_json",
                                           "weights_choice", "weights_file", "weights_path")]
    restored = form_values(TrainConfig.from_json(text), fields, names, tmp_path / "uploads")
    for name, value in changed.items():
        assert restored[name] == value, name
    assert restored["weights_file"] is None and restored["weights_path"] == ""
    assert groups_from_spec("last:2", names) == names[-2:] and groups_from_spec("all", names) == names
    assert groups_from_spec("head", names) == ["head"]


def test_the_last_config_is_this_browsers_own_even_after_a_restart(tmp_path):
    """A run folder stamped with this token's hash is found; another token's is not."""
    from ftui.ui.form_restore import my_last_config
    from ftui.ui.guard import owner_stamp
    from tests.run_fixtures import make_quick_run

    run = make_quick_run(tmp_path)
    _demo, ctx = build_app(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work"))
    assert my_last_config(ctx, "mine") is None  # unstamped
    ctx.store.folder(run).update_status(**owner_stamp("mine"))
    config = my_last_config(ctx, "mine")
    assert config is not None and config.backbone == "resnet18" and config.image_size == 32
    assert my_last_config(ctx, "someone else") is None and my_last_config(ctx, "") is None
