"""`python -m ftui bench` end to end on a tiny generated dataset with a tiny backbone."""

from __future__ import annotations

import json

import pytest

from ftui.bench.speed import BenchOptions, bench_config, format_table
from ftui.cli import main

DOCUMENTED_KEYS = (
    "one_inference_pass_seconds", "head_only_seconds_to_095", "all_layers_epochs_to_095", "engine_epoch_seconds",
    "tutorial_epoch_seconds", "engine_vs_compute_limit", "partial_freeze_epoch_ratio", "first_metric_seconds",
    "predict_ms", "peak_rss_mb",
    "head_only_seconds_to_090", "head_only_best_acc", "all_layers_seconds_to_095", "all_layers_best_acc",
    "engine_train_images_per_s", "engine_infer_images_per_s", "compute_limit_train_images_per_s",
    "compute_limit_infer_images_per_s", "tutorial_head_only_best_acc", "tutorial_all_layers_best_acc",
    "pipeline_train_images_per_s", "device_name", "cpu_model",
)


@pytest.mark.slow  # runs the bench
def test_bench_json_has_every_documented_key_and_the_table_renders_it(split_folder, capsys, tmp_path):
    code = main(["bench", str(split_folder), "--backbone", "mobilenet_v3_small", "--weights", "none",
                 "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--tutorial-workers", "0", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    missing = [k for k in DOCUMENTED_KEYS if k not in results]
    assert not missing, missing
    # Measured, not placeholders: times and rates are positive, accuracies are fractions.
    for key in ("one_inference_pass_seconds", "engine_epoch_seconds", "tutorial_epoch_seconds", "predict_ms",
                "peak_rss_mb", "first_metric_seconds", "engine_train_images_per_s",
                "compute_limit_train_images_per_s", "partial_freeze_epoch_ratio", "engine_vs_compute_limit"):
        assert results[key] > 0, key
    assert 0 <= results["all_layers_best_acc"] <= 1 and 0 <= results["tutorial_head_only_best_acc"] <= 1
    assert "bench: engine: head only" in captured.err
    assert any("from scratch" in note for note in results["notes"])  # --weights none: the scratch settings
    table = format_table(results)
    # The machine is named: the card on CUDA, the CPU model (with the instruction set ftui chose by) always.
    from ftui.devices import cpu_model

    assert results["cpu_model"] == cpu_model() and cpu_model() in table.splitlines()[0]
    for label in ("training img/s vs compute limit", "head only vs tutorial: s to 0.95",
                  "all layers vs tutorial: s per epoch", "partial freeze", "first metric after Train",
                  "predict one image, warm", "peak RSS"):
        assert label in table
    # The limit was sampled between the engine's all-layer epochs (one here), with the load around the bench.
    assert results["compute_limit_interleaved"] and len(results["compute_limit_train_samples"]) == 1
    assert len(results["load_average_before"]) == 3 and "load average" in table
    assert results["all_layers_kept_acc"] >= results["all_layers_best_acc"]
    # This fresh result goes into a bench history as `bench --json | bench-history -` would.
    saved = tmp_path / "bench.json"
    saved.write_text(captured.out)
    hist, md = tmp_path / "history.jsonl", tmp_path / "history.md"
    assert main(["bench-history", str(saved), "--history", str(hist), "--markdown", str(md)]) == 0
    assert json.loads(hist.read_text())["results"] == results
    assert f"| {results['engine_vs_compute_limit']:.3f} |" in md.read_text()


def test_bench_on_a_missing_folder_is_a_user_error(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope"), "--weights", "none"]) == 2
    assert "dataset not found" in capsys.readouterr().err


def test_random_weights_bench_as_from_scratch_and_pretrained_ones_with_the_default_recipe():
    scratch = bench_config(BenchOptions("data", backbone="resnet50", weights="none"))
    assert (scratch.recipe, scratch.bn_mode) == ("plain", "train")
    pretrained = bench_config(BenchOptions("data", backbone="resnet50", weights="imagenet", batch_size=64))
    assert (pretrained.recipe, pretrained.bn_mode, pretrained.batch_size) == ("fine_tune", "frozen", 64)


def test_warm_epochs_leave_out_the_first_epoch_of_the_phase():
    from ftui.bench.speed import _Timeline

    tl = _Timeline(start=0.0)
    # Two epochs of one phase: batches end at 10 s and 11 s, epochs (after validation) at 10.5 s and 11.5 s.
    for epoch, batch_at, end_at in ((1, 10.0, 10.5), (2, 11.0, 11.5)):
        tl.last_batch[epoch] = batch_at
        tl.epochs.append({"epoch": epoch, "phase": "fine_tune", "val_acc": 0.5, "seconds": 1.0, "at": end_at})
    assert tl.train_val_seconds("fine_tune") == (10.0 + 0.5, 1.0)
    assert tl.train_val_seconds("fine_tune", skip=1) == (0.5, 0.5)
    assert tl.train_val_seconds("fine_tune", skip=2) == (0.0, 0.0)
