"""int8 ONNX export: static quantization calibrated on the run's train images, gated on val accuracy."""

from __future__ import annotations

import pytest

from ftui.config import AugConfig, TrainConfig
from tests.conftest import make_class_folder
from tests.run_fixtures import run_job

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    data = make_class_folder(root / "colours", per_class=15)
    config = TrainConfig(data=str(data), backbone="resnet18", weights="none", image_size=32, epochs=3,
                         batch_size=8, device="cpu", aug=AugConfig.none(), recipe="plain",
                         runs_dir=str(root / "runs"), early_stopping_patience=0)
    job = run_job(config, root / "runs" / "r")
    assert job.snapshot()["status"] == "done", job.snapshot()["error"]
    return root / "runs" / "r"


@pytest.mark.slow
def test_int8_export_keeps_val_accuracy_and_reports_size_and_latency(trained_run):
    import onnx
    import onnxruntime

    from ftui.results.export import export_run

    result = export_run(trained_run, "onnx", int8=True)
    report = result.int8
    assert result.path == trained_run / "export" / "r.int8.onnx" and result.path.is_file()
    assert (trained_run / "export" / "r.onnx").is_file()  # the float export beside it, checked as usual
    assert report.images >= 9 and report.calibration_images >= 30
    assert report.drop_points <= 0.5 and report.float_accuracy >= 0.9
    # Weights stored as int8: resnet18's 11M float parameters shrink close to a quarter.
    assert report.int8_bytes < 0.35 * report.float_bytes
    assert report.float_latency_ms > 0 and report.int8_latency_ms > 0
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert "int8: val accuracy" in result.note and "CPU latency" in result.note


@pytest.mark.slow
def test_an_int8_model_over_the_accuracy_gate_is_refused_and_removed(trained_run, monkeypatch):
    from ftui.results import quantize
    from ftui.results.export import export_run

    # Any loss at all fails a gate of -1 point: the refusal path, with the real quantized model.
    monkeypatch.setattr(quantize, "MAX_ACCURACY_DROP", -1.0)
    with pytest.raises(quantize.QuantizeError, match="loses"):
        export_run(trained_run, "onnx", out=trained_run / "export" / "gate.onnx", int8=True)
    assert not (trained_run / "export" / "gate.onnx").exists()


def test_int8_needs_onnx_format(tmp_path):
    from ftui.results.export import ExportError, export_run
    from tests.run_fixtures import make_quick_run

    with pytest.raises(ExportError, match="--format onnx only"):
        export_run(make_quick_run(tmp_path), "pt2", int8=True)
