"""What a new user tripped on (issue 23), checked without a browser: the README's first command gives every
feature (ONNX export included), CI runs exactly the README's test command, and the doctor speaks plainly
(what its label score means, a check that did not run is not "OK", "1 image", "Move to class" starts on the
class it suggests)."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import pytest
import tomllib
from test_doctor import COLOUR_FEATURES, plant_problems

from ftui.doctor import check
from ftui.ui.context import AppContext, AppSettings

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


# --- item 1: the README's first command installs every feature -------------------------------------------
def test_onnx_export_is_in_the_default_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!\[; ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    assert {"onnx", "onnxscript", "onnxruntime"} <= names, names
    # No optional extra holds a feature the app offers: the only non-empty one is the test tools.
    extras = {k: v for k, v in project.get("optional-dependencies", {}).items() if v}
    assert set(extras) == {"test"}, extras


def test_the_readme_commands_are_what_ci_runs():
    first, second = _readme_commands()[:2]
    assert first.strip().endswith("pip install -e . && python app.py"), first
    assert second.strip() == "bash .ci/run"
    ci = (ROOT / ".ci" / "run").read_text()
    installs = [line for line in ci.splitlines() if "pip install" in line and "-e" in line]
    assert installs == ["python3 -m pip install -q -e '.[test]'"], installs
    assert ci.rstrip().splitlines()[-1] == "python3 -m pytest -q"
    assert "`python3 -m pytest -q`" in (ROOT / "README.md").read_text()


def test_the_onnx_button_is_never_hidden():
    from ftui.ui import predict_step

    source = Path(predict_step.__file__).read_text()
    block = source[source.index('c["onnx_button"]'):]
    block = block[:block.index("\n", block.index("elem_id"))]
    assert "visible" not in block, block


# --- item 8: the doctor's words ---------------------------------------------------------------------------
def test_doctor_label_line_says_what_it_measures(tmp_path):
    report = check(plant_problems(tmp_path / "planted") and tmp_path / "planted", **COLOUR_FEATURES)
    summary = report.check("labels").summary
    assert "agrees with" not in summary and "of labels" not in summary
    assert "not a count of wrong labels" in summary
    assert re.search(r"look at these first: \d+ images? that may be in the wrong class, \d+ images? unusual", summary)
    assert "(s)" not in report.to_text()


def test_doctor_cli_says_skip_for_a_check_that_did_not_run(tmp_path):
    from test_doctor import write_clean_split

    text = check(write_clean_split(tmp_path / "clean"), weights="none").to_text()
    assert "[   OK] labels" not in text and "skipped" not in text
    assert "[ SKIP] labels: not checked: no pretrained weights" in text


def test_doctor_counts_one_image_in_the_singular(tmp_path):
    from conftest import CLASS_COLOURS, write_class_image

    for ci, (name, colour) in enumerate(CLASS_COLOURS.items()):
        for i in range(12):
            write_class_image(tmp_path / "d" / "train" / name / f"{i}.jpg", colour, seed=ci * 100 + i)
        write_class_image(tmp_path / "d" / "val" / name / "v.jpg", colour, seed=ci * 100 + 50)
    balance = check(tmp_path / "d", labels=False).check("balance")
    issues = " ".join(balance.table["issue"])
    assert "only 1 validation image:" in issues and "1 validation images" not in issues


def test_move_to_class_starts_on_the_suggested_class(tmp_path):
    from ftui.ui.doctor_view import run_check
    from ftui.ui.fix_view import _Handlers

    planted = plant_problems(tmp_path / "planted")
    report = check(tmp_path / "planted", **COLOUR_FEATURES)
    from ftui.ui.doctor_view import suggestions_of

    suggested = suggestions_of(report)
    assert suggested[str(planted["mislabeled"])] == "red"
    # The app's handler returns the same map beside the gallery's paths.
    *_, _paths, from_handler = run_check(str(tmp_path / "planted"), False, "mobilenet_v3_small", None)
    assert from_handler == {}  # label check off: nothing suggested, nothing prefilled
    ctx = AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work", data_root=tmp_path))
    h = _Handlers(ctx, data_outputs=[None] * 6)
    shown = [str(planted["mislabeled"])]
    evt = gr.SelectData(None, {"index": 0, "value": None})
    _path, _rel, target = h.on_select(shown, suggested, str(tmp_path / "planted"), 0.2, evt)
    assert target["value"] == "red" and "red" in target["choices"]
    _path, _rel, target = h.on_select(shown, {}, str(tmp_path / "planted"), 0.2, evt)
    assert target["value"] is None


# --- item 12: the README is a guide -----------------------------------------------------------------------
def test_readme_is_a_short_guide_whose_links_all_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) < 15_000, len(text.encode())
    for section in ("## Two commands", "## A tour", "## Command line", "## Python", "## Limits"):
        assert section in text, section
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    assert any(t.startswith("docs/") for t in targets) and any(t.endswith(".png") for t in targets)
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, missing
    for doc in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), (doc.name, target)


# --- item 5: early stopping is said, with the epoch it kept -----------------------------------------------
def _swapped_labels(root: Path) -> Path:
    """train/ and val/ with the labels swapped: every epoch that fits train makes val worse, so early stopping
    must end the run (deterministically) and keep the first epoch."""
    from conftest import write_class_image

    for split, names in (("train", ("a", "b")), ("val", ("b", "a"))):
        for name, colour in zip(names, ((220, 40, 40), (40, 40, 220))):
            for i in range(8 if split == "train" else 4):
                write_class_image(root / split / name / f"{i}.png", colour, seed=i + (50 if split == "val" else 0),
                                  size=32)
    return root


@pytest.mark.slow
def test_early_stop_is_said_on_the_cli_the_run_table_and_the_card(tmp_path):
    import json
    import subprocess
    import sys

    import pandas as pd

    data = _swapped_labels(tmp_path / "swapped")
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"image_size": 32, "recipe": "plain", "early_stopping_patience": 2,
                                  "lr": 0.01, "aug": {"hflip": False}}))
    out = tmp_path / "runs" / "early"
    proc = subprocess.run([sys.executable, "-m", "ftui", "train", str(data), "--backbone", "resnet18",
                           "--weights", "none", "--epochs", "10", "--batch-size", "8", "--device", "cpu",
                           "--config", str(config), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = pd.read_csv(out / "metrics.csv")
    last, kept = int(metrics["epoch"].iloc[-1]), int(metrics["epoch"][metrics["val_acc"].idxmax()])
    assert last < 10
    said = f"stopped early at epoch {last}: val loss did not improve for 2 epochs; kept epoch {kept}"
    assert said in proc.stdout, proc.stdout
    from ftui.results.modelcard import build_card, card_body
    from ftui.ui.train_step import runs_frame

    ctx = AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work", data_root=tmp_path))
    assert list(runs_frame(ctx)["status"]) == [f"stopped early at epoch {last}; kept epoch {kept}"]
    assert said in card_body(build_card(out))


# --- items 3 and 11: the card tells the truth and carries the owner's name --------------------------------
def test_card_samples_represent_the_val_accuracy_and_show_the_truth():
    from ftui.results.modelcard import representative_samples, truth_caption

    rows = [{"path": f"{i}", "true": "daisy" if i % 2 else "rose",
             "predicted": ("daisy" if i % 2 else "rose") if i < 20 else "tulip", "probability": 0.6}
            for i in range(30)]  # 20 of 30 right: a 67% model
    picked = representative_samples(rows, 20 / 30, limit=8)
    assert len(picked) == 8 and sum(r["true"] == r["predicted"] for r in picked) == 5  # round(0.667 * 8)
    assert {r["true"] for r in picked} == {"daisy", "rose"}
    assert truth_caption(picked[-1]) == f"✗ true: {picked[-1]['true']}, predicted: tulip"
    assert truth_caption(picked[0]).startswith("✓ true: ")


def test_card_is_titled_by_the_owner_not_by_the_run_id(tmp_path):
    from run_fixtures import make_quick_run

    from ftui.results.modelcard import build_card, card_body, card_html, write_card_text

    run_dir = make_quick_run(tmp_path, image_size=32)
    card = build_card(run_dir)
    assert card.heading == "Tells apart blue, green and red"
    assert f"<h2>{card.heading}</h2>" in card_body(card) and "-class classifier" not in card_body(card)
    write_card_text(run_dir, "Colour sorter", "Sorts <b>paint</b> swatches.")
    card = build_card(run_dir)
    body = card_body(card)
    assert "<h2>Colour sorter</h2>" in body and "Sorts &lt;b&gt;paint&lt;/b&gt; swatches." in body
    assert "<title>Model card: Colour sorter</title>" in card_html(card)
    # Every sample says the truth and the answer.
    assert body.count("true: ") == len(card.samples) == 3


# --- item 2: Evaluate says why it shows fewer images than mistakes ----------------------------------------
def test_evaluate_says_why_misclassified_images_are_not_shown(tmp_path):
    from conftest import make_class_folder

    from ftui.ui.results_step import evaluation_outputs

    data = make_class_folder(tmp_path / "colours", per_class=4)
    ctx = AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work", data_root=data))
    paths = sorted(str(p) for p in data.rglob("*.jpg"))
    result = {"split": "val", "accuracy": 0.0, "num_items": 12, "classes": ["blue", "green", "red"],
              "confusion": [[0, 4, 0], [0, 0, 4], [4, 0, 0]],
              "per_class": [{"class": c, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 4}
                            for c in ("blue", "green", "red")],
              "mistakes": [{"path": p, "true": "red", "predicted": "blue", "confidence": 0.5, "loss": 1.0}
                           for p in paths]}
    summary, *_ = evaluation_outputs(ctx, result)
    assert "12 misclassified (12 of 12 shown below, worst first)" in summary
    for p in paths[:5]:
        Path(p).unlink()  # the run's data folder changed since it trained
    summary, *_ = evaluation_outputs(ctx, result)
    assert "(7 of 12 shown below, worst first: 5 no longer on the server" in summary
    other = AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work", data_root=None))
    summary, *_ = evaluation_outputs(other, result, session="someone-else")
    assert "0 of 12 shown" in summary and "another browser uploaded" in summary


# --- item 4: progress and time left weighted by what each epoch costs ---------------------------------------
def test_progress_and_eta_weigh_a_cheap_cached_head_epoch_lightly():
    import pandas as pd

    from ftui.config import TrainConfig
    from ftui.ui.eta import epoch_kinds, progress_and_eta

    kinds = epoch_kinds(TrainConfig(epochs=5))  # the default fine-tune: one head epoch, then all layers
    assert kinds == ["head_first", "full", "full", "full", "full"]
    assert epoch_kinds(TrainConfig(epochs=5, train_groups="head")) == ["head_first"] + ["head_cached"] * 4
    head_done = pd.DataFrame({"epoch": [1], "phase": ["head"], "seconds": [4.5]})
    # The issue's moment: 7 s in, the head epoch (4.5 s) done, a tenth of the first all-layer epoch.
    snap = {"status": "running", "epoch": 2, "step": 1, "steps_per_epoch": 10, "epochs": 5, "elapsed_s": 7.0}
    fraction, eta = progress_and_eta(snap, kinds, head_done)
    assert fraction < 0.12 and eta > 50  # was 22% and "18 s left" by counting epochs
    # Once an all-layer epoch is measured, the time left is what the remaining ones take.
    two_done = pd.DataFrame({"epoch": [1, 2], "phase": ["head", "fine_tune"], "seconds": [4.5, 20.0]})
    snap = {**snap, "epoch": 3, "step": 0, "elapsed_s": 24.5}
    fraction, eta = progress_and_eta(snap, kinds, two_done)
    assert eta == pytest.approx(60.0) and fraction == pytest.approx(24.5 / 84.5)
