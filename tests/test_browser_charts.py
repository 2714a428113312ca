"""Issue 14 item 3 in real Chromium: the Train step's epoch charts at 1280 and 1920 px wide have whole-number
epoch ticks, a marker per point, a legend naming train and val, and every text (ticks, axis titles, legend)
inside the chart. The run is a real run folder with a three-epoch metrics.csv (no training needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from browser_support import BROWSER_MARKS, chromium, open_app
from ftui_app_server import running_app

from tests.run_fixtures import make_quick_run

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]

# For one chart: its x-axis tick labels, legend labels, marker count, and the texts sticking out of it.
CHART_FACTS = """(id) => {
  const block = document.querySelector(id);
  const svg = block.querySelector('svg.marks');
  const box = svg.getBoundingClientRect(), outer = block.getBoundingClientRect();
  const texts = (sel) => [...svg.querySelectorAll(sel)].map(t => t.textContent);
  const xAxis = [...svg.querySelectorAll('g.role-axis')].find(g => (g.getAttribute('aria-label') || '')
                                                                  .startsWith('X-axis'));
  const outside = [...svg.querySelectorAll('text')].filter(t => t.textContent).filter(t => {
    const r = t.getBoundingClientRect();
    return r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1
      || r.left < outer.left || r.right > outer.right || r.bottom > outer.bottom;
  }).map(t => t.textContent);
  // Gradio's label badge sits over the chart's top corner: no chart text may hide under it.
  const badge = block.querySelector('[data-testid="block-label"]').getBoundingClientRect();
  const hidden = [...svg.querySelectorAll('text')].filter(t => {
    const r = t.getBoundingClientRect();
    return r.left < badge.right && r.right > badge.left && r.top < badge.bottom && r.bottom > badge.top;
  }).map(t => t.textContent);
  return {hidden, x: [...xAxis.querySelectorAll('g.role-axis-label text')].map(t => t.textContent),
          xTitle: [...xAxis.querySelectorAll('g.role-axis-title text')].map(t => t.textContent),
          legend: texts('g.role-legend-label text'), markers: svg.querySelectorAll('g.mark-symbol.role-mark path').length,
          outside, width: box.width};
}"""


def _three_epoch_run(root: Path) -> str:
    run = make_quick_run(root)
    pd.DataFrame({"epoch": [1, 2, 3], "phase": "all", "train_loss": [1.1, 0.7, 0.5], "train_acc": [0.40, 0.62, 0.75],
                  "val_loss": [1.0, 0.8, 0.6], "val_acc": [0.45, 0.60, 0.70], "lr": 1e-3, "seconds": 1.0}
                 ).to_csv(run / "metrics.csv", index=False)
    return run.name


@pytest.mark.parametrize("width", [1280, 1920])
def test_epoch_charts_have_whole_epochs_markers_legend_and_nothing_clipped(tmp_path, width):
    run_id = _three_epoch_run(tmp_path)
    with running_app(tmp_path) as (url, _ctx), chromium() as browser:
        _context, page = open_app(browser, url, width=width, height=1000)
        # The Data step's class-balance chart: class names, axis titles and legend all inside its block.
        page.wait_for_selector("#ftui-balance svg g.role-legend-label text", timeout=60_000)
        balance = page.evaluate("""() => { const block = document.querySelector('#ftui-balance');
          const outer = block.getBoundingClientRect();
          const texts = [...block.querySelectorAll('svg text')].filter(t => t.textContent);
          return {legend: [...block.querySelectorAll('g.role-legend-label text')].map(t => t.textContent),
                  classes: texts.map(t => t.textContent),
                  outside: texts.filter(t => { const r = t.getBoundingClientRect();
                    return r.left < outer.left || r.right > outer.right || r.top < outer.top
                      || r.bottom > outer.bottom; }).map(t => t.textContent)}; }""")
        assert balance["legend"] == ["train", "val"] and balance["outside"] == [], balance
        assert {"checker", "dots", "hstripes", "vstripes", "class"} <= set(balance["classes"])
        page.get_by_role("tab", name="4 · Train").click()
        page.locator("#ftui-runs [data-testid=cell-0-0]").click()
        page.wait_for_selector(f"#ftui-train-status:has-text('{run_id}')", timeout=30_000)
        page.wait_for_function("() => document.querySelectorAll('#ftui-acc-plot g.mark-symbol.role-mark path').length >= 6",
                               timeout=30_000)
        page.locator("#ftui-acc-plot").scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / f"train-charts-{width}.png"))
        for chart in ("#ftui-acc-plot", "#ftui-loss-epoch-plot"):
            facts = page.evaluate(CHART_FACTS, chart)
            assert facts["x"] == ["1", "2", "3"], (chart, facts)  # no 1.5, no 2.218819
            assert all(re.fullmatch(r"\d+", label) for label in facts["x"])
            assert facts["xTitle"] == ["epoch"]
            assert facts["legend"] == ["train", "val"]
            assert facts["markers"] == 6  # three epochs, two series: every point visible
            assert facts["outside"] == [] and facts["hidden"] == [], (chart, facts)
            assert facts["width"] > 250
