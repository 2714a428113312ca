"""Predict in real Chromium: the run's own val images as clickable examples, Grad-CAM on each prediction,
a webcam (Chromium's fake camera) for one-shot and live prediction, and downloads named after the run."""

from __future__ import annotations

import pytest
from browser_support import BROWSER_MARKS, FAKE_CAMERA, chromium, open_app
from ftui_app_server import running_app
from run_fixtures import make_quick_run

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]
IMG_LOADED = "(sel) => { const i = document.querySelector(sel); return !!(i && i.complete && i.naturalWidth > 0); }"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-ui")
    run_dir = make_quick_run(root, image_size=64)
    with running_app(root, data_root=root / "colours") as (url, ctx):
        yield url, ctx, run_dir


@pytest.fixture(scope="module")
def page(app):
    url, _, _ = app
    with chromium(*FAKE_CAMERA) as browser:
        _context, page = open_app(browser, url, width=1400, permissions=["camera"])
        page.get_by_role("tab", name="6 · Predict").click()
        page.wait_for_selector("#ftui-examples img", timeout=60_000)
        yield page


def test_examples_are_the_runs_val_images_and_predict_on_click_with_grad_cam(app, page):
    _, _, run_dir = app
    from ftui.results.loading import load_run
    from ftui.results.predict import Predictor, val_examples

    picked = val_examples(load_run(run_dir), 12)
    answers = Predictor(run_dir).predict([p for p, _ in picked], top_k=1)
    # Each example says its true class and the model's answer, with a mark (issue 23 item 3).
    expected = [f"{'✓' if top[0][0] == c else '✗'} true: {c}, predicted: {top[0][0]}"
                for (_, c), top in zip(picked, answers)]
    captions = page.locator("#ftui-examples .caption-label").all_inner_texts()
    assert captions == expected
    # The photo stays visible: each caption is a strip along the bottom, not a badge over most of the tile.
    tile = page.locator("#ftui-examples button.thumbnail-item").first.bounding_box()
    caption = page.locator("#ftui-examples .caption-label").first.bounding_box()
    assert caption["height"] <= 0.35 * tile["height"], (caption, tile)
    page.locator("#ftui-examples button.thumbnail-item").first.click()
    page.wait_for_function(IMG_LOADED, arg="#ftui-gradcam img", timeout=60_000)
    assert page.locator("#ftui-label").inner_text().strip()
    # The untrained fixture model is unsure, and the page says so in words.
    from ftui.results.predict import Predictor
    from ftui.ui.predict_step import verdict_text

    first = val_examples(load_run(run_dir), 12)[0][0]
    words = verdict_text(Predictor(run_dir).verdicts([first], top_k=3)[0]).replace("**", "")
    verdict = page.inner_text("#ftui-verdict")
    assert verdict.startswith(f"True class: {picked[0][1]} · ") and words in verdict
    assert words.startswith(("Low confidence", "unsure between")), words
    box = page.locator("#ftui-gradcam img").bounding_box()
    assert box["width"] <= 300, "a single result is shown at a readable size, not a huge crop"
    # Its title sits above the heat map, not over its top edge.
    title = page.locator(".prose.ftui-image-title").bounding_box()
    assert title["y"] + title["height"] <= box["y"] + 1


def _gradcam_src(page) -> str:
    return page.evaluate("() => (document.querySelector('#ftui-gradcam img') || {}).src || ''")


def test_webcam_photo_is_predicted_with_grad_cam(page):
    before = _gradcam_src(page)
    page.get_by_role("tab", name="Webcam").click()
    page.locator("#ftui-webcam [title='grant webcam access']").click()
    # The fake camera's frames must be flowing before a photo can be taken.
    page.wait_for_function("() => { const v = document.querySelector('#ftui-webcam video');"
                           " return !!(v && v.readyState >= 2 && v.videoWidth > 0); }", timeout=30_000)
    page.locator("#ftui-webcam button[aria-label='capture photo']").click()
    page.wait_for_function("(old) => { const i = document.querySelector('#ftui-gradcam img');"
                           " return !!(i && i.src && i.src !== old && i.complete && i.naturalWidth > 0); }",
                           arg=before, timeout=60_000)
    assert page.locator("#ftui-label").inner_text().strip()


def test_checkpoint_download_is_named_after_the_run(app, page):
    _, _, run_dir = app
    link = page.locator("#ftui-download-pt")
    page.get_by_role("tab", name="Files").click()
    page.get_by_text("Download the model").click()
    with page.expect_download() as info:
        link.click()
    assert info.value.suggested_filename == f"{run_dir.name}.pt"


def test_live_webcam_streams_one_prediction_after_another(page):
    """The Live tab streams the fake camera's frames: the heat map is replaced again and again."""
    page.get_by_role("tab", name="Live").click()
    page.locator("#ftui-live [title='grant webcam access']").click()
    page.wait_for_function("() => { const v = document.querySelector('#ftui-live video');"
                           " return !!(v && v.readyState >= 2 && v.videoWidth > 0); }", timeout=30_000)
    page.locator("#ftui-live button[aria-label='capture photo']").click()  # "Record": start streaming
    seen = [_gradcam_src(page)]
    for _ in range(2):  # two new results in a row: a stream, not one photo
        page.wait_for_function("(old) => { const i = document.querySelector('#ftui-gradcam img');"
                               " return !!(i && i.src && !old.includes(i.src) && i.complete); }",
                               arg=seen, timeout=60_000)
        seen.append(_gradcam_src(page))
    assert page.locator("#ftui-label").inner_text().strip()
    page.locator("#ftui-live button[aria-label='capture photo']").click()  # stop


def _shown_image(page, locator):
    """The picture a visible <img> shows, fetched the way the browser fetched it."""
    import io

    from PIL import Image

    src = locator.get_attribute("src")
    return Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")


def test_all_images_gallery_shows_the_photos_and_a_click_shows_that_ones_heat_map(app, page):
    """Issue 23 item 7: the batch gallery is photo first (the photo as sent, not a Grad-CAM overlay), and
    clicking a photo puts that image's own answer and heat map in the result pane."""
    import numpy as np

    from ftui.results.predict import Predictor
    from ftui.ui.predict_step import _thumb

    _, _, run_dir = app
    files = sorted(str(p) for p in (run_dir.parent.parent / "colours").rglob("*.jpg"))
    files = [files[0], files[len(files) // 2], files[-1]]
    page.get_by_role("tab", name="Files").click()
    page.locator("#ftui-predict-files input[type=file]").set_input_files(files)
    page.wait_for_function("() => document.querySelectorAll('#ftui-predict-files tbody tr').length >= 3",
                           timeout=30_000)
    page.locator("#ftui-predict").click()
    thumbs = page.locator("#ftui-predict-gallery button.thumbnail-item img")
    page.wait_for_function("() => document.querySelectorAll('#ftui-predict-gallery button.thumbnail-item img')"
                           ".length === 3", timeout=60_000)
    for k, path in enumerate(files):
        shown = np.asarray(_shown_image(page, thumbs.nth(k)).resize((32, 32)), dtype=float)
        photo = np.asarray(_thumb(path).resize((32, 32)), dtype=float)
        assert np.abs(shown - photo).mean() < 12, f"gallery item {k} is not the photo {path}"
    before = _gradcam_src(page)
    page.locator("#ftui-predict-gallery button.thumbnail-item").nth(2).click()
    page.wait_for_function("(old) => { const i = document.querySelector('#ftui-gradcam img');"
                           " return !!(i && i.src && i.src !== old && i.complete && i.naturalWidth > 0); }",
                           arg=before, timeout=60_000)
    top = Predictor(run_dir).predict([files[2]], top_k=1)[0][0][0]
    assert top in page.locator("#ftui-label").inner_text()
