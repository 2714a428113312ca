"""Many users at once (issue 20): parallel clients against one live app get exactly the answer a single user
gets (finding 2: Grad-CAM on the shared model, the live webcam), and one run gets one job (finding 11)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from ftui_app_server import running_app
from PIL import Image
from run_fixtures import make_quick_run

from ftui.bench.gradio_http import GradioHTTP

gradio_client = pytest.importorskip("gradio_client")
VIEWERS = 5
FRAMES = 4


def pixels(overlay: Any) -> np.ndarray:
    path = overlay["path"] if isinstance(overlay, dict) else overlay
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def answer(client, run_id: str, image: str) -> tuple[dict, np.ndarray]:
    """(label dict, Grad-CAM overlay pixels) of one image through /predict_image; errors fail the test."""
    error, label, _verdict, overlay = client.predict(run_id=run_id, image=gradio_client.handle_file(image), k=3,
                                                     api_name="/predict_image")
    assert error == "", error
    return label, pixels(overlay)


def same(got: tuple[dict, np.ndarray], want: tuple[dict, np.ndarray]) -> bool:
    """The same label, probabilities and heat map as a single user gets (float noise aside)."""
    (label, overlay), (want_label, want_overlay) = got, want
    return label["label"] == want_label["label"] and np.abs(overlay - want_overlay).mean() <= 1.0 and all(
        abs(a["confidence"] - b["confidence"]) <= 1e-4
        for a, b in zip(label["confidences"], want_label["confidences"]))


@pytest.mark.slow
def test_parallel_live_frames_and_predictions_each_get_the_single_user_answer(tmp_path):
    run = make_quick_run(tmp_path, backbone="mobilenet_v3_small", image_size=64, per_class=4)
    images = sorted(str(p) for p in (tmp_path / "colours").rglob("*.jpg"))[:6]
    with running_app(tmp_path, data_root=tmp_path / "colours") as (url, _ctx):
        single = gradio_client.Client(url, verbose=False)
        reference = {image: answer(single, run.name, image) for image in images}
        failures: list[str] = []
        lock = threading.Lock()

        def webcam(k: int) -> int:
            """One live viewer: a stream of frames (each a different image), each answer checked."""
            client = GradioHTTP(url)
            frames = [images[(k + i) % len(images)] for i in range(FRAMES)]
            try:
                answers = client.stream("predict_live", [[run.name, client.upload(f), 3] for f in frames])
            except Exception as exc:  # noqa: BLE001 - counted and reported below
                with lock:
                    failures.append(f"live viewer {k}: {exc}")
                return 0
            for frame, (error, label, _verdict, overlay) in zip(frames, answers):
                if error or not same((label, pixels(overlay)), reference[frame]):
                    with lock:
                        failures.append(f"live viewer {k}, {frame}: {error or 'not the single-user answer'}")
            return len(answers)

        def single_user(k: int) -> int:
            client = gradio_client.Client(url, verbose=False)
            for i in range(FRAMES):
                image = images[(k + i) % len(images)]
                if not same(answer(client, run.name, image), reference[image]):
                    with lock:
                        failures.append(f"predict_image {image}: not the single-user answer")
            return FRAMES

        # More live viewers than the stream's concurrency limit (the rest queue), beside single predictions.
        with ThreadPoolExecutor(VIEWERS + 2) as pool:
            counted = [pool.submit(webcam, k) for k in range(VIEWERS)] + \
                      [pool.submit(single_user, k) for k in range(2)]
            checked = sum(f.result() for f in counted)
    assert failures == [], failures[:5]
    assert checked == (VIEWERS + 2) * FRAMES
