"""Issue 20, finding 12: inputs that used to end in "internal error" (and a traceback in the log) get a message
naming the problem: weights with NaN in them, a CSV whose rows all point outside its folder. The app-level
cases (/preview's settings, a linked best.pt) are in test_redteam2.py."""

from __future__ import annotations

import pytest
import torch
from conftest import make_class_folder

from ftui.data.datasets import DatasetError, load_dataset
from ftui.models.backbones import build
from ftui.models.weights import WeightsError, load_weights


def _nan_weights(tmp_path, backbone: str = "resnet18"):
    state = build(backbone, 1000, weights="none").state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "diverged.pt"
    torch.save(state, path)
    return path


def test_weights_with_nan_are_refused_naming_the_file_not_the_learning_rate(tmp_path):
    path = _nan_weights(tmp_path)
    with pytest.raises(WeightsError, match=r"NaN or infinite values in 1 of its tensors \(layer1.0.conv1.weight\)"):
        load_weights(build("resnet18", 1000, weights="none"), "resnet18", str(path))


def test_training_from_nan_weights_says_so_and_exits_2(tmp_path, capsys):
    from ftui.cli import main

    data = make_class_folder(tmp_path / "d", per_class=4, size=24)
    code = main(["train", str(data), "--backbone", "resnet18", "--weights", str(_nan_weights(tmp_path)),
                 "--epochs", "1", "--image-size", "32", "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "NaN or infinite values" in err and "learning rate" not in err, err


@pytest.mark.parametrize("rows, fragment", [
    (["/etc/passwd,red", "../outside.jpg,blue"], "outside the CSV's folder (refused) x2"),
    ([], "lists no images"),
])
def test_a_csv_without_one_usable_row_gets_the_csv_message_not_the_folder_one(tmp_path, rows, fragment):
    make_class_folder(tmp_path / "elsewhere", per_class=2)
    folder = tmp_path / "data"
    folder.mkdir()
    csv = folder / "labels.csv"
    csv.write_text("\n".join(["path,label", *rows]) + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(csv)
    message = str(info.value)
    assert fragment in message and "labels.csv" in message and "subfolder per class" not in message, message
