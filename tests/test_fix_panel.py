"""The fix panel's handlers (what its buttons call) on a real app context: a CSV dataset is fixed through its
edited copy and the Data step reloads it; Merge classes offers the dataset's classes and merges them."""

from __future__ import annotations

from pathlib import Path

from conftest import make_class_folder

from ftui.data import fixes
from ftui.ui.context import AppContext, AppSettings
from ftui.ui.fix_view import _Handlers


def _ctx(tmp_path: Path) -> AppContext:
    # The operator's consent to fixes in place (--allow-data-root-edits): without it a fix to a --data-root
    # dataset goes to a copy per session (tests/test_redteam2.py), and these tests are about the panel itself.
    return AppContext(AppSettings(runs_dir=tmp_path / "runs", workdir=tmp_path / "work", data_root=tmp_path,
                                  allow_data_root_edits=True))


def test_csv_dataset_is_fixed_from_the_panel_in_an_edited_copy(tmp_path):
    images = make_class_folder(tmp_path / "images", per_class=5)
    csv = tmp_path / "data.csv"
    csv.write_text("path,label\n" + "".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n"
                                           for p in sorted(images.rglob("*.jpg"))))
    h = _Handlers(_ctx(tmp_path), data_outputs=[None] * 6)
    image = str(images / "red" / "red_0.jpg")
    status, _journal, _sel, _box, shown, source, *_ = h.relabel(str(csv), image, "green", 0.2, [image])
    edited = csv.with_name("data-edited.csv")
    assert "relabel: 1 row changed in data-edited.csv" in status and shown == [image]
    assert source == str(edited)  # the Data step now shows the edited copy
    assert "red/red_0.jpg,green" in edited.read_text() and "red/red_0.jpg,red" in csv.read_text()
    status, *_ = h.undo(str(edited), "", "", 0.2, [])
    assert "undo: 1 row changed" in status and "red/red_0.jpg,red" in edited.read_text()


def test_merge_button_offers_the_classes_and_merges_with_undo(tmp_path):
    data = make_class_folder(tmp_path / "colours", per_class=4)
    h = _Handlers(_ctx(tmp_path), data_outputs=[None] * 6)
    assert h.class_choices(str(data), 0.2)["choices"] == ["blue", "green", "red"]
    status, *_ = h.merge(str(data), "blue", "", 0.2, [])
    assert "pick the class to merge" in status and (data / "blue").is_dir()
    shown = [str(data / "blue" / "blue_1.jpg")]
    status, _journal, _sel, _box, shown, *_ = h.merge(str(data), "blue", "green", 0.2, shown)
    assert "merge: 4 files moved" in status and not (data / "blue").exists()
    assert shown == [str(data / "green" / "blue_1.jpg")] and Path(shown[0]).is_file()
    assert h.class_choices(str(data), 0.2)["choices"] == ["green", "red"]
    h.undo(str(data), "", "", 0.2, [])
    assert len(list((data / "blue").iterdir())) == 4 and fixes.history(data)[0]["op"] == "undo"
