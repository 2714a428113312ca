"""Real-browser test of the fix loop: the doctor flags a leaked copy, relabel / undo / remove it from the
doctor's gallery, retrain on the fixed data by clicking Train, remove a mistake from Evaluate's gallery, and the
compare view shows the images that flipped between the run before the fix and the retrained one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from browser_support import BROWSER_MARKS, chromium, open_app, playwright_api
from conftest import CLASS_COLOURS, make_class_folder, write_class_image
from ftui_app_server import running_app

from ftui.config import AugConfig, TrainConfig
from ftui.jobs import Job
from ftui.runs import RunStore

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]


def _dataset(root: Path) -> Path:
    make_class_folder(root / "train", per_class=8)
    for ci, name in enumerate(CLASS_COLOURS):
        for i in range(3):
            write_class_image(root / "val" / name / f"v{i}.png", CLASS_COLOURS[name], seed=70_000 + ci * 10 + i)
    # A leak: a training image copied into val. The doctor must flag it (exact duplicate across splits).
    shutil.copy(root / "train" / "red" / "red_0.jpg", root / "val" / "red" / "leak.jpg")
    return root


def _train(data: Path, runs: Path, epochs: int, lr: float) -> str:
    config = TrainConfig(data=str(data), backbone="resnet18", weights="none", image_size=32, epochs=epochs,
                         batch_size=4, lr=lr, device="cpu", aug=AugConfig.none(), train_groups="all",
                         recipe="plain")
    job = Job(config, RunStore(runs))
    job.run()
    assert job.status == "done", job.error
    return Path(job.run_dir).name


def _pick(page, box: str, value: str) -> None:
    """Choose `value` in a Gradio dropdown (typing works for dropdowns allowing custom values too)."""
    page.click(f"{box} input")
    page.fill(f"{box} input", value)
    option = page.get_by_role("option", name=value, exact=True).first
    try:
        option.click(timeout=5_000)
    except playwright_api.TimeoutError:  # a run newer than the list: typed in as a custom value
        page.press(f"{box} input", "Enter")
        page.wait_for_timeout(500)


def _fix(page, prefix: str, button: str, expect: str) -> None:
    page.click(f"#{prefix}-{button}")
    page.wait_for_selector(f"#{prefix}-status:has-text('{expect}')", timeout=60_000)


def test_fix_loop_in_the_browser(tmp_path):
    """The fix loop on the operator's folder in place: the operator allowed it (--allow-data-root-edits);
    without the flag a client's fix goes to a per-session copy (tests/test_redteam2.py)."""
    data = _dataset(tmp_path / "data" / "colours")
    with running_app(tmp_path / "app", data_root=tmp_path / "data",
                     allow_data_root_edits=True) as (url, ctx), chromium() as browser:
        runs = ctx.settings.runs_dir
        # Run A, before the fix: barely trained (mostly wrong). Run B is retrained in the browser after it.
        run_a = _train(data, runs, 1, 1e-5)
        _context, page = open_app(browser, url, width=2400, height=1100)
        # The source tabs' column is narrow: Gradio folds the last tab into its "More tabs" menu.
        page.click("#ftui-data-sources button[aria-label='More tabs']")
        page.locator("#ftui-data-sources button:not([tabindex])", has_text="Folder on this server").last.click()
        page.get_by_label("Folder, .zip or .csv on the server").fill(str(data))
        page.get_by_label("Folder, .zip or .csv on the server").press("Enter")
        page.wait_for_selector("#ftui-data-status:has-text('10 val')", timeout=60_000)

        # The doctor flags the leaked copy; relabel it from the gallery, undo, then remove it.
        page.get_by_text("Dataset doctor: look for problems before training").click()
        page.click("#ftui-doctor-check")
        page.wait_for_selector("#ftui-doctor-card:has-text('Duplicates')", timeout=120_000)
        leak = data / "val" / "red" / "leak.jpg"
        thumbs = page.locator("#ftui-doctor-gallery button.thumbnail-item")
        thumbs.first.wait_for(timeout=30_000)
        for k in range(thumbs.count()):  # the leak and its source; pick the val copy
            thumbs.nth(k).click()
            page.wait_for_function("() => document.querySelector('#ftui-doctor-fix-selected textarea, "
                                   "#ftui-doctor-fix-selected input').value !== ''", timeout=30_000)
            if "leak" in page.input_value("#ftui-doctor-fix-selected textarea, #ftui-doctor-fix-selected input"):
                break
        _pick(page, "#ftui-doctor-fix-target", "green")
        _fix(page, "ftui-doctor-fix", "relabel", "relabel: 1 file moved")
        assert (data / "val" / "green" / "leak.jpg").is_file() and not leak.exists()
        _fix(page, "ftui-doctor-fix", "undo", "undo: 1 file moved")
        assert leak.is_file()
        page.click("#ftui-doctor-check")  # fresh findings after the undo
        page.wait_for_timeout(1500)
        page.wait_for_selector("#ftui-doctor-card:has-text('Duplicates')", timeout=120_000)
        for k in range(thumbs.count()):
            thumbs.nth(k).click()
            page.wait_for_timeout(500)
            if "leak" in page.input_value("#ftui-doctor-fix-selected textarea, #ftui-doctor-fix-selected input"):
                break
        _fix(page, "ftui-doctor-fix", "remove", "remove: 1 file moved")
        assert (data / "_removed" / "val" / "red" / "leak.jpg").is_file() and not leak.exists()
        # The Data step reloaded: one val image fewer.
        page.wait_for_selector("#ftui-data-status:has-text('9 val')", timeout=30_000)

        # Retrain on the fixed data from the Train step (small and short: 32 px, batch 4, 6 epochs).
        page.get_by_role("tab", name="3 · Model").click()
        page.fill("#ftui-image-size input[type=number]", "32")
        page.press("#ftui-image-size input[type=number]", "Tab")
        page.get_by_role("tab", name="4 · Train").click()
        for box, value in (("#ftui-epochs", "6"), ("#ftui-batch", "4")):
            page.fill(f"{box} input", value)
            page.press(f"{box} input", "Tab")
        page.click("#ftui-train")
        page.wait_for_selector("#ftui-train-status:has-text('Finished')", timeout=300_000)
        run_b = next(r for r in ctx.store.list_runs()["id"] if r != run_a)
        retrained = json.loads((runs / run_b / "config.json").read_text())
        assert (retrained["data"], retrained["image_size"], retrained["epochs"]) == (str(data), 32, 6)
        assert not (data / "val" / "red" / "leak.jpg").exists()  # trained without the removed copy

        # Evaluate run A, remove its first misclassified image from the gallery.
        page.get_by_role("tab", name="5 · Evaluate").click()
        _pick(page, "#ftui-eval-run", run_a)
        page.get_by_role("button", name="Evaluate", exact=True).click()
        mistakes = page.locator("#ftui-eval-gallery button.thumbnail-item")
        mistakes.first.wait_for(timeout=120_000)
        mistakes.first.click()
        page.wait_for_function("() => document.querySelector('#ftui-eval-fix-selected textarea, "
                               "#ftui-eval-fix-selected input').value !== ''", timeout=30_000)
        chosen = page.input_value("#ftui-eval-fix-selected textarea, #ftui-eval-fix-selected input")
        _fix(page, "ftui-eval-fix", "remove", "remove: 1 file moved")
        assert (data / "_removed" / chosen).is_file() and not (data / chosen).exists()
        _fix(page, "ftui-eval-fix", "undo", "undo: 1 file moved")
        assert (data / chosen).is_file()

        # Compare A (before) and B (after): flipped images are shown.
        page.get_by_text("Compare two runs").click()
        _pick(page, "#ftui-compare-a", run_a)
        _pick(page, "#ftui-compare-b", run_b)
        page.click("#ftui-compare")
        page.wait_for_selector("#ftui-compare-summary:has-text('accuracy')", timeout=120_000)
        flipped = page.locator("#ftui-compare-fixed button.thumbnail-item, #ftui-compare-broke button.thumbnail-item")
        flipped.first.wait_for(timeout=30_000)
        assert flipped.count() >= 1
        assert "fixed (wrong->right)" in page.inner_text("#ftui-compare-summary")

        # Merge two classes from Evaluate's panel (the boxes list the dataset's classes), then undo it.
        page.get_by_role("tab", name="5 · Evaluate").click()
        _pick(page, "#ftui-eval-fix-merge-from", "blue")
        _pick(page, "#ftui-eval-fix-merge-into", "green")
        _fix(page, "ftui-eval-fix", "merge", "merge: 11 files moved")
        assert not (data / "train" / "blue").exists() and not (data / "val" / "blue").exists()
        assert (data / "train" / "green" / "blue_0.jpg").is_file() and (data / "val" / "green" / "v0_1.png").is_file()
        _fix(page, "ftui-eval-fix", "undo", "undo: 11 files moved")
        assert (data / "train" / "blue" / "blue_0.jpg").is_file() and (data / "val" / "blue" / "v0.png").is_file()
