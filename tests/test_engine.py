"""The training loop through real parts: tiny generated images, a small torchvision model, few steps."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import torch
from torch import nn

from ftui.config import AugConfig, TrainConfig
from ftui.data.datasets import load_dataset
from ftui.models.backbones import build, layer_groups
from ftui.runs import load_checkpoint
from ftui.train.callbacks import Callback, EarlyStopping, History, TrainingControl
from ftui.train.recipes import class_weights, discriminative_scales, lr_multiplier, plan_phases
from ftui.train.trainer import fit, seed_everything

BACKBONE = "mobilenet_v3_small"


def tiny_config(data, **changes) -> TrainConfig:
    """A config that trains in about a second on 2 CPU cores."""
    base = TrainConfig(data=str(data), backbone=BACKBONE, weights="none", image_size=32, epochs=2,
                       batch_size=8, lr=1e-2, device="cpu", aug=AugConfig.none(), scheduler="none")
    return base.replace(**changes)


def build_parts(config: TrainConfig):
    dataset = load_dataset(config.data, val_fraction=config.val_fraction, seed=config.seed)
    seed_everything(config.seed)
    model = build(config.backbone, len(dataset.classes), weights="none")
    return dataset, model, layer_groups(model, config.backbone)


class Recorder(Callback):
    """Keeps the name and payload of every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def on_fit_start(self, info): self.events.append(("fit_start", info))
    def on_batch_end(self, info): self.events.append(("batch_end", info))
    def on_epoch_end(self, info): self.events.append(("epoch_end", info))
    def on_fit_end(self, info): self.events.append(("fit_end", info))
    def on_error(self, info): self.events.append(("error", info))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


class StopAfter(Callback):
    """Sets the stop event after `n` batches: a user pressing Stop mid-epoch."""

    def __init__(self, event: threading.Event, n: int) -> None:
        self.event, self.n, self.seen = event, n, 0

    def on_batch_end(self, info):
        self.seen += 1
        if self.seen == self.n:
            self.event.set()


@pytest.mark.slow  # several real training runs
def test_events_arrive_in_order_start_batches_epochs_end(class_folder):
    config = tiny_config(class_folder, train_groups="all", recipe="plain")
    dataset, model, groups = build_parts(config)
    rec = Recorder()
    result = fit(config, dataset, model, groups, [rec])
    names = rec.names()
    assert result.status == "done"
    assert names[0] == "fit_start" and names[-1] == "fit_end"
    assert names.count("epoch_end") == 2 and "error" not in names
    # Every epoch_end follows that epoch's batches; batches carry loss, lr and images/s.
    first_epoch_end = names.index("epoch_end")
    assert set(names[1:first_epoch_end]) == {"batch_end"}
    batch = rec.events[1][1]
    assert batch["epoch"] == 1 and batch["loss"] > 0 and batch["lr"] == pytest.approx(1e-2)
    assert batch["images_per_s"] > 0
    epoch = rec.events[first_epoch_end][1]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "seconds", "eta_s"):
        assert epoch[key] is not None
    assert rec.events[-1][1]["status"] == "done"


@pytest.mark.slow  # several real training runs
def test_stop_mid_epoch_gives_stopped_with_metrics_and_last_checkpoint(class_folder, tmp_path):
    config = tiny_config(class_folder, train_groups="all", recipe="plain", epochs=3, batch_size=4)
    dataset, model, groups = build_parts(config)
    stop = threading.Event()
    run_dir = tmp_path / "run"
    steps_per_epoch = -(-len(dataset.split("train")) // 4)
    # Stop during the second epoch, after its first batch.
    callbacks = [StopAfter(stop, steps_per_epoch + 1)]  # metrics.csv comes with the run folder
    result = fit(config, dataset, model, groups, callbacks, stop, run_dir=run_dir)
    assert result.status == "stopped"
    assert "stopped" in result.message
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics["epoch"]) == [1]
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["classes"] == dataset.classes and ckpt["backbone"] == BACKBONE
    assert (run_dir / "best.pt").is_file()


def test_image_deleted_after_scanning_fails_with_message_naming_the_file(class_folder):
    config = tiny_config(class_folder)
    dataset, model, groups = build_parts(config)
    victim = dataset.split("train")[0].path
    import os

    os.remove(victim)
    rec = Recorder()
    result = fit(config, dataset, model, groups, [rec])
    assert result.status == "failed"
    assert os.path.basename(victim) in result.error
    assert rec.names()[-2:] == ["error", "fit_end"]
    assert rec.events[-1][1]["status"] == "failed"


def test_model_whose_forward_raises_fails_with_the_error_message(class_folder):
    config = tiny_config(class_folder, train_groups="all", recipe="plain")
    dataset, model, groups = build_parts(config)
    # A real broken part: a head expecting the wrong number of features.
    model.classifier[-1] = nn.Linear(7, len(dataset.classes))
    groups = layer_groups(model, BACKBONE)
    result = fit(config, dataset, model, groups, [])
    assert result.status == "failed"
    assert "RuntimeError" in result.error and "shapes" in result.error


def test_nan_loss_stops_the_run_and_says_lower_the_learning_rate(class_folder, tmp_path):
    config = tiny_config(class_folder, train_groups="all", recipe="plain", optimizer="sgd", lr=1e30,
                         epochs=3, batch_size=4)
    dataset, model, groups = build_parts(config)
    history = History()
    result = fit(config, dataset, model, groups, [history], run_dir=tmp_path / "run")
    assert result.status == "failed"
    assert "loss became" in result.error and "lower the learning rate" in result.error
    assert len(history.epochs()) < 3
    assert (tmp_path / "run" / "last.pt").is_file()


def _group_state(model: nn.Module, group) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BatchNorm statistics) of one group, cloned."""
    out = {}
    for i, module in enumerate(group.modules):
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            out[f"{i}.{name}"] = t.detach().clone()
    return out


@pytest.mark.parametrize("feature_cache", [True, False])
def test_frozen_groups_stay_bit_identical_while_trainable_ones_change(class_folder, feature_cache):
    config = tiny_config(class_folder, train_groups="last:2", recipe="plain", feature_cache=feature_cache,
                         bn_mode="train")
    dataset, model, groups = build_parts(config)
    trainable = {g.name for g in groups[-2:]}
    before = {g.name: _group_state(model, g) for g in groups}
    result = fit(config, dataset, model, groups, [])
    assert result.status == "done"
    for g in groups:
        after = _group_state(model, g)
        same = all(torch.equal(before[g.name][k], after[k]) for k in after)
        if g.name in trainable:
            assert not same, f"trainable group {g.name} did not change"
        else:
            assert same, f"frozen group {g.name} changed"


def test_head_only_uses_the_feature_cache_and_says_so(class_folder):
    config = tiny_config(class_folder, train_groups="head", epochs=2)
    dataset, model, groups = build_parts(config)
    rec = Recorder()
    result = fit(config, dataset, model, groups, [rec])
    assert result.status == "done"
    assert any("cached frozen-prefix features" in n for n in result.notes)


class KeepSources(Callback):
    def on_fit_end(self, info):
        self.train_source = info["trainer"].train_source


def test_a_cached_phase_trains_on_augmented_views_when_asked_and_says_when_it_does_not(class_folder):
    """feature_cache_views=3 with augmentation on: view 0 holds the unaugmented images' features, views 1 and 2
    augmented draws (they differ from view 0 and from each other); with 1 view the phase note says the Augment
    step's settings do not reach the phase."""
    aug = AugConfig(random_resized_crop=True, crop_scale_min=0.3, hflip=True, color_jitter=True)
    config = tiny_config(class_folder, train_groups="head", epochs=3, feature_cache_views=3, aug=aug)
    dataset, model, groups = build_parts(config)
    kept = KeepSources()
    result = fit(config, dataset, model, groups, [kept])
    source = kept.train_source
    assert result.status == "done" and source.views_stored == 3
    n = source.num_items
    rows = torch.arange(n)
    views = [source.store.get(rows + v * n, torch.device("cpu")) for v in range(3)]
    def differ(a, b):  # random-init features are tiny: compare relative to their scale
        return float((a - b).abs().max()) > 1e-2 * float(a.abs().max())

    assert differ(views[0], views[1]) and differ(views[1], views[2])
    assert any("the unaugmented image and 2 augmented views" in note for note in result.notes)
    single = fit(config.replace(feature_cache_views=1), *build_parts(config)[:1], *build_parts(config)[1:], [])
    assert any("augmentation does not reach this phase" in note for note in single.notes)


def test_feature_cache_over_its_cap_falls_back_to_the_full_model(class_folder):
    config = tiny_config(class_folder, train_groups="head", feature_cache_max_mb=0)
    dataset, model, groups = build_parts(config)
    result = fit(config, dataset, model, groups, [])
    assert result.status == "done"
    assert any("training the full model instead" in n for n in result.notes)


@pytest.mark.slow  # several real training runs
def test_same_seed_same_data_same_config_gives_same_metrics(class_folder):
    config = tiny_config(class_folder, train_groups="last:2", aug=AugConfig(), feature_cache_views=2, epochs=3,
                         freeze_epochs=1)
    runs = []
    for _ in range(2):
        dataset, model, groups = build_parts(config)
        history = History()
        assert fit(config, dataset, model, groups, [history]).status == "done"
        runs.append(history.epochs().drop(columns=["seconds"]))
    pd.testing.assert_frame_equal(runs[0], runs[1])


def test_fine_tune_recipe_trains_head_first_then_the_chosen_groups():
    config = TrainConfig(data="x", epochs=5, freeze_epochs=1, train_groups="all", head_fit="sgd")
    phases = plan_phases(config, ["stem", "stage1", "head"], ["stem", "stage1", "head"])
    assert [(p.name, p.epochs, p.trainable) for p in phases] == [
        ("head", 1, ["head"]), ("fine_tune", 4, ["stem", "stage1", "head"])]
    scales = phases[1].lr_scale
    # fastai's fine_tune rates: the head at lr, the earliest group 100x below it.
    assert scales["head"] == pytest.approx(1.0) and scales["stem"] == pytest.approx(0.01)
    assert scales["stem"] < scales["stage1"] < scales["head"]
    # A single epoch goes to the chosen groups; head-only is one phase.
    assert [p.name for p in plan_phases(config.replace(epochs=1), ["a", "head"], ["a", "head"])] == ["fine_tune"]
    assert [p.name for p in plan_phases(config, ["a", "head"], ["head"])] == ["head"]
    assert discriminative_scales(["head"]) == {"head": 1.0}


def test_schedulers_shape_the_learning_rate():
    base = TrainConfig(data="x", epochs=4)
    cosine = lr_multiplier(base.replace(scheduler="cosine"), steps_per_epoch=10, epochs=4)
    assert cosine(0) == pytest.approx(1.0) and cosine(20) == pytest.approx(0.5) and cosine(39) < 0.01
    step = lr_multiplier(base.replace(scheduler="step", lr_step_size=2, lr_gamma=0.1), 10, 4)
    assert step(19) == pytest.approx(1.0) and step(20) == pytest.approx(0.1)
    warm = lr_multiplier(base.replace(scheduler="none", warmup_epochs=1), 10, 4)
    assert warm(0) == pytest.approx(0.1) and warm(9) == pytest.approx(1.0) and warm(30) == 1.0
    onecycle = lr_multiplier(base.replace(scheduler="onecycle"), 10, 4)
    assert onecycle(0) == pytest.approx(1 / 25) and onecycle(10) == pytest.approx(1.0) and onecycle(39) < 0.01


def test_class_weights_favour_the_rare_class():
    w = class_weights([30, 10, 0])
    assert w[1] > w[0] and w[2] == 1.0
    # Averaged over the samples, the weight is 1: the loss keeps its scale.
    assert float((w[:2] * torch.tensor([30.0, 10.0])).sum() / 40) == pytest.approx(1.0)


def test_fit_stops_early_from_the_config_alone(class_folder, tmp_path):
    """early_stopping_patience is honoured by fit() itself (default_callbacks), not only by the job: with a
    rate of zero val loss never improves after epoch 1, so patience 1 ends a 4-epoch run after epoch 2."""
    config = tiny_config(class_folder, train_groups="all", recipe="plain", epochs=4, lr=1e-12,
                         early_stopping_patience=1, head_alone=False)
    dataset, model, groups = build_parts(config)
    result = fit(config, dataset, model, groups, run_dir=tmp_path / "run")
    assert result.status == "done" and result.epochs_done == 2, result.message
    assert result.message.startswith("stopped early at epoch 2")
    assert list(pd.read_csv(tmp_path / "run" / "metrics.csv")["epoch"]) == [1, 2]
    patient = fit(config.replace(early_stopping_patience=0), dataset, *build_parts(config)[1:])
    assert patient.epochs_done == 4


def test_early_stopping_never_counts_an_epoch_whose_rate_is_still_rising():
    """Warm-up epochs (the rate rises from one epoch's end to the next) are not a plateau; after the peak they
    count. Worse val loss at epochs 2-4 under a rising rate, then two bad epochs after the peak: stop at 6."""
    control = TrainingControl()
    stopper = EarlyStopping(patience=2, monitor="val_loss")
    stopper.on_fit_start({})
    epochs = [(0.5, 1e-4), (0.9, 4e-4), (0.8, 8e-4), (0.7, 1e-3), (0.6, 9e-4), (0.55, 7e-4)]
    for epoch, (loss, lr) in enumerate(epochs, start=1):
        stopper.on_epoch_end({"val_loss": loss, "lr": lr, "control": control})
        assert control.should_stop == (epoch == 6), epoch


def test_early_stopping_asks_the_loop_to_stop_after_patience_epochs():
    control = TrainingControl()
    stopper = EarlyStopping(patience=2)
    stopper.on_fit_start({})
    for acc in (0.5, 0.6, 0.6, 0.55):
        stopper.on_epoch_end({"val_acc": acc, "control": control})
    assert control.should_stop and "did not improve for 2 epochs" in control.stop_reason


@pytest.mark.slow  # several real training runs
@pytest.mark.shared
def test_head_only_on_hymenoptera_with_real_weights_reaches_093(shared_data, shared_weights):
    config = TrainConfig(data=str(shared_data), backbone="mobilenet_v2", weights=str(shared_weights),
                         train_groups="head", epochs=2, batch_size=16, lr=1e-3, device="cpu")
    dataset = load_dataset(config.data)
    seed_everything(0)
    model = build("mobilenet_v2", len(dataset.classes), weights=str(shared_weights))
    result = fit(config, dataset, model, layer_groups(model, "mobilenet_v2"), [])
    assert result.status == "done"
    assert result.best_val_acc >= 0.93


# --- speed: lazy feature cache, micro-batches ------------------------------------------------------

@pytest.mark.slow  # several real training runs
def test_lazily_filled_feature_cache_gives_the_same_metrics_as_no_cache(class_folder):
    config = tiny_config(class_folder, train_groups="head", epochs=2, mixed_precision=False)
    histories = []
    for cache in (True, False):
        dataset, model, groups = build_parts(config)
        model.eval()  # the head's Dropout would draw different masks in the two runs
        history = History()
        result = fit(config.replace(feature_cache=cache), dataset, model, groups, [history])
        assert result.status == "done"
        histories.append(history.epochs())
    cached, plain = histories
    assert list(cached["val_acc"]) == list(plain["val_acc"])
    assert cached["train_loss"].to_numpy() == pytest.approx(plain["train_loss"].to_numpy(), rel=1e-3)
    assert cached["val_loss"].to_numpy() == pytest.approx(plain["val_loss"].to_numpy(), rel=1e-3)


@pytest.mark.slow  # several real training runs
def test_micro_batches_with_accumulation_equal_one_big_batch(class_folder, monkeypatch):
    from ftui import devices

    # resnet18 has no Dropout: the two runs draw no random numbers inside the model.
    config = tiny_config(class_folder, backbone="resnet18", train_groups="all", recipe="plain", epochs=1,
                         batch_size=12, optimizer="sgd", lr=0.05, feature_cache=False, mixed_precision=False)
    finals = []
    for micro in (12, 4):
        monkeypatch.setattr(devices, "CPU_MAX_MICRO_BATCH", micro)
        dataset, model, groups = build_parts(config)
        result = fit(config, dataset, model, groups, [])
        assert result.status == "done"
        assert any("micro-batch 4 x 3" in n for n in result.notes) == (micro == 4)
        finals.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for key, value in finals[0].items():
        assert torch.allclose(value.float(), finals[1][key].float(), atol=1e-5, rtol=1e-4), key

