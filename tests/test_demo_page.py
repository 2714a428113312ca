"""The locked demo page (`python app.py --demo RUN_DIR`) and the model card it shows and writes."""

from __future__ import annotations

import re

import pytest
from ftui_app_server import free_port
from run_fixtures import make_quick_run

from ftui.results.modelcard import build_card, card_html, write_model_card


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_quick_run(tmp_path_factory.mktemp("demo-page"), image_size=64)


def test_model_card_is_a_standalone_page_with_the_runs_numbers(run_dir):
    card = build_card(run_dir)
    # No evaluation.json in the quick run: the card evaluated the val split itself.
    assert card.classes == ["blue", "green", "red"] and card.num_items == 3 and card.interval is not None
    assert len(card.samples) == 3 and {s["true"] for s in card.samples} == {"blue", "green", "red"}
    path = write_model_card(run_dir)
    text = path.read_text()
    assert path == run_dir / "model_card.html" and card_html(card) == text
    assert "95% interval" in text and "blue, green, red" in text
    assert text.count("src='data:image/jpeg;base64,") == 3
    assert not re.search(r"(src|href)=['\"]https?:", text), "the card must open offline"


@pytest.mark.slow
@pytest.mark.browser
def test_demo_page_is_locked_and_predicts_an_upload_with_grad_cam(run_dir, tmp_path):
    from browser_support import CHROMIUM, chromium  # skips without Playwright

    if not CHROMIUM.exists():
        pytest.skip("needs Debian's /usr/bin/chromium")
    import gradio_client

    from ftui.ui.demo_page import build_demo_page
    from ftui.ui.layout import demo_launch_options

    page_app, page_ctx = build_demo_page(run_dir, tmp_path / "work")
    page_app.queue(default_concurrency_limit=1)
    _, url, _ = page_app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True, **demo_launch_options(page_ctx.settings))
    try:
        assert (run_dir / "model_card.html").is_file()
        # Locked: the only named endpoint is predicting one image; nothing trains, lists or stops.
        api = gradio_client.Client(url, verbose=False).view_api(return_format="dict", print_info=False)
        assert list(api["named_endpoints"]) == ["/predict_image"]
        image = min((run_dir.parent.parent / "colours" / "red").glob("*.jpg"))
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
            page.wait_for_selector("#ftui-modelcard:has-text('Validation accuracy')", timeout=60_000)
            assert page.get_by_role("tab", name="4 · Train").count() == 0
            assert page.get_by_text("Use via API").count() == 0
            page.set_input_files("#ftui-demo-upload input[type=file]", str(image))
            page.wait_for_function("() => { const i = document.querySelector('#ftui-gradcam img');"
                                   " return !!(i && i.complete && i.naturalWidth > 0); }", timeout=60_000)
            assert page.locator("#ftui-label").inner_text().strip()
    finally:
        page_app.close()


@pytest.mark.slow
def test_the_owner_names_the_model_in_the_app_and_no_one_else_can(tmp_path):
    """Issue 23 item 11: the Evaluate step's "Name this model" (API /name_model) titles the run's model card and
    demo page; a client with another token, or none, is refused and the name stays."""
    import gradio_client
    from ftui_app_server import running_app

    from ftui.runs import RunStore
    from ftui.ui.guard import owner_stamp

    run = make_quick_run(tmp_path, image_size=32)
    with running_app(tmp_path, data_root=tmp_path / "colours") as (url, _ctx):
        client = gradio_client.Client(url, verbose=False)
        owner, stranger = client.predict(api_name="/new_token"), client.predict(api_name="/new_token")
        RunStore(run.parent).folder(run).update_status(**owner_stamp(owner))
        refused = client.predict(run.name, "Stolen name", "", stranger, api_name="/name_model")
        assert refused.startswith("**Not saved:**") and "only the browser" in refused
        anonymous = client.predict(run.name, "Stolen name", "", "", api_name="/name_model")
        assert anonymous.startswith("**Not saved:**")
        too_long = client.predict(run.name, "x" * 121, "", owner, api_name="/name_model")
        assert "at most 120 characters" in too_long
        saved = client.predict(run.name, "  Colour sorter ", "Tells red, green and blue apart.", owner,
                               api_name="/name_model")
        assert saved.startswith("Saved:") and "“Colour sorter”" in saved
    card = build_card(run)
    assert card.heading == "Colour sorter" and card.description == "Tells red, green and blue apart."
    assert "<h2>Colour sorter</h2>" in card_html(card)
