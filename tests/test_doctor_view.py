"""The doctor's app section: the handler's outputs, and the section served in-process through the real API."""

from __future__ import annotations

import gradio as gr
import pytest
from gradio_client import Client
from PIL import Image
from test_doctor import write_clean_split

from ftui.ui.doctor_view import CHECK_TITLES, build_doctor_section, run_check


@pytest.fixture(scope="module")
def flawed_root(tmp_path_factory: pytest.TempPathFactory):
    """A clean split plus a tiny image and a zero-byte JPEG."""
    root = write_clean_split(tmp_path_factory.mktemp("flawed"))
    Image.new("RGB", (4, 4), (200, 40, 40)).save(root / "train" / "red" / "speck.png")
    (root / "train" / "green" / "empty.jpg").write_bytes(b"")
    return root


def test_run_check_fills_card_tables_chart_and_captioned_thumbnails(flawed_root):
    card, *tables, chart, gallery, error, paths, suggested = run_check(str(flawed_root), False,
                                                                       "mobilenet_v3_small", None)
    assert suggested == {}  # no label check, so no class to suggest
    assert [p.rsplit("/", 1)[1] for p in paths] == ["speck.png"]  # the fix buttons act on what is shown
    assert error == ""
    assert "Errors: fix these before training" in card and "zero-byte file" in card
    assert len(tables) == len(CHECK_TITLES)
    unreadable = tables[list(CHECK_TITLES).index("unreadable")]
    assert list(unreadable["path"]) == ["train/green/empty.jpg"]  # relative to the dataset root
    assert set(chart["class"]) == {"red", "green", "blue"} and set(chart["split"]) == {"train", "val"}
    # The zero-byte file has nothing to show; the 4x4 image does, captioned with its label and a short reason
    # (one line: the full reason is in the table below).
    assert len(gallery) == 1
    caption = gallery[0][1]
    assert caption.startswith("red · ") and caption.endswith(" +1") and len(caption) <= 32, caption
    properties = tables[list(CHECK_TITLES).index("properties")]
    assert any("very small (4x4 px)" in issue for issue in properties["issue"])
    assert max(gallery[0][0].size) <= 384


def test_run_check_without_a_dataset_says_so():
    *_, error, _paths, _suggested = run_check("", True, "mobilenet_v3_small", None)
    assert "Load a dataset first" in error


def test_run_check_turns_a_bad_source_into_a_message(tmp_path):
    *_, error, _paths, _suggested = run_check(str(tmp_path / "missing"), False, "mobilenet_v3_small", None)
    assert error.startswith("**Could not check the data:**") and "dataset not found" in error


def test_section_served_in_process_checks_the_state_dataset(tmp_path):
    root = write_clean_split(tmp_path / "clean")
    with gr.Blocks() as demo:
        build_doctor_section(gr.State(str(root)))
    demo.queue().launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        card, *_rest = client.predict(True, "mobilenet_v3_small", None, api_name="/check_dataset")
    finally:
        demo.close()
    assert "All clear" in card
    # No ImageNet weights on this machine (or turned off): the label line says it was skipped, not faked.
    assert "not checked" in card or "simple classifier" in card
