"""Screenshots of the six steps at 1400x900 for the README: `python scripts/screenshots.py [OUT_DIR]`.

Launches the app on localhost with a fresh runs folder, trains the demo preset once (about a minute on a
laptop CPU), evaluates it and predicts one of its examples, capturing each step in headless Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from ftui_app_server import running_app
from playwright.sync_api import sync_playwright

STEPS = ["1 · Data", "2 · Augment", "3 · Model", "4 · Train", "5 · Evaluate", "6 · Predict"]


def shoot(page, step: str, out: Path) -> None:
    page.get_by_role("tab", name=step).click()
    page.wait_for_timeout(1500)
    name = step.split("·")[1].strip().lower()
    page.screenshot(path=str(out / f"{step[0]}-{name}.png"))
    print("wrote", out / f"{step[0]}-{name}.png")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, running_app(Path(tmp)) as (url, _ctx), sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_selector("#ftui-data-status:has-text('Dataset ready')", timeout=120_000)
        page.wait_for_timeout(2000)
        for step in STEPS[:3]:
            shoot(page, step, out)
        page.get_by_role("tab", name="4 · Train").click()
        page.click("#ftui-train")
        page.wait_for_function("() => document.querySelector('#ftui-train-status').innerText.toLowerCase()"
                               ".includes('finished')", timeout=600_000)
        page.wait_for_timeout(2500)
        shoot(page, "4 · Train", out)
        page.get_by_role("tab", name="5 · Evaluate").click()
        page.get_by_role("button", name="Evaluate", exact=True).click()
        page.wait_for_selector("h3:has-text('Accuracy')", timeout=120_000)
        page.wait_for_timeout(2000)
        shoot(page, "5 · Evaluate", out)
        page.get_by_role("tab", name="6 · Predict").click()
        page.wait_for_selector("#ftui-examples img", timeout=60_000)
        page.locator("#ftui-examples button.thumbnail-item").nth(1).click()
        page.wait_for_function("() => { const i = document.querySelector('#ftui-gradcam img');"
                               " return !!(i && i.complete && i.naturalWidth > 0); }", timeout=60_000)
        shoot(page, "6 · Predict", out)
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "assets" / "screens")
