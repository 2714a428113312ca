"""Evaluation and prediction on a run reloaded from disk: a real (untrained) checkpoint for what needs no
learning, a really trained tiny run where the answer must be right."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ftui.config import AugConfig, TrainConfig
from ftui.data.imagecache import DecodedImageCache
from ftui.jobs import Job
from ftui.results.evaluate import EvaluateError, evaluate
from ftui.results.loading import load_run
from ftui.results.predict import PredictError, Predictor, predict
from ftui.runs import RunStore
from tests.conftest import make_class_folder
from tests.run_fixtures import make_quick_run


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """A run folder with a real random-init resnet18 checkpoint over 3 x 8 colour images: (data, run dir)."""
    root = tmp_path_factory.mktemp("quickrun")
    run_dir = make_quick_run(root, per_class=8)
    return root / "colours", run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run trained to the end: (data folder, run folder)."""
    root = tmp_path_factory.mktemp("evalpredict")
    data = make_class_folder(root / "colours", per_class=8)
    # resnet18 from scratch at 32 px separates the colour classes in 4 short epochs.
    config = TrainConfig(data=str(data), backbone="resnet18", weights="none", image_size=32,
                         epochs=4, batch_size=4, lr=3e-3, device="cpu", aug=AugConfig.none(),
                         train_groups="all", recipe="plain")
    job = Job(config, RunStore(root / "runs"))
    job.run()
    assert job.status == "done", job.error
    return data, job.run_dir


def test_predict_on_a_reloaded_run_matches_the_in_memory_model(quick):
    data, run_dir = quick
    run = load_run(run_dir)
    images = sorted(str(p) for p in data.rglob("*.jpg"))[:5]
    predictor = Predictor(run_dir)
    # The in-memory model on the tensors validation saw: the decoded-image cache and the eval transform.
    cache = DecodedImageCache(run.transform["resize_size"])
    cache.load(images)
    batch = torch.stack([run.eval_transform()(cache.get(p)) for p in images])
    with torch.no_grad():
        expected = torch.softmax(run.model(batch), dim=1)
    got = predictor.probabilities(images)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    top = predictor.predict(images, top_k=2)
    assert [t[0][0] for t in top] == [run.classes[int(i)] for i in expected.argmax(1)]


def test_predict_decodes_large_jpegs_exactly_as_the_training_cache_does(quick, tmp_path):
    from ftui.data.imagecache import resize_for_cache
    from ftui.data.images import open_rgb
    from tests.conftest import CLASS_COLOURS, write_class_image

    _, run_dir = quick
    run = load_run(run_dir)
    size = run.transform["resize_size"]
    # Big JPEGs: the cache decodes them at a reduced (draft) scale, which changes the pixels slightly.
    images = [str(write_class_image(tmp_path / f"{name}.jpg", colour, seed=7, size=320))
              for name, colour in CLASS_COLOURS.items()]
    cache = DecodedImageCache(size)
    cache.load(images)
    full_decode = resize_for_cache(open_rgb(images[0]), size)
    assert not torch.equal(full_decode, cache.get(images[0])), "draft decoding should differ from a full decode"
    batch = torch.stack([run.eval_transform()(cache.get(p)) for p in images])
    with torch.no_grad():
        expected = torch.softmax(run.model(batch), dim=1)
    torch.testing.assert_close(Predictor(run_dir).probabilities(images), expected, rtol=1e-5, atol=1e-6)


def test_top_k_is_sorted_clipped_to_the_classes_and_accepts_pil_images(quick):
    data, run_dir = quick
    image = Image.open(next(data.rglob("*.jpg")))
    (top,) = predict(run_dir, [image], top_k=10)
    assert len(top) == 3
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(PredictError, match="top_k"):
        predict(run_dir, [image], top_k=0)


def test_predictions_table_has_path_label_probability_top_k(quick):
    data, run_dir = quick
    paths = [str(p) for p in sorted(data.rglob("*.jpg"))[:2]]
    table = Predictor(run_dir).predictions_table(paths, top_k=2)
    assert list(table.columns) == ["path", "label", "probability", "top_k", "verdict", "ood_score"]
    assert table["path"].tolist() == paths
    assert table.loc[0, "top_k"].startswith(table.loc[0, "label"] + ":")


def test_evaluate_reports_accuracy_per_class_confusion_and_sorted_mistakes(quick):
    _, run_dir = quick
    result = evaluate(run_dir, split="all")
    confusion = torch.tensor(result.confusion)
    assert result.num_items == 24 and int(confusion.sum()) == 24
    assert result.accuracy == pytest.approx(float(confusion.diag().sum()) / 24)
    assert list(result.per_class.columns) == ["class", "precision", "recall", "f1", "support"]
    assert result.per_class["support"].tolist() == confusion.sum(1).tolist()
    assert len(result.mistakes) == 24 - int(confusion.diag().sum())
    assert result.mistakes["loss"].is_monotonic_decreasing
    assert set(result.to_dict()) >= {"accuracy", "per_class", "confusion", "mistakes", "classes"}


@pytest.mark.slow  # the run must really have learned the colours (about a minute of training)
def test_a_misclassified_image_is_listed_with_its_loss(trained, tmp_path):
    _, run_dir = trained
    # A red image filed under "blue": the run will call it red.
    from tests.conftest import CLASS_COLOURS, write_class_image

    for name in ("red", "green"):
        write_class_image(tmp_path / "wrong" / name / "a.jpg", CLASS_COLOURS[name], seed=7)
    write_class_image(tmp_path / "wrong" / "blue" / "odd.jpg", CLASS_COLOURS["red"], seed=8)
    result = evaluate(run_dir, split="all", dataset=tmp_path / "wrong")
    row = result.mistakes.iloc[0]
    assert row["path"].endswith("odd.jpg") and row["true"] == "blue" and row["loss"] > 0


def test_evaluating_unknown_classes_is_an_evaluate_error(quick, tmp_path):
    _, run_dir = quick
    make_class_folder(tmp_path / "other", per_class=3, classes=["red", "purple"])
    with pytest.raises(EvaluateError, match="purple"):
        evaluate(run_dir, split="all", dataset=tmp_path / "other")
