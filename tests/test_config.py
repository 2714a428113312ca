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
