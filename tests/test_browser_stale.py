"""Issue 14 item 2 in real Chromium: no stale screens. After a folder upload the Augment preview draws the new
dataset's images (not the demo's); after pressing Train the previous run's FINISHED card and curves give
way at once, not at a later poll."""

from __future__ import annotations

import io
import time

import pytest
from browser_support import BROWSER_MARKS, chromium, open_app
from conftest import make_class_folder
from ftui_app_server import running_app
from PIL import Image

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]
FIRST_DRAW = "() => (document.querySelector('#ftui-aug-gallery img') || {}).src || ''"




def test_augment_preview_shows_the_uploaded_dataset(tmp_path):
    folder = make_class_folder(tmp_path / "photos", per_class=6, classes=["blue", "green"], size=48)
    with running_app(tmp_path / "app") as (url, _ctx), chromium() as browser:
        _context, page = open_app(browser, url, width=1400)
        page.get_by_role("tab", name="2 · Augment").click()
        page.wait_for_function(f"({FIRST_DRAW})() !== ''", timeout=60_000)
        demo_draw = page.evaluate(FIRST_DRAW)

        page.get_by_role("tab", name="1 · Data").click()
        page.get_by_role("tab", name="Upload a folder").click()
        page.set_input_files("#ftui-folder-picker input[type=file]", str(folder))
        page.wait_for_selector("#ftui-data-status:has-text('2 classes')", timeout=60_000)
        page.get_by_role("tab", name="2 · Augment").click()
        page.wait_for_function("() => document.querySelector('#ftui-aug-image input').value.startsWith('blue')",
                               timeout=60_000)
        page.wait_for_function(f"(old) => ({FIRST_DRAW})() !== old", arg=demo_draw, timeout=60_000)
        drawn = Image.open(io.BytesIO(page.request.get(page.evaluate(FIRST_DRAW)).body())).convert("RGB")
        red, green, blue = (sum(band) / len(band) for band in zip(*drawn.getdata()))
    assert blue > red + 60 and blue > green + 60, (red, green, blue)  # a draw of a blue image, not a demo texture


def test_pressing_train_replaces_the_finished_card_and_curves_at_once(tmp_path):
    with running_app(tmp_path) as (url, ctx), chromium() as browser:
        _context, page = open_app(browser, url, width=1400)
        page.get_by_role("tab", name="4 · Train").click()
        page.fill("#ftui-epochs input", "1")
        page.press("#ftui-epochs input", "Tab")
        page.click("#ftui-train")
        page.wait_for_selector("#ftui-train-status:has-text('Finished')", timeout=180_000)
        page.wait_for_function("() => document.querySelectorAll('#ftui-acc-plot g.mark-symbol.role-mark path')"
                               ".length >= 1", timeout=30_000)

        # A job that ends fills the run pickers (Evaluate, Predict) with its run, no reload or refresh needed.
        run_id = ctx.store.list_runs()["id"].iloc[0]
        page.get_by_role("tab", name="5 · Evaluate").click()
        page.wait_for_function("(id) => document.querySelector('#ftui-eval-run input').value == id", arg=run_id,
                               timeout=30_000)
        page.get_by_role("tab", name="6 · Predict").click()
        assert page.input_value("#ftui-predict-run input") == run_id
        page.get_by_role("tab", name="4 · Train").click()

        clicked = time.monotonic()
        page.click("#ftui-train")
        page.wait_for_function("() => !document.querySelector('#ftui-train-status').innerText.toLowerCase()"
                               ".includes('finished')", timeout=30_000)
        seconds = time.monotonic() - clicked
        markers = page.evaluate("() => document.querySelectorAll('#ftui-acc-plot g.mark-symbol.role-mark path')"
                                ".length")
        print(f"\n[ftui timing] Train click -> previous FINISHED card gone: {seconds:.2f} s")
        ctx.jobs.stop_all()
    assert seconds < 2.0  # 0.5 s measured; 3.1 s when the card waited for the new job's first poll
    assert markers == 0  # the old run's accuracy points went with its card
