"""Issue 14 item 5: a confusion-matrix cell's images, and per-class precision-recall curves from the saved
probabilities (a real run folder and real images; evaluate() runs the model)."""

from __future__ import annotations

import json

import pytest

from ftui.results.evaluate import evaluate, pr_curves
from ftui.ui import AppSettings, build_app
from ftui.ui.charts import confusion_html
from ftui.ui.results_step import cell_images, pr_chart
from tests.run_fixtures import make_quick_run


def test_pr_curve_and_average_precision_by_hand():
    # p(a) ranks: 0.9 (a), 0.6 (b), 0.4 (a), 0.1 (b): precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1.
    probs = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]]
    points, average = pr_curves(["a", "b"], ["a", "a", "b", "b"], probs)
    a = points[points["class"] == "a"]
    assert a["recall"].tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert a["precision"].round(4).tolist() == [1.0, 1.0, 0.5, 0.6667, 0.5]
    assert average["a"] == pytest.approx((1 + 2 / 3) / 2)  # scikit-learn's average_precision_score: 0.8333
    assert average["b"] == pytest.approx((1 + 2 / 3) / 2)


def test_evaluation_keeps_every_images_prediction_and_a_cell_shows_exactly_its_images(tmp_path):
    run = make_quick_run(tmp_path, per_class=6)
    result = json.loads(json.dumps(evaluate(run, split="all").to_dict()))  # as saved in evaluation.json
    assert len(result["predictions"]) == len(result["probabilities"]) == result["num_items"] == 18
    assert all(abs(sum(row) - 1) < 1e-3 for row in result["probabilities"])
    _demo, ctx = build_app(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work", data_root=tmp_path))
    cells = {"classes": result["classes"], "predictions": result["predictions"]}
    for i, row in enumerate(result["confusion"]):
        for j, count in enumerate(row):
            title, gallery = cell_images(ctx, cells, i, j, None)
            assert title.startswith(f"**{count}** images of **{result['classes'][i]}**")
            assert len(gallery) == count
    assert "data-row='1' data-col='2'" in confusion_html(result["confusion"], result["classes"])
    spec = json.loads(pr_chart(result).plot)
    assert {r["series"].split(" (AP")[0] for r in spec["data"]["values"]} == set(result["classes"])
    assert spec["encoding"]["x"]["axis"] == {"format": ".0%"}
    assert pr_chart({"classes": ["a"], "predictions": [], "probabilities": []}) is None  # an old evaluation.json


@pytest.mark.browser
@pytest.mark.slow
def test_clicking_a_confusion_cell_in_chromium_shows_its_images_and_the_pr_curves_are_drawn(tmp_path):
    browser_support = pytest.importorskip("browser_support")
    from ftui_app_server import running_app

    make_quick_run(tmp_path, per_class=6, classes=["checkerboard_pattern", "horizontal_stripes", "polka_dots"])
    with running_app(tmp_path, data_root=tmp_path) as (url, _ctx), browser_support.chromium() as browser:
        if not browser_support.CHROMIUM.exists():
            pytest.skip("needs Debian's /usr/bin/chromium")
        context, page = browser_support.open_app(browser, url, width=1400)
        page.get_by_role("tab", name="5 · Evaluate").click()
        page.get_by_role("button", name="Evaluate", exact=True).click()
        page.wait_for_selector("#ftui-confusion td[data-row='0'][data-col='0']", timeout=90_000)
        row, col, count = page.evaluate("() => [...document.querySelectorAll('#ftui-confusion td[data-row]')]"
                                        ".map(td => [+td.dataset.row, +td.dataset.col, +td.innerText])"
                                        ".find(cell => cell[2] > 0)")
        page.click(f"#ftui-confusion td[data-row='{row}'][data-col='{col}']")
        page.wait_for_selector("#ftui-cell-title:has-text('images of')", timeout=30_000)
        assert page.inner_text("#ftui-cell-title").startswith(f"{count} images of")
        page.wait_for_function("(n) => document.querySelectorAll('#ftui-cell-gallery img').length == n",
                               arg=count, timeout=30_000)
        legend = page.evaluate("() => [...document.querySelectorAll('#ftui-pr-plot g.role-legend-label text')]"
                               ".map(t => t.textContent)")
        assert len(legend) == 3 and all("(AP " in text for text in legend)
        # Long class names: every mistake caption is shown whole inside its thumbnail (no "checker → ...").
        page.wait_for_selector("#ftui-eval-gallery .caption-label", timeout=30_000)
        clipped = page.evaluate("""() => [...document.querySelectorAll('#ftui-eval-gallery .caption-label')]
          .filter(c => { const r = c.getBoundingClientRect(), t = c.closest('button').getBoundingClientRect();
                         return c.scrollWidth > c.clientWidth + 1 || r.left < t.left || r.right > t.right
                                || r.top < t.top || r.bottom > t.bottom; }).map(c => c.innerText)""")
        assert clipped == []
        tops = page.evaluate("""() => [document.querySelector('#ftui-eval-gallery [data-testid="block-label"]')
          .getBoundingClientRect().bottom, document.querySelector('#ftui-eval-gallery button.thumbnail-item')
          .getBoundingClientRect().top]""")
        assert tops[1] >= tops[0]  # the first row starts below the gallery's label badge
        assert " → " in page.inner_text("#ftui-eval-gallery .caption-label")
        page.screenshot(path=str(tmp_path / "evaluate.png"), full_page=True)
        context.close()
