"""A multilabel CSV through the app in real Chromium: upload the CSV with its images, the task shown on the
Data step, train (the live metric plot names mAP), the Evaluate step's multilabel views, and Predict showing
the label set with every label's probability and threshold. Screenshots go to the test's tmp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser_support import BROWSER_MARKS, chromium, open_app, wait_status
from ftui_app_server import running_app
from task_builders import make_multilabel_csv

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]  # trains a small model in the app (about a minute)
SHOTS = os.environ.get("FTUI_SHOTS")  # a folder to keep the screenshots in (to look at them)


def shot(page, tmp_path: Path, name: str) -> None:
    folder = Path(SHOTS) if SHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"tasks-{name}.png"), full_page=False)


def test_multilabel_csv_uploads_trains_evaluates_and_predicts_label_sets(tmp_path):
    csv = make_multilabel_csv(tmp_path / "tags", n=48)
    files = [str(csv), *sorted(str(p) for p in (tmp_path / "tags" / "images").iterdir())]
    with running_app(tmp_path / "app") as (url, ctx), chromium() as browser:
        context, page = open_app(browser, url, width=1400)
        try:
            page.get_by_role("tab", name="Upload .zip / CSV").click()
            page.set_input_files("#ftui-data-files input[type=file]", files)
            page.get_by_role("button", name="Load the uploaded files").click()
            page.wait_for_selector("#ftui-data-status:has-text('3 labels')", timeout=60_000)
            status = page.inner_text("#ftui-data-status")
            assert "Task: multilabel" in status
            gallery = page.inner_text("#ftui-data-gallery")
            assert "green;red" in gallery or "blue;green" in gallery  # thumbnails captioned with label sets
            shot(page, tmp_path, "data")

            page.get_by_role("tab", name="3 · Model").click()
            size = page.locator("#ftui-image-size input[type=number]")
            size.fill("64")
            size.press("Enter")
            page.get_by_role("tab", name="4 · Train").click()
            page.fill("#ftui-epochs input", "3")
            page.press("#ftui-epochs input", "Tab")
            page.click("#ftui-train")
            wait_status(page, "finished", timeout=240_000)
            assert "best val map" in page.inner_text("#ftui-train-status").lower()
            # The live metric plot names the task's metric on its axis, not accuracy.
            page.wait_for_function("() => [...document.querySelectorAll('#ftui-acc-plot text')]"
                                   ".some(t => t.textContent.trim() === 'mAP')", timeout=30_000)
            axis = page.evaluate("() => [...document.querySelectorAll('#ftui-acc-plot text')].map(t => t.textContent)")
            assert "accuracy" not in axis
            shot(page, tmp_path, "train")
            run_id = ctx.store.list_runs()["id"].iloc[0]

            page.get_by_role("tab", name="5 · Evaluate").click()
            page.wait_for_selector("#ftui-eval-summary:has-text('mAP')", timeout=120_000)
            summary = page.inner_text("#ftui-eval-summary")
            assert "95% interval" in summary and "exact match" in summary
            table = page.inner_text("#ftui-eval-table")
            for name in ("red", "green", "blue"):
                assert name in table  # the per-label table
            page.wait_for_selector("#ftui-pr-plot svg", timeout=30_000)  # per-label precision-recall curves
            shot(page, tmp_path, "evaluate")

            page.get_by_role("tab", name="6 · Predict").click()
            assert page.input_value("#ftui-predict-run input") == run_id
            page.wait_for_selector("#ftui-examples .caption-label", timeout=60_000)
            captions = page.locator("#ftui-examples .caption-label").all_inner_texts()
            assert captions and all("true: " in c and "predicted: " in c for c in captions)
            page.locator("#ftui-examples button.thumbnail-item").first.click()
            page.wait_for_selector("#ftui-verdict:has-text('threshold')", timeout=60_000)
            verdict = page.inner_text("#ftui-verdict")
            assert "True labels: " in verdict and "Labels: " in verdict
            for name in ("red", "green", "blue"):  # every label's probability, with its threshold
                assert name in verdict and name in page.inner_text("#ftui-label")
            page.wait_for_function("() => { const i = document.querySelector('#ftui-gradcam img');"
                                   " return !!(i && i.complete && i.naturalWidth > 0); }", timeout=60_000)
            shot(page, tmp_path, "predict")
        finally:
            context.close()
