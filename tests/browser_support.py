"""What every real-browser test shares: Playwright (the module skips without it), Debian's Chromium, the
markers, launching the browser and opening the app.

    from browser_support import BROWSER_MARKS, chromium, open_app, playwright_api
    pytestmark = [*BROWSER_MARKS, pytest.mark.slow]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")

# Playwright cannot download its own browsers here: the tests drive Debian's Chromium.
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"),
]
# No sandbox (containers), and nothing in the background that could reach the network or cost CPU.
ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run")
# A fake camera that needs no permission prompt: Chromium's test pattern stands in for a webcam.
FAKE_CAMERA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
READY = "#ftui-data-status:has-text('Dataset ready')"


def fake_camera_file(image, path: Path, frames: int = 10) -> Path:
    """`image` (PIL) as a Y4M video (YUV 4:2:0, full range) for --use-file-for-fake-video-capture: the fake
    webcam then shows this picture instead of Chromium's test pattern."""
    w, h = (image.width // 2) * 2, (image.height // 2) * 2
    y, cb, cr = image.convert("RGB").resize((w, h)).convert("YCbCr").split()
    half = (w // 2, h // 2)
    planes = y.tobytes() + cb.resize(half).tobytes() + cr.resize(half).tobytes()
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        f.writelines(b"FRAME\n" + planes for _ in range(frames))
    return path


def camera_showing(path: Path) -> tuple[str, ...]:
    """Chromium flags for a fake webcam that plays `path` (a .y4m from fake_camera_file)."""
    return (*FAKE_CAMERA, f"--use-file-for-fake-video-capture={path}")


@contextmanager
def chromium(*extra_args: str) -> Iterator:
    """Headless Chromium (ARGS plus `extra_args`), closed afterwards."""
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[*ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()


def open_app(browser, url: str, width: int = 1366, height: int = 900, **context_options):
    """(context, page): a fresh browser context (own localStorage, i.e. another person) with the app loaded."""
    context = browser.new_context(viewport={"width": width, "height": height}, **context_options)
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector(READY, timeout=60_000)
    return context, page


def wait_status(page, word: str, timeout: float = 90_000) -> None:
    """Until the Train step's status card contains `word` (lower case)."""
    page.wait_for_function("(w) => document.querySelector('#ftui-train-status').innerText.toLowerCase()"
                           ".includes(w)", arg=word, timeout=timeout)
