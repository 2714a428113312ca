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
