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
    label, want_label = label.get("value", label), want_label.get("value", want_label)  # plain, or an update
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


@pytest.mark.slow
def test_concurrent_resumes_of_one_run_queue_one_job(tmp_path):
    """Finding 11: three /resume_training calls at once for one stopped run; exactly one job comes of them."""
    import json
    import secrets
    import time

    from conftest import make_class_folder

    make_class_folder(tmp_path / "data" / "colours", per_class=6, size=24)
    owner = secrets.token_urlsafe(16)
    config = {"backbone": "mobilenet_v3_small", "weights": "none", "train_groups": "all", "recipe": "plain",
              "bn_mode": "train", "image_size": 32, "batch_size": 8, "epochs": 300, "feature_cache": False}
    with running_app(tmp_path, data_root=tmp_path / "data") as (url, ctx):
        c = gradio_client.Client(url, verbose=False)
        c.predict(source_path="colours", val_fraction=0.25, api_name="/load_data")
        job, error = c.predict(config=json.dumps(config), owner_token=owner, api_name="/start_training")
        assert error == ""
        deadline = time.monotonic() + 300
        while c.predict(job=job, token=owner, api_name="/poll")[0]["epoch"] < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        run_id = c.predict(job=job, token=owner, api_name="/poll")[0]["run_id"]
        assert c.predict(job=job, owner_token=owner, api_name="/stop") == ""
        ctx.jobs.get(job).wait(120)
        clients = [gradio_client.Client(url, verbose=False) for _ in range(3)]
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda cl: cl.predict(run_id=run_id, owner_token=owner,
                                                          api_name="/resume_training"), clients))
        started = [j for j, error in answers if error == ""]
        refused = [error for _j, error in answers if error]
        assert len(started) == 1, answers
        # Refused either way: "already training or queued" while the one resume is queued, or "is running" once
        # it has started (status.json says running) when a slower call checks.
        assert len(refused) == 2 and all("already training or queued" in e or " is running" in e
                                          for e in refused), refused
        resumes = [j for j in ctx.jobs.jobs() if j.resume]
        assert [j.id for j in resumes] == started
