""""None of these" in real Chromium: the live webcam (a fake camera playing a picture from none of the
classes) and the demo page's webcam show the verdict the run's stored abstain threshold implies."""

from __future__ import annotations

import pytest
from browser_support import BROWSER_MARKS, camera_showing, chromium, fake_camera_file, open_app
from ftui_app_server import free_port, running_app
from PIL import Image
from run_fixtures import make_quick_run

from ftui.results.calibrate import calibrate_and_evaluate
from ftui.results.predict import Predictor
from ftui.results.trust import UNKNOWN_WORDS

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]
VERDICT = "(w) => (document.querySelector('#ftui-verdict') || {innerText: ''}).innerText.includes(w)"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A calibrated run of red/green/blue noise and a camera that shows a plain grey wall."""
    root = tmp_path_factory.mktemp("trust-ui")
    run_dir = make_quick_run(root, image_size=64, per_class=20)
    calibrate_and_evaluate(run_dir)
    wall = Image.new("RGB", (160, 120), (128, 128, 128))
    # The premise, from the stored threshold: this picture is answered "unknown", with room to spare for
    # the camera's YUV round trip (a grey level or two).
    predictor = Predictor(run_dir)
    (verdict,) = predictor.verdicts([wall])
    threshold = predictor.trust.threshold  # the stored score's (mahalanobis)
    assert threshold is not None and verdict.kind == "unknown", (verdict, threshold)
    assert all(v.kind == "unknown" for v in predictor.verdicts(
        [Image.new("RGB", (160, 120), (g, g, g)) for g in (124, 132)]))
    return root, run_dir, fake_camera_file(wall, root / "wall.y4m")


def _shown_score(page) -> float:
    import re

    return float(re.search(r"score (-?[0-9.]+) is below", page.inner_text("#ftui-verdict")).group(1))


def _stream_until_unknown(page, elem: str) -> None:
    page.get_by_role("tab", name="Live").click()
    page.locator(f"{elem} [title='grant webcam access']").click()
    page.wait_for_function(f"() => {{ const v = document.querySelector('{elem} video');"
                           " return !!(v && v.readyState >= 2 && v.videoWidth > 0); }", timeout=30_000)
    page.locator(f"{elem} button[aria-label='capture photo']").click()  # start streaming
    page.wait_for_function(VERDICT, arg=UNKNOWN_WORDS, timeout=90_000)
    page.locator(f"{elem} button[aria-label='capture photo']").click()  # stop


def test_live_webcam_on_a_grey_wall_says_unknown(setup):
    root, run_dir, video = setup
    with running_app(root, data_root=root / "colours") as (url, _ctx), chromium(*camera_showing(video)) as browser:
        _context, page = open_app(browser, url, width=1400, permissions=["camera"])
        page.get_by_role("tab", name="6 · Predict").click()
        page.wait_for_selector("#ftui-examples img", timeout=60_000)
        _stream_until_unknown(page, "#ftui-live")
        assert "none fits" in page.inner_text("#ftui-label")
        # The score the page states is the frame's, below the threshold stored with the model.
        assert _shown_score(page) < Predictor(run_dir).trust.threshold
        page.screenshot(path=str(root / "live-unknown.png"))


def test_demo_page_webcam_on_a_grey_wall_says_unknown(setup, tmp_path):
    from ftui.ui.demo_page import build_demo_page
    from ftui.ui.layout import demo_launch_options

    _root, run_dir, video = setup
    page_app, page_ctx = build_demo_page(run_dir, tmp_path / "work")
    page_app.queue(default_concurrency_limit=1)
    _, url, _ = page_app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True, **demo_launch_options(page_ctx.settings))
    try:
        import gradio_client

        # The API answers the same: the demo's one endpoint on a picture of the wall.
        wall = tmp_path / "wall.png"
        Image.new("RGB", (160, 120), (128, 128, 128)).save(wall)
        client = gradio_client.Client(url, verbose=False)
        error, _label, verdict, _overlay = client.predict(gradio_client.handle_file(str(wall)),
                                                          api_name="/predict_image")
        assert error == "" and UNKNOWN_WORDS in verdict, (error, verdict)
        with chromium(*camera_showing(video)) as browser:
            context = browser.new_context(viewport={"width": 1400, "height": 900}, permissions=["camera"])
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector("#ftui-modelcard", timeout=60_000)
            _stream_until_unknown(page, "#ftui-live")
            assert _shown_score(page) < Predictor(run_dir).trust.threshold
            page.screenshot(path=str(tmp_path / "demo-unknown.png"))
    finally:
        page_app.close()
