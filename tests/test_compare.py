"""Comparing two really trained runs: accuracies, per-class deltas and flips agree with `evaluate`."""

from __future__ import annotations

import json

import pytest

from ftui.config import AugConfig, TrainConfig
from ftui.jobs import Job
from ftui.results.compare import RIGHT_TO_WRONG, WRONG_TO_RIGHT, compare_runs
from ftui.results.evaluate import evaluate
from ftui.runs import RunStore
from tests.conftest import make_class_folder


def _train(data, runs, epochs: int, seed: int):
    config = TrainConfig(data=str(data), backbone="resnet18", weights="none", image_size=32, epochs=epochs,
                         batch_size=4, lr=3e-3, device="cpu", aug=AugConfig.none(), train_groups="all",
                         recipe="plain", seed=seed)
    job = Job(config, RunStore(runs))
    job.run()
    assert job.status == "done", job.error
    return job.run_dir


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data = make_class_folder(root / "colours", per_class=8)
    # A barely trained run and a longer one: their val answers differ on some images.
    return data, _train(data, root / "runs", 1, 0), _train(data, root / "runs", 4, 0)


@pytest.mark.slow
def test_comparison_matches_two_evaluations(two_runs):
    data, run_a, run_b = two_runs
    result = compare_runs(run_a, run_b)
    eval_a, eval_b = evaluate(run_a, dataset=str(data)), evaluate(run_b, dataset=str(data))
    assert result.accuracy_a == pytest.approx(eval_a.accuracy) and result.accuracy_b == pytest.approx(eval_b.accuracy)
    wrong_a, wrong_b = set(eval_a.mistakes["path"]), set(eval_b.mistakes["path"])
    flips = result.flipped.set_index("path")["change"].to_dict()
    assert flips == {**{p: RIGHT_TO_WRONG for p in wrong_b - wrong_a}, **{p: WRONG_TO_RIGHT for p in wrong_a - wrong_b}}
    recall_b = eval_b.per_class.set_index("class")["recall"]
    for row in result.per_class.itertuples():
        assert row.recall_b == pytest.approx(recall_b[row._1], abs=1e-4)
        assert row.delta == pytest.approx(row.recall_b - row.recall_a, abs=2e-4)
    assert set(result.curves["run"]) == {"A", "B"} and "val_acc" in set(result.curves["metric"])
    assert result.curves.query("run == 'A'")["epoch"].max() == 1


def test_cli_compare_prints_json(tmp_path, capsys):
    """The CLI's output shape needs no learning: two real random-init checkpoints with different seeds."""
    from ftui.cli import main
    from tests.run_fixtures import make_quick_run

    run_a = make_quick_run(tmp_path / "a", seed=0)
    run_b = make_quick_run(tmp_path / "b", seed=1)
    assert main(["compare", str(run_a), str(run_b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_items"] > 0 and {"per_class", "flipped"} <= set(out)
    assert main(["compare", str(run_a), "/nonexistent/run"]) == 2
