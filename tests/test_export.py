"""Export: a .pt2 that torch.export.load runs without ftui, and an .onnx checked with onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ftui.cli import main as cli_main
from ftui.results.export import ExportError, export_run, val_images
from ftui.results.loading import load_run
from ftui.results.predict import Predictor
from tests.run_fixtures import make_quick_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_quick_run(tmp_path_factory.mktemp("export"))


def test_unknown_format_is_refused(run_dir):
    with pytest.raises(ExportError, match="pt2, onnx, safetensors"):
        export_run(run_dir, "torchscript")


def test_parity_images_are_the_runs_own_val_split(run_dir):
    run = load_run(run_dir)
    paths = val_images(run)
    assert paths and all("/colours/" in p for p in paths)
    from ftui.data.datasets import load_dataset

    dataset = load_dataset(run.config.data, val_fraction=run.config.val_fraction, seed=run.config.seed)
    assert set(paths) <= {it.path for it in dataset.split("val")}


@pytest.mark.slow
def test_pt2_loads_and_runs_without_ftui_with_any_batch_size(run_dir, tmp_path, capsys):
    assert cli_main(["export", str(run_dir), "--format", "pt2"]) == 0
    out = run_dir / "export" / f"{run_dir.name}.pt2"
    assert f"wrote {out}" in capsys.readouterr().out
    images = val_images(load_run(run_dir))[:5]
    expected = Predictor(run_dir).logits(images)
    batch_file = tmp_path / "batch.pt"
    torch.save(Predictor(run_dir).tensors(images), batch_file)
    # A fresh interpreter started outside the repository; loading and running the program never imports ftui.
    script = (
        "import json, sys, torch\n"
        "extra = {'ftui.json': ''}\n"
        f"program = torch.export.load({str(out)!r}, extra_files=extra)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'ftui'], 'loading imported ftui'\n"
        f"x = torch.load({str(batch_file)!r}, weights_only=True)\n"
        "m = program.module()\n"
        "print(json.dumps({'meta': json.loads(extra['ftui.json']), 'logits': m(x).tolist(),"
        " 'one': list(m(x[:1]).shape)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["meta"]["classes"] == ["blue", "green", "red"] and got["meta"]["image_size"] == 32
    assert got["one"] == [1, 3]  # the batch dimension is dynamic: 5 images above, 1 here
    assert (torch.tensor(got["logits"]) - expected).abs().max() <= 1e-4


@pytest.mark.slow
def test_onnx_matches_pytorch_on_the_val_images_in_onnxruntime(run_dir):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    result = export_run(run_dir, "onnx")
    assert result.path == run_dir / "export" / f"{run_dir.name}.onnx"
    assert result.images_checked >= 2 and result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    # Checked again here with another batch size than the export traced (dynamic batch), and the metadata read.
    images = val_images(load_run(run_dir))[:3]
    predictor = Predictor(run_dir)
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"image": predictor.tensors(images).numpy()})
    assert got.shape == (3, 3)
    assert (torch.from_numpy(got) - predictor.logits(images)).abs().max() <= 1e-4
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == ["blue", "green", "red"]
    assert not list(result.path.parent.glob("*.data")), "weights must be inside the one .onnx file"


def test_safetensors_round_trip_gives_equal_outputs_and_carries_the_metadata(run_dir, tmp_path):
    from safetensors import safe_open

    from ftui.results.export import load_safetensors

    result = export_run(run_dir, "safetensors", tmp_path / "model.safetensors")
    assert result.max_abs_diff == 0.0 and result.images_checked >= 2
    with safe_open(str(result.path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["ftui"])
        assert "fc.weight" in list(handle.keys())
    assert meta["classes"] == ["blue", "green", "red"] and meta["task"] == "classification"
    assert meta["image_size"] == 32 and len(meta["mean"]) == 3 and meta["backbone"] == "resnet18"
    model, meta_back = load_safetensors(result.path)
    assert meta_back == meta
    images = val_images(load_run(run_dir))[:4]
    predictor = Predictor(run_dir)
    with torch.no_grad():
        got = model(predictor.tensors(images))
    assert torch.equal(got, predictor.logits(images))


def test_a_safetensors_export_starts_a_new_run_as_its_weights_file(run_dir, tmp_path):
    from ftui.models.backbones import build_with_report

    path = export_run(run_dir, "safetensors", tmp_path / "model.safetensors").path
    model, report = build_with_report("resnet18", 3, weights=str(path))
    # Same classes: the head comes from the file too, so the new model computes what the run's model did.
    assert not report.missing and not report.mismatched and report.message.endswith("(same classes)")
    expected = load_run(run_dir).model
    for key, value in expected.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_corrupt_safetensors_file_is_refused_with_a_plain_message(tmp_path):
    from ftui.models.weights import WeightsError, read_state_dict

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        read_state_dict(bad)
