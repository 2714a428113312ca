"""Issue 14 item 5: Evaluate says how many of the misclassified images it shows ("24 of 30")."""

from __future__ import annotations

from conftest import make_class_folder

from ftui.ui.context import AppContext, AppSettings
from ftui.ui.results_step import MISTAKES_SHOWN, evaluation_outputs


def test_summary_counts_the_mistakes_shown_of_all(tmp_path):
    data = make_class_folder(tmp_path / "colours", per_class=10)
    ctx = AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work", data_root=data))
    paths = sorted(str(p) for p in data.rglob("*.jpg"))[:30]
    result = {"split": "val", "accuracy": 0.5, "num_items": 60, "classes": ["blue", "green", "red"],
              "confusion": [[10, 5, 5], [5, 10, 5], [5, 5, 10]],
              "per_class": [{"class": c, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 20}
                            for c in ("blue", "green", "red")],
              "mistakes": [{"path": p, "true": "red", "predicted": "blue", "confidence": 0.5, "loss": 1.0}
                           for p in paths]}
    summary, _, _, gallery = evaluation_outputs(ctx, result)
    assert len(gallery) == MISTAKES_SHOWN == 24
    assert "30 misclassified (24 of 30 shown below, worst first)" in summary
