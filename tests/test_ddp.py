"""DistributedDataParallel end to end: `train --gpus 2 --device cpu` runs 2 processes under torchrun (gloo).

One run folder (rank 0 writes it), exit 0, and final weights equal to one process training with the same
global batch: the split of every batch over the ranks changes nothing but float summation order.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_class_folder

from ftui.cli import main
from ftui.runs import load_checkpoint


def _train(data, out, runs, *extra: str) -> int:
    return main([str(a) for a in (
        "train", data, "--backbone", "resnet18", "--weights", "none", "--train-groups", "all", "--recipe", "plain",
        "--optimizer", "sgd", "--lr", "0.01", "--scheduler", "none", "--epochs", "2", "--batch-size", "6",
        "--image-size", "32", "--no-augment", "--val-fraction", "0.25", "--device", "cpu", "--out", out,
        "--runs-dir", runs, *extra)])


@pytest.mark.slow
def test_two_gloo_processes_write_one_run_and_match_one_process(tmp_path, capsys):
    # resnet18 has no Dropout and BatchNorm stays frozen: nothing random inside the model. A moderate lr: at
    # lr 0.05 (loss ~3.8) the summation-order differences of 1 vs 2 threads grew to 1e-3 in 2 epochs.
    data = make_class_folder(tmp_path / "colours", per_class=7)  # 21 images: batches of 6 end with a short one
    runs = tmp_path / "runs"
    assert _train(data, tmp_path / "ddp", runs, "--gpus", "2") == 0
    capsys.readouterr()
    assert _train(data, tmp_path / "single", runs) == 0
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    assert {"metrics.csv", "best.pt", "last.pt", "config.json"} <= {p.name for p in ddp.iterdir()}
    # Rank 1 wrote nothing: no second run folder anywhere.
    assert not runs.exists() or not any(runs.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colours", "ddp", "single"]
    a = load_checkpoint(ddp / "last.pt")["state_dict"]
    b = load_checkpoint(single / "last.pt")["state_dict"]
    for key, value in b.items():
        assert torch.allclose(a[key].float(), value.float(), atol=1e-4, rtol=1e-3), key
    # The events (metrics.csv rows) mean the same: summed over ranks, they match one process's.
    rows_ddp = (ddp / "metrics.csv").read_text().splitlines()
    rows_single = (single / "metrics.csv").read_text().splitlines()
    assert len(rows_ddp) == len(rows_single)
    status = json.loads((ddp / "status.json").read_text())
    assert status["status"] == "done"
    assert any("DistributedDataParallel over 2 processes" in note for note in status["notes"])


@pytest.mark.slow
def test_two_processes_train_the_head_on_cached_features_like_one_process(tmp_path, capsys):
    # Head only: the frozen body's outputs are cached, each rank computing its share of every batch; the
    # eval-transform view (no augmentation) makes the features, and so the weights, the same as one process's.
    data = make_class_folder(tmp_path / "colours", per_class=7)
    runs = tmp_path / "runs"
    head = ("--train-groups", "head", "--epochs", "3")
    assert _train(data, tmp_path / "ddp", runs, *head, "--gpus", "2") == 0
    capsys.readouterr()
    assert _train(data, tmp_path / "single", runs, *head) == 0
    notes = json.loads((tmp_path / "ddp" / "status.json").read_text())["notes"]
    assert any("cached frozen-prefix features" in n for n in notes), notes
    assert not any("no feature cache" in n for n in notes)
    a = load_checkpoint(tmp_path / "ddp" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "single" / "last.pt")["state_dict"]
    assert not torch.equal(b["fc.weight"], torch.zeros_like(b["fc.weight"]))
    for key, value in b.items():
        assert torch.allclose(a[key].float(), value.float(), atol=1e-4, rtol=1e-3), key
    rows_ddp = (tmp_path / "ddp" / "metrics.csv").read_text().splitlines()
    rows_single = (tmp_path / "single" / "metrics.csv").read_text().splitlines()
    assert len(rows_ddp) == len(rows_single) == 4


def test_each_rank_gets_its_share_of_every_global_batch_padded_with_ignored_labels(tmp_path):
    from types import SimpleNamespace

    from ftui.config import AugConfig
    from ftui.data import gpudata
    from ftui.data.batchaug import BatchAugment
    from ftui.train.batches import IGNORE, ImageSource
    from ftui.train.distributed import Dist

    files = sorted(make_class_folder(tmp_path / "data", per_class=3, size=40).rglob("*.jpg"))[:7]
    # Each image's label is its index: the labels a rank sees say which images it got.
    items = [SimpleNamespace(path=str(f), label=i) for i, f in enumerate(files)]
    seen = {}
    for rank in range(2):
        store = gpudata.make_store(torch.device("cpu"), len(items), 36)
        images = gpudata.GpuImageBatches(store, items, BatchAugment(AugConfig.none(), 32, resize_size=36), 99)
        source = ImageSource(images, 3, None, Dist(rank=rank, world_size=2))
        seen[rank] = [y.tolist() for _, y in source.batches()]
        assert all(x.shape[0] == len(y) for x, y in source.batches())
        store.close()
    # Global batches [0 1 2] [3 4 5] [6]: rank 0 takes the first share, rank 1 the rest, padded.
    assert seen[0] == [[0, 1], [3, 4], [6]]
    assert seen[1] == [[2, IGNORE], [5, IGNORE], [IGNORE]]


@pytest.mark.slow
def test_an_app_job_given_two_processes_leads_the_group_from_its_own_thread(tmp_path):
    # What `python app.py --gpus 2` does for each CUDA job, here with CPU processes over gloo.
    from ftui.config import AugConfig, TrainConfig
    from ftui.jobs import Job
    from ftui.runs import RunStore
    from ftui.train import distributed

    data = make_class_folder(tmp_path / "colours", per_class=5)
    config = TrainConfig(data=str(data), backbone="resnet18", weights="none", train_groups="all", recipe="plain",
                         optimizer="sgd", lr=0.01, scheduler="none", epochs=1, batch_size=6, image_size=32,
                         aug=AugConfig.none(), val_fraction=0.25, device="cpu")
    job = Job(config, RunStore(tmp_path / "runs"), device="cpu", gpus=2)
    job.run()
    snap = job.snapshot()
    assert snap["status"] == "done", snap["error"]
    assert len(list((tmp_path / "runs").iterdir())) == 1
    assert any("DistributedDataParallel over 2 processes" in note for note in snap["notes"])
    assert not job.history().empty  # the UI's events came from rank 0 in this thread
    assert distributed.current().world_size == 1  # the group is gone with the job
