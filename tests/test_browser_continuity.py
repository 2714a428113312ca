"""Issue 14 item 1 in real Chromium: a reload keeps the starter's Stop (the owner token lives, encrypted, in
the browser's localStorage) and a second browser still cannot stop the job."""

from __future__ import annotations

import pytest
from browser_support import BROWSER_MARKS, chromium, open_app, wait_status
from ftui_app_server import running_app

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]


def _open(browser, url):
    context, page = open_app(browser, url, width=1400)
    page.get_by_role("tab", name="4 · Train").click()
    return context, page


def test_reload_keeps_stop_for_the_starter_and_a_second_browser_cannot_stop(tmp_path):
    with running_app(tmp_path) as (url, ctx), chromium() as browser:
        first_context, first = _open(browser, url)
        first.fill("#ftui-epochs input", "137")
        first.press("#ftui-epochs input", "Tab")
        first.click("#ftui-train")
        wait_status(first, "epoch")  # a running job's status names its epoch ("No training yet" has none)
        assert ctx.jobs.active() is not None

        first.reload()
        first.wait_for_selector("#ftui-data-status:has-text('Dataset ready')", timeout=60_000)
        first.get_by_role("tab", name="4 · Train").click()
        wait_status(first, "epoch")
        first.locator("#ftui-stop:enabled").wait_for(timeout=90_000)
        assert "another browser" not in first.inner_text("#ftui-train-status")
        stored = first.evaluate("() => localStorage.getItem('ftui-owner') || ''")
        assert ctx.owners[ctx.jobs.active().id] not in first.inner_text("body")  # the token is never shown

        second_context, second = _open(browser, url)
        wait_status(second, "another browser")
        assert second.is_disabled("#ftui-stop")
        first.click("#ftui-stop")
        wait_status(first, "stopped")
        assert stored and ctx.owners[ctx.jobs.jobs()[0].id] not in stored  # kept, but not in plain text
        second_context.close()
        first_context.close()


def test_a_second_tab_gets_the_running_jobs_form_and_dataset_another_browser_does_not(tmp_path):
    """Item 1: the form (dataset, resolution, augmentations, hyperparameters) comes back from this browser's
    running job in a second tab of the same browser (same localStorage); another browser keeps the defaults."""
    from conftest import make_class_folder

    folder = make_class_folder(tmp_path / "photos", per_class=8, size=40)
    with running_app(tmp_path / "app") as (url, ctx), chromium() as browser:
        mine, first = _open(browser, url)
        first.get_by_role("tab", name="1 · Data").click()
        first.get_by_role("tab", name="Upload a folder").click()
        first.set_input_files("#ftui-folder-picker input[type=file]", str(folder))
        first.wait_for_selector("#ftui-data-status:has-text('3 classes')", timeout=60_000)
        first.get_by_role("tab", name="2 · Augment").click()
        first.get_by_label("Vertical flip").check()
        first.get_by_role("tab", name="3 · Model").click()
        size_box = "#ftui-image-size input[type=number]"
        first.wait_for_function(f"() => document.querySelector('{size_box}').value == '224'", timeout=30_000)
        first.fill(size_box, "64")
        first.press(size_box, "Tab")
        first.get_by_role("tab", name="4 · Train").click()
        for box, value in (("#ftui-epochs input", "137"), ("#ftui-lr input", "0.0123")):
            first.fill(box, value)
            first.press(box, "Tab")
        first.click("#ftui-train")
        wait_status(first, "epoch")
        config = ctx.jobs.active().config
        assert (config.epochs, config.lr, config.image_size, config.aug.vflip) == (137, 0.0123, 64, True)

        second = mine.new_page()  # a second tab: same browser, same localStorage
        second.goto(url)
        second.wait_for_selector("#ftui-data-status:has-text('3 classes')", timeout=60_000)
        second.get_by_role("tab", name="4 · Train").click()
        second.wait_for_function("() => document.querySelector('#ftui-epochs input').value == '137'",
                                 timeout=30_000)
        assert second.input_value("#ftui-lr input") == "0.0123"
        second.get_by_role("tab", name="3 · Model").click()
        second.wait_for_timeout(2000)  # the backbone/dataset change handlers have run by now
        assert second.input_value(size_box) == "64"
        second.get_by_role("tab", name="2 · Augment").click()
        assert second.get_by_label("Vertical flip").is_checked()

        other_context, other = _open(browser, url)  # another browser: its own defaults and the demo
        assert "4 classes" in other.inner_text("#ftui-data-status")
        assert other.input_value("#ftui-epochs input") == str(ctx.settings.demo_epochs)
        ctx.jobs.stop_all()
        other_context.close()
        mine.close()
