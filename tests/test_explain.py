"""Grad-CAM on real torchvision models: equal to the closed-form CAM where one exists, localised, and worded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ftui.models.backbones import build
from ftui.results.explain import ExplainError, confidence_words, explain, grad_cam
from ftui.results.predict import Predictor
from tests.run_fixtures import make_quick_run


def test_resnet_grad_cam_equals_the_class_activation_map():
    # After layer4 a ResNet only averages and applies one linear layer, so Grad-CAM's channel weights are
    # fc.weight[c] / (H*W) and the map must equal CAM = relu(sum_k w_ck A_k) up to scale.
    torch.manual_seed(0)
    model = build("resnet18", 3, weights="none").eval()
    x = torch.randn(1, 3, 96, 96)
    heat, target, layer = grad_cam(model, x, class_index=1)
    assert target == 1 and layer == "layer4" and heat.shape == (96, 96)
    feats = {}
    model.layer4.register_forward_hook(lambda m, i, o: feats.update(a=o))
    with torch.no_grad():
        model(x)
        cam = F.relu((model.fc.weight[1].view(1, -1, 1, 1) * feats["a"]).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=(96, 96), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(heat, (cam / cam.max()).numpy(), atol=1e-5)


def test_the_map_is_normalised_and_not_flat():
    torch.manual_seed(0)
    model = build("resnet18", 2, weights="none").eval()
    x = torch.zeros(1, 3, 128, 128)
    x[..., :64, :64] = 3.0
    heat, _, _ = grad_cam(model, x)
    assert heat.max() == pytest.approx(1.0) and heat.min() >= 0 and heat.std() > 0


@pytest.mark.slow
def test_vit_is_explained_at_the_input_of_its_last_block():
    torch.manual_seed(0)
    model = build("vit_b_16", 2, weights="none").eval()
    heat, _, layer = grad_cam(model, torch.randn(1, 3, 224, 224))
    # The tokens after the last attention reach the head only through the class token (zero gradient).
    assert layer.startswith("encoder.layers.encoder_layer_11") and heat.shape == (224, 224) and heat.std() > 0


def test_a_model_without_a_spatial_map_is_refused():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    with pytest.raises(ExplainError, match="no spatial feature map"):
        grad_cam(model, torch.randn(1, 3, 2, 2))


def test_explain_overlays_the_models_view_at_a_readable_size(tmp_path):
    run_dir = make_quick_run(tmp_path, image_size=64)
    predictor = Predictor(run_dir)
    image = min((tmp_path / "colours" / "red").glob("*.jpg"))
    result = explain(predictor, str(image), size=256)
    assert isinstance(result.overlay, Image.Image) and result.overlay.size == (256, 256)
    assert result.class_index == int(predictor.logits([str(image)]).argmax())


def test_low_confidence_is_worded_as_such():
    assert confidence_words([("cat", 0.93), ("dog", 0.07)]).endswith("confident.")
    text = confidence_words([("cat", 0.41), ("dog", 0.38), ("fox", 0.21)])
    assert text.startswith("**Low confidence:**") and "dog (38%)" in text
    assert "fairly confident" in confidence_words([("cat", 0.6), ("dog", 0.4)])


def test_misclassified_gallery_thumbnails_carry_the_grad_cam(tmp_path):
    import pandas as pd

    from ftui.ui.context import AppContext, AppSettings
    from ftui.ui.results_step import THUMB, mistake_gallery

    run_dir = make_quick_run(tmp_path, image_size=64)
    ctx = AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work",
                                 data_root=tmp_path / "colours"))
    path = str(min((tmp_path / "colours" / "red").glob("*.jpg")))
    mistakes = pd.DataFrame([{"path": path, "true": "red", "predicted": "blue", "confidence": 0.6, "loss": 1.0}])
    plain = mistake_gallery(ctx, mistakes)
    explained = mistake_gallery(ctx, mistakes, model=Predictor(run_dir))
    # The source images are 40 px: a plain thumbnail stays 40 px, the Grad-CAM overlay is drawn at THUMB.
    assert plain[0][0].size == (40, 40) and explained[0][0].size == (THUMB, THUMB)
    assert explained[0][1] == "red → blue (60%)"
