"""Issue 23 item 2 in real Chromium: after a server restart the browser's work comes back. Its owner token
(encrypted in localStorage) is still readable, so the form returns with its uploaded dataset and settings,
Predict's examples are there, and "Use this run's data and settings" refills the form from a past run."""

from __future__ import annotations

import pytest
from browser_support import BROWSER_MARKS, chromium, wait_status
from conftest import make_class_folder
from ftui_app_server import free_port, running_app

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]
READY = "#ftui-data-status:has-text('Dataset ready')"


def _open(page, url, expect: str = "Dataset ready"):
    page.goto(url)
    page.wait_for_selector(f"#ftui-data-status:has-text('{expect}')", timeout=90_000)


def test_a_restart_keeps_the_form_the_examples_and_reuses_a_runs_settings(tmp_path):
    folder = make_class_folder(tmp_path / "photos", per_class=8, size=40)
    port = free_port()
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        with running_app(tmp_path / "app", port=port) as (url, ctx):
            _open(page, url)
            page.get_by_role("tab", name="Upload a folder").click()
            page.set_input_files("#ftui-folder-picker input[type=file]", str(folder))
            page.wait_for_selector("#ftui-data-status:has-text('3 classes')", timeout=60_000)
            page.get_by_role("tab", name="3 · Model").click()
            size_box = "#ftui-image-size input[type=number]"
            page.wait_for_function(f"() => document.querySelector('{size_box}').value == '224'", timeout=30_000)
            page.fill(size_box, "32")
            page.press(size_box, "Tab")
            page.get_by_role("tab", name="4 · Train").click()
            page.fill("#ftui-epochs input", "2")
            page.press("#ftui-epochs input", "Tab")
            page.click("#ftui-train")
            wait_status(page, "finished", timeout=300_000)
            run_id = ctx.store.list_runs()["id"].iloc[0]
        # The same address after a restart, the same browser (its localStorage).
        with running_app(tmp_path / "app", port=port) as (url, ctx):
            _open(page, url, expect="3 classes")  # its own upload, not the demo
            page.get_by_role("tab", name="4 · Train").click()
            page.wait_for_function("() => document.querySelector('#ftui-epochs input').value == '2'",
                                   timeout=30_000)
            page.get_by_role("tab", name="6 · Predict").click()
            assert page.input_value("#ftui-predict-run input") == run_id
            page.wait_for_selector("#ftui-examples .caption-label", timeout=60_000)
            assert page.locator("#ftui-examples button.thumbnail-item").count() >= 3
            # Change the form, then take the run's settings back from the runs table.
            page.get_by_role("tab", name="4 · Train").click()
            page.fill("#ftui-epochs input", "9")
            page.press("#ftui-epochs input", "Tab")
            page.locator("#ftui-runs [data-testid=cell-0-0]").click()
            wait_status(page, f"showing run {run_id}".lower())
            page.click("#ftui-use-run")
            page.wait_for_selector("#ftui-use-run-note:has-text('The form now holds')", timeout=30_000)
            page.wait_for_function("() => document.querySelector('#ftui-epochs input').value == '2'",
                                   timeout=30_000)
        context.close()
