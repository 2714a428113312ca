"""Calibration and "none of these": the temperature fit, ECE, the abstain threshold and verdicts, through the
job's post-training step on real run folders and a real training job."""

from __future__ import annotations

import json

import pytest
import torch

from ftui.results.calibrate import calibrate_and_evaluate
from ftui.results.loading import load_run
from ftui.results.predict import Predictor
from ftui.results.trust import (
    UNKNOWN_WORDS,
    Trust,
    auroc,
    calibrated,
    ece_floor,
    energy_score,
    expected_calibration_error,
    fit_temperature,
    fit_trust,
    fpr_at_95_tpr,
    judge,
)
from ftui.runs import load_checkpoint
from tests.conftest import write_class_image
from tests.run_fixtures import make_quick_run


def overconfident(n: int = 600, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a model right about 70% of the time whose scores are 6x too large (over-confident)."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g)
    logits[torch.arange(n), targets] += 1.2
    return logits * 6.0, targets


def test_temperature_fit_undoes_a_known_overconfidence_and_ece_drops():
    logits, targets = overconfident()
    before = expected_calibration_error(calibrated(logits, 1.0), targets)
    t = fit_temperature(logits, targets)
    after = expected_calibration_error(calibrated(logits, t), targets)
    assert 4.5 < t < 7.5, t  # the true scale is 6
    assert before > 0.15 and after < 0.05, (before, after)
    # Temperature never changes which class wins.
    assert torch.equal(calibrated(logits, t).argmax(1), logits.argmax(1))


def test_auroc_and_fpr95_on_known_scores():
    inside, outside = torch.arange(100.0, 200.0), torch.arange(0.0, 100.0)
    assert auroc(inside, outside) == 1.0 and fpr_at_95_tpr(inside, outside) == 0.0
    assert auroc(outside, inside) == 0.0
    same = torch.ones(50)
    assert auroc(same, same) == 0.5  # ties count half


def test_fit_trust_keeps_95_percent_of_val_and_verdicts_follow_the_threshold():
    logits, targets = overconfident(n=400)
    trust = fit_trust(logits, targets)
    assert abs(trust.abstain_rate_val - 0.05) <= 0.01
    scores = energy_score(logits)
    low, high = int(scores.argmin()), int(scores.argmax())
    classes = ["a", "b", "c", "d"]
    probs = calibrated(logits, trust.temperature)
    assert judge(probs[low], classes, 3, float(scores[low]), trust).kind == "unknown"
    assert judge(probs[high], classes, 3, float(scores[high]), trust).kind in ("class", "unsure")
    # Close top two (odds under 2:1) -> unsure, naming both; k = 1 still names the runner-up.
    close = judge(torch.tensor([0.45, 0.35, 0.1, 0.1]), classes, 1, 99.0, trust)
    assert close.kind == "unsure" and close.label == "unsure: a | b" and "unsure between a and b" in close.words()
    clear = judge(torch.tensor([0.7, 0.2, 0.05, 0.05]), classes, 1, 99.0, trust)
    assert clear.kind == "class" and clear.label == "a" and len(clear.top) == 1


def test_trust_from_an_old_or_broken_checkpoint_is_t_1_without_threshold():
    assert Trust.from_meta(None) == Trust()
    assert Trust.from_meta({"temperature": -3.0}).temperature == 1.0
    assert Trust.from_meta({"temperature": 2.5, "energy_threshold": 1.0}).temperature == 2.5


def _sharpen_head(run_dir, factor: float) -> None:
    """Make the saved model over-confident: every logit times `factor` (its last layer scaled)."""
    path = run_dir / "best.pt"
    ckpt = load_checkpoint(path)
    for key in ("fc.weight", "fc.bias"):
        ckpt["state_dict"][key] = ckpt["state_dict"][key] * factor
    torch.save(ckpt, path)


def test_an_old_run_loads_with_t_1_and_the_post_training_step_calibrates_it(tmp_path):
    run_dir = make_quick_run(tmp_path, per_class=20)
    _sharpen_head(run_dir, 60.0)  # a real (untrained) resnet18 made wildly over-confident
    assert load_run(run_dir).trust == Trust()  # no trust entry yet: T = 1, never "unknown"
    evaluation = calibrate_and_evaluate(run_dir)
    stored = load_checkpoint(run_dir / "best.pt")["trust"]
    run = load_run(run_dir)
    assert run.trust.temperature == pytest.approx(stored["temperature"]) and run.trust.temperature > 2
    cal = evaluation.to_dict()
    assert cal["temperature"] == pytest.approx(run.trust.temperature, abs=1e-4)
    assert cal["ece_after_in_sample"] < cal["ece_before"], cal
    # Every probability shown is the calibrated one: the Predictor's equals softmax(logits / T).
    predictor = Predictor(run)
    paths = [it.path for it in evaluation.items[:4]]
    expected = torch.softmax(predictor.logits(paths) / run.trust.temperature, dim=1)
    assert torch.allclose(predictor.probabilities(paths), expected, atol=1e-6)
    top = predictor.predict(paths[:1], top_k=1)[0][0]
    assert top[1] == pytest.approx(float(expected[0].max()), abs=1e-6)


@pytest.mark.slow
def test_a_real_training_job_writes_temperature_ece_and_threshold(class_folder, tmp_path):
    from tests.run_fixtures import run_job
    from tests.test_jobs import tiny_config

    config = tiny_config(class_folder, runs_dir=str(tmp_path / "runs"), epochs=3, val_fraction=0.5)
    job = run_job(config, tmp_path / "runs" / "r1")
    assert job.status == "done", job.snapshot()
    ev = json.loads((tmp_path / "runs" / "r1" / "evaluation.json").read_text())
    for key in ("temperature", "ece_before", "ece_after", "reliability", "abstain_rate", "energy_threshold",
                "ood_method", "ood_threshold"):
        assert key in ev, key
    assert 0 < ev["temperature"] and 0 <= ev["ece_after"] <= 1
    trust = load_checkpoint(tmp_path / "runs" / "r1" / "best.pt")["trust"]
    assert trust["energy_threshold"] == pytest.approx(ev["energy_threshold"])
    # The job fitted the feature-space score on the train images and stored it with the model.
    assert trust["ood_method"] == ev["ood_method"] == "mahalanobis"
    assert trust["ood_threshold"] == pytest.approx(ev["ood_threshold"])


@pytest.mark.slow
def test_predict_says_unknown_below_the_stored_threshold_and_the_csv_says_so(tmp_path):
    run_dir = make_quick_run(tmp_path, per_class=20)
    calibrate_and_evaluate(run_dir)
    predictor = Predictor(run_dir)
    threshold = predictor.trust.threshold  # the stored score's (mahalanobis: this run has train images)
    assert predictor.trust.ood_method == "mahalanobis"
    odd = [write_class_image(tmp_path / "odd" / f"{i}.png", (c, 255 - c, c), seed=i, size=40)
           for i, c in enumerate((0, 128, 255, 60, 200))]
    table = predictor.predictions_table([str(p) for p in odd], top_k=2)
    for row in table.to_dict(orient="records"):
        implied = "unknown" if row["ood_score"] < round(threshold, 4) else None
        if implied:
            assert row["verdict"] == "unknown"
        else:
            assert row["verdict"] != "unknown"
    for verdict in predictor.verdicts([str(p) for p in odd]):
        assert (verdict.kind == "unknown") == (verdict.score < threshold)
        if verdict.kind == "unknown":
            assert UNKNOWN_WORDS in verdict.words()


@pytest.mark.slow
def test_an_ensemble_run_averages_its_members_calibrated_probabilities(tmp_path):
    from ftui.results.ensemble import make_ensemble
    from ftui.results.explain import explain

    runs = [make_quick_run(tmp_path, backbone=b, per_class=20) for b in ("resnet18", "mobilenet_v3_small")]
    _sharpen_head(runs[0], 8.0)
    for run_dir in runs:
        calibrate_and_evaluate(run_dir)  # each member gets its own temperature
    report = make_ensemble(runs, tmp_path / "ens")
    ens = Predictor(tmp_path / "ens")
    members = [Predictor(r) for r in runs]
    assert {m.trust.temperature for m in members} != {1.0}
    paths = [it.path for it in calibrate_and_evaluate(runs[0]).items[:6]]
    mean = torch.stack([m.probabilities(paths) for m in members]).mean(0)
    assert torch.allclose(ens.probabilities(paths), mean, atol=1e-5)
    assert ens.trust.temperature == 1.0 and ens.trust.energy_threshold is not None
    energy = torch.stack([energy_score(m.logits(paths)) for m in members]).mean(0)
    assert torch.allclose(energy_score(ens.logits(paths)), energy, atol=1e-4)
    ev = json.loads((tmp_path / "ens" / "evaluation.json").read_text())
    assert ev["ensemble"]["n"] == ev["num_items"] and len(ev["ensemble"]["members"]) == 2
    assert report["gain"] == pytest.approx(ev["accuracy"] - report["best_member_accuracy"], abs=1e-9)
    assert explain(ens, paths[0]).heatmap.shape == (32, 32)  # Grad-CAM of the first member's map
    from ftui.results.export import export_run

    exported = export_run(ens.run, "onnx")  # the combined graph, checked against PyTorch on val images
    assert exported.max_abs_diff is not None and exported.max_abs_diff <= 1e-4


@pytest.mark.slow
def test_evaluate_ood_cli_saves_auroc_and_fpr95_for_the_stored_score_energy_and_msp(tmp_path, capsys):
    from ftui.cli import main

    run_dir = make_quick_run(tmp_path, per_class=20)
    (run_dir / "evaluation.json").write_text(json.dumps(calibrate_and_evaluate(run_dir).to_dict()))
    for i in range(6):
        write_class_image(tmp_path / "elsewhere" / "any" / f"{i}.png", (128, 128, 128), seed=900 + i)
    assert main(["evaluate", str(run_dir), "--ood", str(tmp_path / "elsewhere"), "--device", "cpu"]) == 0
    assert "energy AUROC" in capsys.readouterr().out
    ood = json.loads((run_dir / "evaluation.json").read_text())["ood"]
    assert ood["method"] == "mahalanobis" and ood["num_out"] == 6 and 0 <= ood["auroc"] <= 1
    assert 0 <= ood["fpr95"] <= 1 and ood["auroc"] == ood["mahalanobis"]["auroc"] and {"energy", "msp"} <= set(ood)


def test_tta_averages_the_logits_of_flip_and_four_corner_crops(tmp_path):
    from ftui.results.predict import tta_views

    run_dir = make_quick_run(tmp_path)
    plain, tta = Predictor(run_dir), Predictor(run_dir, tta=True)
    paths = [str(p) for p in sorted((tmp_path / "colours" / "red").iterdir())[:3]]
    batch = plain.tensors(paths)
    views = tta_views(batch)
    assert len(views) == 6 and torch.equal(views[1], batch.flip(-1))
    with torch.inference_mode():
        expected = torch.stack([plain.model(v) for v in views]).mean(0)
    assert torch.allclose(tta.logits(paths), expected, atol=1e-5)
    assert not torch.allclose(tta.logits(paths), plain.logits(paths), atol=1e-4)


@pytest.mark.slow
def test_model_card_and_evaluate_step_show_calibration_and_the_uploaded_ood_score(tmp_path):
    from ftui.results.modelcard import build_card, card_html
    from ftui.results.reliability import reliability_html
    from ftui.ui import AppContext, AppSettings
    from ftui.ui.results_step import evaluation_of, with_ood

    run_dir = make_quick_run(tmp_path, per_class=20)
    evaluation = calibrate_and_evaluate(run_dir)
    (run_dir / "evaluation.json").write_text(json.dumps(evaluation.to_dict()))
    text = card_html(build_card(run_dir))
    assert "Calibration: temperature" in text and "answered &quot;unknown&quot;" in text
    assert text.count("<circle") == len(evaluation.calibration["reliability"]) + len(
        evaluation.calibration["reliability_before"])
    assert "AUROC: not measured" in text
    ctx = AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work"))
    result = evaluation_of(ctx, run_dir.name, "val")
    odd = [str(write_class_image(tmp_path / "odd" / f"{i}.png", (128, 128, 128), seed=i)) for i in range(4)]
    shown = with_ood(ctx, run_dir.name, result, odd)
    assert shown["ood"]["num_out"] == 4 and 0 <= shown["ood"]["auroc"] <= 1
    assert "AUROC" in reliability_html(shown) and "not measured" not in reliability_html(shown)
    assert with_ood(ctx, run_dir.name, result, None) is result


@pytest.mark.slow
def test_the_app_combines_two_runs_into_an_ensemble_listed_like_any_run(tmp_path):
    from ftui.ui import AppContext, AppSettings
    from ftui.ui.ensemble_view import combine
    from ftui.ui.results_step import run_choices

    runs = [make_quick_run(tmp_path, backbone=b) for b in ("resnet18", "mobilenet_v3_small")]
    ctx = AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work"))
    assert combine(ctx, [runs[0].name])[0].startswith("**Could not combine:** pick 2")
    assert "not a run id" in combine(ctx, [runs[0].name, "../../etc"])[0]
    error, summary = combine(ctx, [r.name for r in runs])
    assert error == "" and "gain" in summary, error
    new = next(r for r in run_choices(ctx) if r not in {p.name for p in runs})
    assert summary.startswith(f"**Ensemble `{new}`**")
    assert [m["run"] for m in load_run(tmp_path / "runs" / new).members] == [r.name for r in runs]


def test_ece_floor_is_the_noise_of_a_perfectly_calibrated_model_and_shrinks_with_more_images():
    probs = torch.softmax(torch.randn(100, 3, generator=torch.Generator().manual_seed(1)) * 2, dim=1)
    small, large = ece_floor(probs), ece_floor(probs.repeat(16, 1))
    assert 0.02 < small < 0.2 and large < small / 2.5, (small, large)
