"""`python -m ftui` end to end on a tiny generated dataset, and its error handling."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from ftui.cli import main
from tests.conftest import make_class_folder


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_predict_evaluate_end_to_end(tmp_path, capsys):
    data = make_class_folder(tmp_path / "colours", per_class=8)
    out_dir = tmp_path / "run"
    code, out, err = run_cli(
        capsys, "train", data, "--backbone", "resnet18", "--weights", "none", "--train-groups", "all",
        "--epochs", "2", "--batch-size", "4", "--lr", "0.003", "--out", out_dir, "--seed", "1",
        "--val-fraction", "0.25", "--no-augment", "--image-size", "32", "--device", "cpu")
    assert code == 0, err
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "val_acc" in epoch_lines[0]
    assert f"run folder: {out_dir}" in out
    config = json.loads((out_dir / "config.json").read_text())
    assert config["seed"] == 1 and config["val_fraction"] == 0.25 and config["aug"]["hflip"] is False
    assert {"metrics.csv", "best.pt", "last.pt", "evaluation.json"} <= {p.name for p in out_dir.iterdir()}

    images = sorted(str(p) for p in data.rglob("*.jpg"))[:3]
    code, out, err = run_cli(capsys, "predict", out_dir, *images, "--top-k", "2")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["path"] for r in rows] == images
    assert all(len(r["top_k"].split(";")) == 2 and 0 <= float(r["probability"]) <= 1 for r in rows)

    code, out, err = run_cli(capsys, "evaluate", out_dir)
    assert code == 0, err
    assert out.startswith("accuracy ") and "precision" in out and "red" in out


def test_train_from_a_config_file_with_flags_on_top(tmp_path, capsys):
    from ftui.config import AugConfig, TrainConfig

    data = make_class_folder(tmp_path / "colours", per_class=4, classes=["red", "blue"])
    cfg = TrainConfig(data=str(data), backbone="mobilenet_v3_small", weights="none", image_size=32, epochs=3,
                      batch_size=4, device="cpu", aug=AugConfig.none())
    cfg.to_json(tmp_path / "run.json")
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / "run.json", "--epochs", "1",
                             "--out", tmp_path / "run")
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 1


def test_bad_input_exits_2_with_a_clear_message_and_no_traceback(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", tmp_path / "missing", "--weights", "none")
    assert code == 2 and err.startswith("error: dataset not found") and "Traceback" not in err
    code, _, err = run_cli(capsys, "train", tmp_path, "--epochs", "0")
    assert code == 2 and "epochs must be in [1, " in err
    code, _, err = run_cli(capsys, "predict", tmp_path / "norun", "x.jpg")
    assert code == 2 and "not a run folder" in err
    code, _, err = run_cli(capsys, "summary", tmp_path / "missing")
    assert code == 2 and "dataset not found" in err


def test_summary_prints_class_by_split_counts(tmp_path, capsys):
    data = make_class_folder(tmp_path / "colours", per_class=5)
    code, out, _ = run_cli(capsys, "summary", data)
    assert code == 0
    assert "red" in out and "train" in out and "15 images, 3 classes (generated split)" in out


def test_python_dash_m_ftui_lists_backbones():
    result = subprocess.run([sys.executable, "-m", "ftui", "backbones"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "mobilenet_v2" in result.stdout and "resnet18" in result.stdout
