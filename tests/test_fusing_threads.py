"""BatchNorm folding traces the model with torch.fx, which patches nn.Module.__call__ for the whole process while
it traces. In the app a training job folds (validates) every epoch while other users' predictions run in other
threads: those forwards failed with "NameError: module is not installed as a submodule" (issue 20's load test:
the predict and live-webcam "internal error"s). Forwards in other threads must not notice a trace."""

from __future__ import annotations

import threading
import time

import torch

from ftui.models.backbones import build
from ftui.models.fusing import fuse_for_inference


def test_forwards_in_other_threads_run_untouched_while_a_model_is_fused():
    torch.manual_seed(0)
    served = build("mobilenet_v3_small", 3, weights="none").eval()  # a predictor another user is calling
    trained = build("mobilenet_v3_small", 3, weights="none")  # the job's model, folded every epoch
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        expected = served(x)
    errors: list[str] = []
    calls = [0]
    stop = threading.Event()

    def predict_forever():
        while not stop.is_set():
            try:
                with torch.inference_mode():
                    out = served(x)
                if not torch.allclose(out, expected):
                    errors.append("a different answer")
            except Exception as exc:  # noqa: BLE001 - every failure is what the test counts
                errors.append(f"{type(exc).__name__}: {exc}")
            calls[0] += 1

    users = [threading.Thread(target=predict_forever) for _ in range(2)]
    for user in users:
        user.start()
    try:
        deadline = time.monotonic() + 60
        folds = 0
        while folds < 8 and time.monotonic() < deadline:
            fused = fuse_for_inference(trained)
            folds += 1
    finally:
        stop.set()
        for user in users:
            user.join(30)
    assert folds == 8 and calls[0] > 0
    assert not errors, f"{len(errors)} of {calls[0]} forwards failed, e.g. {errors[0]}"
    trained.eval()
    with torch.inference_mode():  # the fold itself is still right
        assert torch.allclose(fused(x), trained(x), atol=1e-5)
    assert any(type(m).__name__ == "BatchNorm2d" for m in trained.modules())
    assert not any(type(m).__name__ == "BatchNorm2d" for m in fused.modules())
