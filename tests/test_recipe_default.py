"""The default recipe: the head trained one epoch on frozen features, then every layer at fastai's rates, early
stopping on a val-loss plateau within the phase, the best epoch kept; the L-BFGS head fit stays an option."""

from __future__ import annotations

import pytest

from ftui.config import AugConfig, TrainConfig
from ftui.data.datasets import load_dataset
from ftui.models.backbones import build, classifier_head, layer_groups
from ftui.train.callbacks import Callback, EarlyStopping, TrainingControl
from ftui.train.recipes import plan_phases
from ftui.train.trainer import fit, seed_everything
from ftui.ui.presets import PRETRAINED


def test_default_is_a_head_epoch_then_all_layers_from_1e5_to_1e3():
    config = TrainConfig(data="x")
    assert (config.train_groups, config.recipe, config.head_fit, config.scheduler, config.optimizer) == (
        "all", "fine_tune", "sgd", "onecycle", "adamw")
    names = ["stem", "stage1", "stage2", "head"]
    head, body = plan_phases(config, names, names)
    assert (head.name, head.epochs, head.trainable, head.solver) == ("head", 1, ["head"], "sgd")
    assert head.lr_scale == {"head": 1.0}
    assert (body.name, body.epochs, body.solver) == ("fine_tune", config.epochs - 1, "sgd")
    rates = {g: config.lr * s for g, s in body.lr_scale.items()}
    assert rates["head"] == pytest.approx(1e-3) and rates["stem"] == pytest.approx(1e-5)
    # The L-BFGS option: one pass fits the head (freeze_epochs > 1 would repeat the same fit), same body rates.
    lbfgs = config.replace(head_fit="lbfgs", freeze_epochs=3)
    fitted, body_after_fit = plan_phases(lbfgs, names, names)
    assert (fitted.epochs, fitted.solver) == (1, "lbfgs") and body_after_fit.lr_scale == body.lr_scale
    # "Head only" stays available, and the app preselects the default for pretrained weights.
    assert [p.name for p in plan_phases(config.replace(train_groups="head"), names, ["head"])] == ["head"]
    assert PRETRAINED.groups == "all" and "fine-tuned" in PRETRAINED.hint


class _Events(Callback):
    def __init__(self) -> None:
        self.batches: list[str] = []
        self.epochs: list[dict] = []

    def on_batch_end(self, info):
        self.batches.append(info["phase"])

    def on_epoch_end(self, info):
        self.epochs.append(info)


def test_head_phase_fits_the_head_to_convergence_in_one_pass_without_sgd_steps(class_folder):
    config = TrainConfig(data=str(class_folder), backbone="resnet18", weights="none", image_size=32, epochs=2,
                         batch_size=8, device="cpu", aug=AugConfig.none(), seed=0, head_fit="lbfgs")
    dataset = load_dataset(config.data)
    seed_everything(0)
    model = build("resnet18", len(dataset.classes), weights="none")
    events = _Events()
    result = fit(config, dataset, model, layer_groups(model, "resnet18"), [events])
    assert result.status == "done", result.message
    assert "head" not in events.batches and events.batches  # no optimizer steps in the head phase
    first = events.epochs[0]
    # Colour classes are separable on even random-init features: the converged head gets train right.
    assert first["phase"] == "head" and first["train_acc"] == 1.0 and first["train_loss"] < 0.1
    assert any("L-BFGS" in n for n in result.notes)
    head = classifier_head(model, "resnet18")
    assert head.weight.abs().sum() > 0


def test_early_stopping_counts_val_loss_within_a_phase_only():
    control = TrainingControl()
    stopper = EarlyStopping(patience=2, monitor="val_loss")
    stopper.on_fit_start({})
    stopper.on_epoch_end({"val_loss": 0.2, "control": control})  # the fitted head: a low val loss
    stopper.on_phase_start({"phase": "fine_tune"})
    for loss in (0.5, 0.4, 0.45):  # warming up, then improving: no plateau yet
        stopper.on_epoch_end({"val_loss": loss, "control": control})
    assert not control.should_stop
    stopper.on_epoch_end({"val_loss": 0.41, "control": control})
    assert control.should_stop and "val loss did not improve for 2 epochs" in control.stop_reason


def _head_alone_wins(tmp_path):
    """Colour classes where the head phase is one small step (batch 64 > 30 images): the head alone wins."""
    from tests.conftest import make_class_folder

    data = make_class_folder(tmp_path / "colours", per_class=10)
    return TrainConfig(data=str(data), backbone="resnet18", weights="none", image_size=32, epochs=4, batch_size=64,
                       lr=1e-2, device="cpu", aug=AugConfig.none(), seed=0, runs_dir=str(tmp_path / "runs"))


def test_the_head_trained_alone_becomes_best_pt_when_val_prefers_it_and_changes_no_other_epoch(tmp_path):
    """ftui/train/headalone.py: at the end of the head phase a copy of the head trains on alone over the cached
    features. Here the head phase is one small step (batch 64 > 30 images), so the head alone wins."""
    import json
    import threading

    from ftui.jobs import run_training
    from ftui.runs import RunStore, load_checkpoint

    base = _head_alone_wins(tmp_path)
    runs = {}
    for head_alone in (True, False):
        result, folder = run_training(base.replace(head_alone=head_alone), RunStore(tmp_path / f"runs{head_alone}"),
                                      threading.Event())
        assert result.status == "done", result.message
        runs[head_alone] = (result, folder)
    (kept, folder), (without, plain_folder) = runs[True], runs[False]

    def curve(run_folder):  # every metrics.csv column but the last (the epoch's seconds)
        return [line.split(",")[:-1] for line in run_folder.metrics_path.read_text().splitlines()]

    assert folder.metrics_path.read_text().splitlines()[0].endswith("seconds")
    assert len(curve(folder)) == 5 and curve(folder) == curve(plain_folder)
    assert (kept.best_epoch, without.best_epoch) == (1, 3)  # the same epochs; best.pt is the head alone
    assert kept.best_val_acc == 1.0 and any("kept as best.pt (epoch 1)" in n for n in kept.notes)
    assert kept.head_alone.best_at_end and kept.head_alone.kept_at_epoch == 1
    best = load_checkpoint(folder.best_path)
    assert best["head_alone"] is True and best["epoch"] == 1
    assert not load_checkpoint(plain_folder.best_path).get("head_alone")
    # What Evaluate reports is this kept model's accuracy, measured again on the val images.
    evaluation = json.loads(folder.evaluation_path.read_text())
    assert evaluation["accuracy"] == 1.0


def test_the_finished_status_says_when_the_kept_model_is_the_head_alone():
    """The status reads the job's structured head-alone outcome (FitResult.head_alone), not note text."""
    from ftui.train.headalone import HeadAloneOutcome
    from ftui.ui.train_step import status_markdown

    outcome = HeadAloneOutcome(val_acc=0.96, epoch=2, epochs=5, seconds=0.31, kept_at_epoch=1, best_at_end=True)
    snap = {"status": "done", "backbone": "mobilenet_v2", "best_val_acc": 0.96, "num_val": 153, "run_id": "r1",
            "elapsed_s": 90.0, "notes": [outcome.summary(best_epoch=1)], "head_alone": outcome.to_dict()}
    assert "the head trained alone" in status_markdown(snap, mine=True, ips=None)
    snap["head_alone"] = {**outcome.to_dict(), "best_at_end": False}  # a later epoch beat it
    assert "head trained alone" not in status_markdown(snap, mine=True, ips=None)


@pytest.mark.slow
def test_a_run_resumed_after_the_head_alone_won_keeps_it_as_best(tmp_path):
    """last.pt's resume state carries the head alone's val accuracy: a resumed run's later epochs replace best.pt
    only by beating it (with the head epoch's lower score they would have replaced it at once)."""
    from ftui.runs import load_checkpoint
    from tests.run_fixtures import PressStop, run_job

    config, run_dir = _head_alone_wins(tmp_path), tmp_path / "run"
    assert run_job(config, run_dir, [PressStop(2, at="start")]).status == "stopped"
    last = load_checkpoint(run_dir / "last.pt")
    assert last["resume"]["epoch"] == 1 and last["resume"]["best_val_acc"] == 1.0
    assert load_checkpoint(run_dir / "best.pt")["head_alone"] is True
    assert run_job(config, run_dir, resume=True).status == "done"
    best = load_checkpoint(run_dir / "best.pt")
    assert best["head_alone"] is True and best["epoch"] == 1 and best["val_acc"] == 1.0
