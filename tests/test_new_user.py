"""What a new user tripped on (issue 23), checked without a browser: the README's first command gives every
feature (ONNX export included), CI runs exactly the README's test command, and the doctor speaks plainly
(what its label score means, a check that did not run is not "OK", "1 image", "Move to class" starts on the
class it suggests)."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
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
