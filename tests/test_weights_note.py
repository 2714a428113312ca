"""Issue 14 item 2: after a weights-file upload the Model step says what loaded and whether it fits."""

from __future__ import annotations

import torch

from ftui.models.backbones import stock_model
from ftui.ui.model_step import file_fit_note


def test_a_fitting_file_reports_tensors_loaded_and_the_head_replaced(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(stock_model("resnet18", pretrained=False).state_dict(), path)
    note = file_fit_note("resnet18", str(path), num_classes=3)
    # resnet18 has 122 state_dict entries; the file's 1000-class fc (weight, bias) cannot serve 3 classes.
    assert note == "The file fits resnet18: 120 of 122 tensors loaded, head replaced for this dataset's classes."


def test_a_file_for_another_architecture_is_said_not_to_fit(tmp_path):
    path = tmp_path / "mobilenet.pth"
    torch.save(stock_model("mobilenet_v3_small", pretrained=False).state_dict(), path)
    note = file_fit_note("resnet18", str(path), num_classes=3)
    assert note.startswith("**This file does not fit resnet18:**") and "none of the" in note
