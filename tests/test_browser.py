"""Real-browser tests: headless Chromium (Playwright) drives the app like a person would.

Covers the folder picker (class subfolders must survive the upload), live training curves, Stop, Predict,
two browsers sharing one server, and prints the time from clicking Train to the first plotted point and
to a finished demo run (the app's from-scratch defaults) on the built-in demo dataset.
"""

from __future__ import annotations

import re
import time

import pytest
from browser_support import BROWSER_MARKS, chromium, open_app, wait_status
from conftest import make_class_folder
from ftui_app_server import running_app

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]  # each test trains in the app (20-150 s)
# Points drawn in the training-loss line (vega renders SVG paths "M x,y L x,y ...").
LOSS_POINTS = """() => {
  const path = document.querySelector('#ftui-loss-plot g.mark-line path');
  const d = path ? (path.getAttribute('d') || '') : '';
  return d ? (d.match(/[ML]/g) || []).length : 0;
}"""
ACC_POINTS = LOSS_POINTS.replace("ftui-loss-plot", "ftui-acc-plot")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("browser")) as (url, ctx):
        yield url, ctx


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def status_text(page) -> str:
    return page.inner_text("#ftui-train-status").lower()


def start_long_training(page, epochs: int = 200) -> None:
    page.get_by_role("tab", name="4 · Train").click()
    page.fill("#ftui-epochs input", str(epochs))
    page.press("#ftui-epochs input", "Tab")
    page.click("#ftui-train")


def test_folder_upload_keeps_class_folders_then_train_stop_and_predict(app, browser, tmp_path):
    url, _ctx = app
    folder = make_class_folder(tmp_path / "my_photos", per_class=8, size=40)
    context, page = open_app(browser, url)
    try:
        page.get_by_role("tab", name="Upload a folder").click()
        page.set_input_files("#ftui-folder-picker input[type=file]", str(folder))
        page.wait_for_selector("#ftui-data-status:has-text('3 classes')", timeout=60_000)
        table = page.inner_text("#ftui-data-table")
        for name in ("blue", "green", "red"):
            assert name in table
        # All 24 images arrived under their classes (the picked folder's name is not a class).
        train, val = map(int, re.search(r"(\d+) train · (\d+) val", page.inner_text("#ftui-data-status")).groups())
        assert train + val == 24
        # Your own data gets the backbone's native resolution (the demo's small one is for the demo only).
        page.get_by_role("tab", name="3 · Model").click()
        page.wait_for_function("() => document.querySelector('#ftui-image-size input[type=number]').value == '224'",
                               timeout=30_000)

        start_long_training(page)
        wait_status(page, "training")
        page.wait_for_function(f"({LOSS_POINTS})() >= 3", timeout=60_000)
        page.wait_for_function(f"({ACC_POINTS})() >= 1", timeout=60_000)  # an epoch saved a checkpoint
        page.click("#ftui-stop")
        wait_status(page, "stopped")

        page.get_by_role("tab", name="6 · Predict").click()
        page.set_input_files("#ftui-predict-files input[type=file]", str(folder / "red" / "red_0.jpg"))
        page.wait_for_timeout(500)
        page.click("#ftui-predict")
        page.wait_for_function("() => /red|green|blue/.test(document.querySelector('#ftui-label').innerText)",
                               timeout=60_000)
    finally:
        context.close()


def test_second_browser_sees_the_running_job_but_cannot_stop_or_replace_it(app, browser):
    url, ctx = app
    first_context, first = open_app(browser, url)
    second_context, second = open_app(browser, url)
    try:
        start_long_training(first)
        wait_status(first, "training")
        running = ctx.jobs.active()

        second.reload()
        second.get_by_role("tab", name="4 · Train").click()
        wait_status(second, "another browser")
        assert second.is_disabled("#ftui-stop")
        second.click("#ftui-train")
        wait_status(second, "queued")

        assert ctx.jobs.active() is running and running.status == "running"
        assert "another browser" not in status_text(first)
        assert first.is_enabled("#ftui-stop")

        second.click("#ftui-stop")  # stops only its own queued job
        first.click("#ftui-stop")
        wait_status(first, "stopped")
        assert all(job.wait(30) for job in ctx.jobs.jobs())
        assert [job.status for job in ctx.jobs.jobs()][-2:] == ["stopped", "stopped"]
    finally:
        first_context.close()
        second_context.close()


def test_demo_dataset_learns_from_one_click_and_a_past_run_opens_from_the_runs_table(app, browser):
    url, ctx = app
    context, page = open_app(browser, url)
    try:
        page.get_by_role("tab", name="4 · Train").click()
        assert page.input_value("#ftui-epochs input") == str(ctx.settings.demo_epochs)
        assert "from scratch" in page.inner_text("#ftui-preset-hint")
        clicked = time.monotonic()
        page.click("#ftui-train")
        page.wait_for_function(f"({LOSS_POINTS})() >= 1", timeout=120_000)
        first_point = time.monotonic() - clicked
        wait_status(page, "finished", timeout=180_000)
        finished = time.monotonic() - clicked
        best = float(re.search(r"best val accuracy ([\d.]+)%", page.inner_text("#ftui-train-status")).group(1))
        print(f"\n[ftui timing] demo dataset, defaults ({ctx.settings.demo_backbone} from random init, "
              f"{ctx.settings.demo_epochs} epochs): Train click -> first plotted loss point {first_point:.1f} s; "
              f"-> finished run {finished:.1f} s; best val accuracy {best:.1f}%")
        assert "4 classes" in page.inner_text("#ftui-data-status")  # the built-in demo was preselected
        assert best >= 60.0  # chance is 25%; the default recipe must actually learn

        # Clicking a past run shows its curves and opens it in Predict.
        page.reload()
        page.wait_for_selector("#ftui-data-status:has-text('Dataset ready')", timeout=60_000)
        page.get_by_role("tab", name="4 · Train").click()
        wait_status(page, "finished")  # the page's first poll has drawn the latest job
        run_id = ctx.store.list_runs()["id"].iloc[0]
        page.locator("#ftui-runs [data-testid=cell-0-0]").click()
        wait_status(page, f"showing run {run_id}".lower())
        page.wait_for_function(f"({ACC_POINTS})() >= {ctx.settings.demo_epochs}", timeout=30_000)
        page.get_by_role("tab", name="6 · Predict").click()
        assert page.input_value("#ftui-predict-run input") == run_id
    finally:
        context.close()
