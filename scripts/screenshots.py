"""Screenshots of the six steps and the demo page at 1400x900 for the README:
`python scripts/screenshots.py [OUT_DIR]`.

Launches the app on localhost with a fresh runs folder, trains the demo preset once (about a minute on a
laptop CPU), runs the dataset doctor, opens Evaluate (evaluated on its own) and predicts one of the run's
examples, then serves that run as a named demo page (`app.py --demo RUN --title ...`), capturing each in
headless Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from ftui_app_server import free_port, running_app
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
        page.get_by_text("Dataset doctor: look for problems before training").click()
        page.click("#ftui-doctor-check")
        page.wait_for_selector("#ftui-doctor-card:has-text('Duplicates')", timeout=300_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "1-doctor.png"), full_page=True)
        print("wrote", out / "1-doctor.png")
        page.get_by_text("Dataset doctor: look for problems before training").click()  # closed again
        for step in STEPS[:3]:
            shoot(page, step, out)
        page.get_by_role("tab", name="4 · Train").click()
        # The demo preset as a new user gets it (about 40 s on an idle 2-core CPU): the pictures show its real
        # accuracy, not a shortened run's.
        page.click("#ftui-train")
        page.wait_for_function("() => document.querySelector('#ftui-train-status').innerText.toLowerCase()"
                               ".includes('finished')", timeout=600_000)
        page.wait_for_timeout(2500)
        shoot(page, "4 · Train", out)
        page.get_by_role("tab", name="5 · Evaluate").click()
        page.wait_for_selector("#ftui-eval-summary h3:has-text('Accuracy')", timeout=120_000)
        page.wait_for_timeout(2000)
        shoot(page, "5 · Evaluate", out)
        page.get_by_role("tab", name="6 · Predict").click()
        page.wait_for_selector("#ftui-examples img", timeout=60_000)
        page.locator("#ftui-examples button.thumbnail-item").nth(1).click()
        page.wait_for_function("() => { const i = document.querySelector('#ftui-gradcam img');"
                               " return !!(i && i.complete && i.naturalWidth > 0); }", timeout=60_000)
        shoot(page, "6 · Predict", out)
        run_dir = _ctx.store.folder(_ctx.settings.runs_dir / _ctx.store.list_runs()["id"].iloc[0]).path
        shoot_demo(browser, run_dir, Path(tmp), out)
        browser.close()


def shoot_demo(browser, run_dir: Path, tmp: Path, out: Path) -> None:
    """The locked demo page of the run, named and described as its owner would."""
    from ftui.results.modelcard import write_card_text
    from ftui.ui.demo_page import build_demo_page
    from ftui.ui.layout import demo_launch_options

    write_card_text(run_dir, "Texture spotter", "Tells stripes, checkerboards and dots apart in 96 px swatches.")
    app, ctx = build_demo_page(run_dir, tmp / "demo-work")
    app.queue(default_concurrency_limit=1)
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                           quiet=True, **demo_launch_options(ctx.settings))
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_selector("#ftui-modelcard:has-text('Validation accuracy')", timeout=60_000)
        page.locator("#ftui-examples button.thumbnail-item").nth(1).click()
        page.wait_for_function("() => { const i = document.querySelector('#ftui-gradcam img');"
                               " return !!(i && i.complete && i.naturalWidth > 0); }", timeout=60_000)
        page.screenshot(path=str(out / "7-demo.png"))
        print("wrote", out / "7-demo.png")
    finally:
        app.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "assets" / "screens")
