""""None of these" in feature space: the Mahalanobis statistics fitted on a run's train images after training,
stored in best.pt, used by every prediction, and safe under concurrent calls; through real runs."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from ftui.models.families import head_path
from ftui.models.features import with_features
from ftui.results.calibrate import calibrate_and_evaluate
from ftui.results.loading import load_run
from ftui.results.oodscore import Mahalanobis, NearestNeighbour, fit_sample, ledoit_wolf
from ftui.results.predict import Predictor
from ftui.results.trust import Trust
from ftui.runs import load_checkpoint
from tests.run_fixtures import make_quick_run


def stripes(path, seed: int, size: int = 40):
    """A black-and-white pattern (stripes or checks): like none of the colour classes."""
    rng = np.random.default_rng(seed)
    period = int(rng.integers(2, 8))
    y, x = np.mgrid[0:size, 0:size]
    pattern = ((x // period) % 2) if seed % 2 else (((x // period) + (y // period)) % 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((pattern * 255).astype(np.uint8)).convert("RGB").save(path)
    return path


def test_mahalanobis_ranks_points_by_their_distance_to_the_nearest_class():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    labels = torch.arange(2).repeat(100)
    feats = centers[labels] + torch.randn(200, 3, generator=g)
    score = Mahalanobis.fit(feats, labels)
    # Scored on the direction of the features (normalised): near a class direction is familiar, another is not.
    near, far = score(centers * 3), score(torch.tensor([[0.0, 0.0, 10.0], [-10.0, -10.0, 0.0]]))
    assert near.min() > far.max()
    # More dimensions than images: the shrunk covariance is still invertible and the score finite.
    wide = Mahalanobis.fit(torch.randn(20, 64, generator=g), torch.arange(2).repeat(10))
    assert torch.isfinite(wide(torch.randn(5, 64, generator=g))).all()
    cov = ledoit_wolf(torch.randn(20, 64, generator=g))
    assert torch.linalg.eigvalsh(cov).min() > 0
    assert NearestNeighbour.fit(feats, k=1)(feats[:3]).allclose(torch.ones(3), atol=1e-5)


def test_fit_sample_caps_the_images_and_keeps_every_class():
    labels = [0] * 5000 + [1] * 30 + [2] * 500
    picked = fit_sample(labels, limit=300)
    got = [labels[i] for i in picked]
    assert len(picked) == 300 and got.count(1) == 30 and got.count(2) == got.count(0) == 135
    assert fit_sample([0, 1, 1], limit=300) == [0, 1, 2]


def test_the_logits_and_features_module_shares_the_model_and_reproduces_its_logits(tmp_path):
    run = load_run(make_quick_run(tmp_path, backbone="mobilenet_v3_small"))
    split = with_features(run.model, head_path("mobilenet_v3_small"), 32)
    assert split is not None and split.head is run.model.classifier[3]
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        out, plain = split(x), run.model(x)
    assert out.shape == (2, 3 + 1024) and torch.allclose(out[:, :3], plain, atol=1e-5)
    assert isinstance(run.model.classifier[3], torch.nn.Linear)  # the model itself was not changed
    assert {id(p) for p in split.parameters()} == {id(p) for p in run.model.parameters()}
    assert with_features(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)), "0") is None  # no Linear head


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    """A real resnet18 run over the colour classes, calibrated by the job's post-training step."""
    root = tmp_path_factory.mktemp("features")
    run_dir = make_quick_run(root, per_class=20)
    evaluation = calibrate_and_evaluate(run_dir)
    (run_dir / "evaluation.json").write_text(json.dumps(evaluation.to_dict()))
    return root, run_dir, evaluation


def test_the_feature_statistics_round_trip_in_the_checkpoint_and_predictions_use_them(calibrated_run):
    _root, run_dir, evaluation = calibrated_run
    stored = load_checkpoint(run_dir / "best.pt")["trust"]
    assert stored["ood_method"] == "mahalanobis" and stored["features"]["means"].shape == (3, 512)
    assert stored["features"]["whiten"].shape == (512, 512)
    run = load_run(run_dir)
    score = run.trust.feature_score()
    assert torch.equal(score.means, stored["features"]["means"]) and run.trust.threshold == stored["ood_threshold"]
    ev = evaluation.to_dict()
    assert ev["ood_method"] == "mahalanobis" and ev["ood_threshold"] == pytest.approx(run.trust.threshold)
    assert 0 < ev["abstain_rate"] <= 0.2  # the threshold keeps 95% of the (12) val images
    # The Predictor's score is the stored Mahalanobis score of the model's own pooled features.
    predictor = Predictor(run_dir)
    paths = [it.path for it in evaluation.items[:5]]
    logits, scores = predictor.scored(paths)
    split = with_features(run.model, head_path("resnet18"))
    with torch.inference_mode():
        feats = split(predictor.tensors(paths))[:, 3:]
    assert torch.allclose(scores, score(feats), rtol=1e-4, atol=1e-3)
    assert torch.allclose(logits, predictor.logits(paths), atol=1e-5)
    table = predictor.predictions_table(paths)
    assert np.allclose(table["ood_score"], scores.numpy(), rtol=1e-4, atol=1e-3)


def test_a_folder_of_images_from_none_of_the_classes_is_answered_unknown(calibrated_run, capsys):
    from ftui.cli import main

    root, run_dir, _evaluation = calibrated_run
    odd = [str(stripes(root / "elsewhere" / "any" / f"{i}.png", seed=i)) for i in range(12)]
    verdicts = Predictor(run_dir).verdicts(odd)
    assert all(v.kind == "unknown" for v in verdicts), [(v.kind, v.score) for v in verdicts]
    assert main(["evaluate", str(run_dir), "--ood", str(root / "elsewhere"), "--device", "cpu"]) == 0
    assert "mahalanobis (used) AUROC" in capsys.readouterr().out
    ood = json.loads((run_dir / "evaluation.json").read_text())["ood"]
    assert ood["method"] == "mahalanobis" and ood["auroc"] == ood["mahalanobis"]["auroc"] >= 0.99
    assert ood["unknown_rate"] == 1.0 and {"energy", "msp"} <= set(ood)


def test_concurrent_predictions_give_each_caller_its_own_scores(calibrated_run):
    root, run_dir, evaluation = calibrated_run
    predictor = Predictor(run_dir)
    images = [[it.path] for it in evaluation.items[:6]] + [
        [str(stripes(root / "odd" / f"{i}.png", seed=i))] for i in range(6)]
    alone = [predictor.verdicts(batch)[0] for batch in images]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda batch: predictor.verdicts(batch)[0], images * 4))
    for i, verdict in enumerate(together):
        expected = alone[i % len(images)]
        assert verdict.kind == expected.kind and verdict.score == pytest.approx(expected.score, rel=1e-4, abs=1e-3)


def test_damaged_or_missing_statistics_fall_back_to_energy(calibrated_run):
    _root, run_dir, _evaluation = calibrated_run
    meta = load_checkpoint(run_dir / "best.pt")["trust"]
    broken = {**meta, "features": {**meta["features"], "whiten": torch.zeros(4, 4)}}
    trust = Trust.from_meta(broken)
    assert trust.ood_method == "energy" and trust.threshold == meta["energy_threshold"]
    assert Trust.from_meta({**meta, "features": None}).ood_method == "energy"
    assert Trust.from_meta(meta).ood_method == "mahalanobis"


def test_exports_say_which_score_answers_unknown(calibrated_run):
    from ftui.results.export import metadata

    _root, run_dir, _evaluation = calibrated_run
    meta = metadata(load_run(run_dir))
    assert meta["ood_method"] == "mahalanobis" and meta["abstain_below_score"] == load_run(run_dir).trust.threshold
    assert meta["abstain_below_energy"] is not None

