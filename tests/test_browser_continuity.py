"""Issue 14 item 1 in real Chromium: a reload keeps the starter's Stop (the owner token lives, encrypted, in
the browser's localStorage) and a second browser still cannot stop the job."""

from __future__ import annotations

from pathlib import Path

import pytest
from ftui_app_server import running_app

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"),
]


def _open(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#ftui-data-status:has-text('Dataset ready')", timeout=60_000)
    page.get_by_role("tab", name="4 · Train").click()
    return context, page


def _wait_status(page, word: str) -> None:
    page.wait_for_function("(w) => document.querySelector('#ftui-train-status').innerText.toLowerCase()"
                           ".includes(w)", arg=word, timeout=90_000)


def test_reload_keeps_stop_for_the_starter_and_a_second_browser_cannot_stop(tmp_path):
    with running_app(tmp_path) as (url, ctx), playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        first_context, first = _open(browser, url)
        first.fill("#ftui-epochs input", "137")
        first.press("#ftui-epochs input", "Tab")
        first.click("#ftui-train")
        _wait_status(first, "epoch")  # a running job's status names its epoch ("No training yet" has none)
        assert ctx.jobs.active() is not None

        first.reload()
        first.wait_for_selector("#ftui-data-status:has-text('Dataset ready')", timeout=60_000)
        first.get_by_role("tab", name="4 · Train").click()
        _wait_status(first, "epoch")
        first.locator("#ftui-stop:enabled").wait_for(timeout=90_000)
        assert "another browser" not in first.inner_text("#ftui-train-status")
        stored = first.evaluate("() => localStorage.getItem('ftui-owner') || ''")
        assert ctx.owners[ctx.jobs.active().id] not in first.inner_text("body")  # the token is never shown

        second_context, second = _open(browser, url)
        _wait_status(second, "another browser")
        assert second.is_disabled("#ftui-stop")
        first.click("#ftui-stop")
        _wait_status(first, "stopped")
        assert stored and ctx.owners[ctx.jobs.jobs()[0].id] not in stored  # kept, but not in plain text
        second_context.close()
        first_context.close()
        browser.close()
