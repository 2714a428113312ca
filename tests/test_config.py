import pytest

from ftui.config import AugConfig, ConfigError, TrainConfig


def test_train_config_round_trips_through_json(tmp_path):
    cfg = TrainConfig(data="x", backbone="resnet18", epochs=3, aug=AugConfig(vflip=True, hue=0.1))
    path = tmp_path / "run.json"
    cfg.to_json(path)
    again = TrainConfig.from_file(path)
    assert again == cfg
    assert isinstance(again.aug, AugConfig) and again.aug.vflip is True


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": 0}, "learning rate"),
        ({"optimizer": "lion"}, "optimizer"),
        ({"train_groups": "last:x"}, "last:N"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"data": ""}, "no dataset"),
    ],
)
def test_validate_names_the_bad_value(change, fragment):
    cfg = TrainConfig(data="x").replace(**change)
    with pytest.raises(ConfigError, match=fragment):
        cfg.validate()


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown config keys: bogus"):
        TrainConfig.from_dict({"data": "x", "bogus": 1})


def test_aug_validation_rejects_inverted_crop_scale():
    with pytest.raises(ConfigError, match="crop scale"):
        AugConfig(crop_scale_min=0.9, crop_scale_max=0.5).validate()


def test_every_field_declares_a_group_and_help_and_validate_reads_the_declared_range():
    """The config is declarative: each field's spec (group, help, range or choices) drives validate(), the CLI
    flags and the UI hints; a field whose range changes in its spec changes what validate() accepts."""
    import dataclasses

    from ftui import config as config_module

    for cls in (TrainConfig, AugConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("group") in config_module.GROUPS and f.metadata.get("help"), f.name
    assert [f.name for f in TrainConfig.fields_by_group()["schedule"]][:2] == ["epochs", "recipe"]
    assert TrainConfig.hint("lr_step_size") == "epochs between rate drops (step schedule) (in [1, 10000])"
    for value, ok in ((1, True), (10_000, True), (0, False), (10_001, False)):
        cfg = TrainConfig(data="x", lr_step_size=value)
        if ok:
            cfg.validate()
        else:
            with pytest.raises(ConfigError, match=r"lr_step_size must be in \[1, 10000\]"):
                cfg.validate()


def test_a_config_written_before_the_renames_loads_with_the_new_names():
    old = TrainConfig(data="x").to_dict()
    old["step_size"], old["gamma"] = old.pop("lr_step_size"), old.pop("lr_gamma")
    old["step_size"], old["gamma"] = 3, 0.5
    cfg = TrainConfig.from_dict(old)
    assert (cfg.lr_step_size, cfg.lr_gamma) == (3, 0.5)


def test_a_config_from_a_bigger_machine_loads_and_runs_with_workers_clamped_to_the_cores_here(tmp_path):
    import os

    import torch

    from ftui.train.batches import SpeedSettings

    path = tmp_path / "config.json"
    TrainConfig(data="x", num_workers=64).to_json(path)
    cfg = TrainConfig.from_file(path)
    cfg.validate()  # 64 loader processes is a valid wish; the run clamps it
    speed = SpeedSettings(torch.device("cpu"), torch.nn.Linear(2, 2), cfg)
    assert speed.num_workers == min(64, os.cpu_count() or 1)
    if (os.cpu_count() or 1) < 64:
        assert "the config asks 64" in speed.describe()
