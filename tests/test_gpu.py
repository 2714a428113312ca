"""CUDA-only checks (skipped without a GPU): the parts that no CPU run can exercise.

`scripts/gpu_check.sh` runs this file on a CUDA machine together with the GPU bench.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_tutorial_reference_runs_a_cuda_model_on_cpu_loaded_batches(split_folder):
    from torchvision.models import mobilenet_v3_small

    from ftui.backbones import classifier_head
    from ftui.reference import compute_limit, run_tutorial

    model = mobilenet_v3_small(num_classes=3).cuda()
    result = run_tutorial(model, classifier_head(model, "mobilenet_v3_small"), split_folder, epochs=1, head_only=False, num_workers=0)
    assert len(result.val_acc) == 1 and 0 <= result.val_acc[0] <= 1
    assert next(model.parameters()).is_cuda
    limit = compute_limit(model, batch_size=4, image_size=64, steps=2)
    assert limit["train_images_per_s"] > 0 and limit["infer_images_per_s"] > 0


def test_tutorial_reference_moves_a_cpu_model_to_the_device_it_is_given(split_folder):
    from ftui.reference import run_tutorial

    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
    result = run_tutorial(model, model[2], split_folder, epochs=1, head_only=True, num_workers=0, device="cuda")
    assert len(result.val_acc) == 1
    assert next(model.parameters()).is_cuda
