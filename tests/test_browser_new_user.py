"""What a new user tripped on (issue 23), in real Chromium at 1400x900: Train and its status on the first
screen with a short hint, the running run in the runs table (item 10); Evaluate and Predict open on the best
run already evaluated, no placeholder tables (item 9); the misclassified photos first, the heat map on demand,
click to enlarge (item 7); the demo page named by its owner with no empty boxes, clipped headings or stray
footer dots (item 11)."""

from __future__ import annotations

import pytest
from browser_support import BROWSER_MARKS, chromium, open_app, wait_status
from ftui_app_server import free_port, running_app
from run_fixtures import make_quick_run

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]
W, H = 1400, 900


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("new-user")
    run_dir = make_quick_run(root, image_size=48, per_class=8)
    with running_app(root, data_root=root / "colours") as (url, ctx):
        yield url, ctx, run_dir


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def test_evaluate_opens_on_the_run_evaluated_with_photos_and_heat_map_on_demand(app, browser):
    url, _ctx, run_dir = app
    context, page = open_app(browser, url, width=W, height=H)
    try:
        page.get_by_role("tab", name="5 · Evaluate").click()
        # Evaluated without a click: the accuracy card and a real per-class table, no "1 2 3" header.
        page.wait_for_selector("#ftui-eval-summary h3:has-text('Accuracy')", timeout=120_000)
        assert page.input_value("#ftui-eval-run input") == run_dir.name
        headers = page.locator("#ftui-eval-table th").all_inner_texts()
        assert "class" in " ".join(headers) and not {"1", "2", "3"} & {h.strip() for h in headers}
        # Photos first (not heat maps), big enough to judge; a click enlarges one and explains it.
        thumbs = page.locator("#ftui-eval-gallery button.thumbnail-item")
        assert thumbs.count() >= 1
        natural = page.evaluate("() => document.querySelector('#ftui-eval-gallery img').naturalWidth")
        assert natural >= 40  # the photo at its own size (the fixture's images are 40-48 px), not a 128 px map
        caption = page.locator("#ftui-eval-gallery .caption-label").first.bounding_box()
        image = page.locator("#ftui-eval-gallery button.thumbnail-item img").first.bounding_box()
        assert caption["height"] < 0.35 * image["height"], (caption, image)
        thumbs.first.click()
        page.wait_for_function("() => { const i = document.querySelector('#ftui-eval-why img');"
                               " return !!(i && i.complete && i.naturalWidth > 0); }", timeout=60_000)
        assert page.locator("#ftui-eval-gallery .preview img, #ftui-eval-gallery img.preview").count() >= 1 or \
            page.locator("#ftui-eval-gallery button[aria-label='Close']").count() >= 1
        # Predict opened on the same run, its examples saying the truth.
        page.get_by_role("tab", name="6 · Predict").click()
        assert page.input_value("#ftui-predict-run input") == run_dir.name
        page.wait_for_selector("#ftui-examples .caption-label", timeout=60_000)
        assert all(" true: " in c for c in page.locator("#ftui-examples .caption-label").all_inner_texts())
        assert page.inner_text("#ftui-verdict").strip(), "no empty verdict box"
    finally:
        context.close()


def test_train_button_and_status_above_the_fold_and_the_running_run_listed(app, browser):
    url, ctx, _ = app
    context, page = open_app(browser, url, width=W, height=H)
    try:
        page.get_by_role("tab", name="4 · Train").click()
        train = page.locator("#ftui-train").bounding_box()
        status = page.locator("#ftui-train-status").bounding_box()
        progress = page.locator("#ftui-progress").bounding_box()
        assert train["y"] + train["height"] <= H and status["y"] + status["height"] <= H, (train, status)
        assert progress["y"] + progress["height"] <= H, progress
        assert len(page.inner_text("#ftui-preset-hint")) < 220
        page.fill("#ftui-epochs input", "200")
        page.press("#ftui-epochs input", "Tab")
        page.click("#ftui-train")
        wait_status(page, "epoch", timeout=180_000)
        page.wait_for_function("() => /\\brunning\\b/.test(document.querySelector('#ftui-runs').innerText)",
                               timeout=30_000)
        page.click("#ftui-stop")
        wait_status(page, "stopped", timeout=60_000)
    finally:
        for job in ctx.jobs.jobs():
            job.stop()
        context.close()


def test_demo_page_is_named_by_its_owner_without_empty_or_clipped_parts(app, browser, tmp_path):
    _, _, run_dir = app
    from ftui.results.modelcard import write_card_text
    from ftui.ui.demo_page import build_demo_page
    from ftui.ui.layout import demo_launch_options

    write_card_text(run_dir, "Colour sorter", "Tells paint swatches apart for the shop floor.")
    page_app, page_ctx = build_demo_page(run_dir, tmp_path / "work")
    page_app.queue(default_concurrency_limit=1)
    _, url, _ = page_app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True, **demo_launch_options(page_ctx.settings))
    try:
        if True:  # the module's browser (Playwright's sync API cannot start a second one inside it)
            page = browser.new_page(viewport={"width": W, "height": H})
            page.goto(url)
            page.wait_for_selector("#ftui-modelcard:has-text('Validation accuracy')", timeout=60_000)
            assert page.title() == "Colour sorter"
            assert "Colour sorter" in page.inner_text(".ftui-title")
            assert "-class classifier" not in page.content()
            assert page.inner_text("#ftui-modelcard h2") == "Colour sorter"
            assert page.inner_text("#ftui-verdict").strip(), "no empty verdict box on load"
            footer = page.evaluate("() => { const f = document.querySelector('footer'); return f ? f.innerText : ''; }")
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            assert not footer.strip().startswith("·") and not footer.strip().endswith("·"), repr(footer)
            # Headings above the examples and the heat map, not clipped badges over them.
            heading = page.locator(".prose.ftui-image-title:has-text('Examples')").bounding_box()
            gallery = page.locator("#ftui-examples").bounding_box()
            assert heading["y"] + heading["height"] <= gallery["y"] + 1
            captions = page.locator("#ftui-examples .caption-label").all_inner_texts()
            assert captions and all(c[0] in "✓✗" and "true: " in c and "predicted: " in c for c in captions)
    finally:
        page_app.close()
