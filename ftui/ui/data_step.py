"""Step 1, Data: pick a dataset (demo, folder upload, .zip / CSV upload, server path) and inspect it."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ftui.errors import is_user_error, shown_message
from ftui.ui.charts import counts_frame
from ftui.ui.context import AppContext
from ftui.ui.folder_picker import folder_picker
from ftui.ui.guard import number, session_of
from ftui.ui.paths import PathNotAllowedError, is_inside, resolve_under
from ftui.ui.uploads import (
    MAX_FILES,
    UploadError,
    dataset_source,
    materialize_files,
    materialize_tree,
    materialize_zip,
    new_upload_dir,
    parse_manifest,
    zip_manifest,
)

log = logging.getLogger(__name__)

THUMBS_PER_CLASS = 4
THUMB_SIZE = 112

# Gradio spots a parameter defaulting to a Progress and hands each call its own tracker.
PROGRESS = gr.Progress()


@dataclass
class DataView:
    """The Data step's components other steps read, and what to run when the page loads."""

    source: gr.State
    val_fraction: gr.Slider
    task: gr.Dropdown
    on_load: Any
    load_inputs: list
    load_outputs: list


# The class-balance chart's colours. It shows no label badge: the badge pushed the chart down and its legend
# and class names were cut off at the bottom.
SPLIT_COLORS = {"train": "#4c78a8", "val": "#f58518", "test": "#54a24b"}
# The Data step splits train/val with this seed; training and the lr finder reuse exactly that split.
SPLIT_SEED = 0


def shown(ctx: AppContext, source: str | Path, val_fraction: float) -> Any:
    """The dataset as the Data step loaded and showed it (same split), or None when it was never loaded."""
    return ctx.datasets.get((str(source), round(float(val_fraction), 4), SPLIT_SEED))


TASK_CHOICES = ("auto", "classification", "multilabel", "regression")


def load(ctx: AppContext, source: str | Path, val_fraction: float, seed: int = SPLIT_SEED,
         progress: Any = None, task: str | None = None) -> Any:
    """Load (or reuse) a dataset and check that every file it names may be read. `task`: None/"auto" (a
    CSV's columns decide) or a task forced on the data (e.g. numbered class folders as regression)."""
    from ftui.data.datasets import load_dataset

    task = task if task in TASK_CHOICES[1:] else None
    key = (str(source), round(float(val_fraction), 4), int(seed)) + ((task,) if task else ())
    cached = ctx.datasets.get(key)
    if cached is not None:
        return cached
    # Zips extract once into the work dir (keyed by file), not into the system temp folder, within its quota;
    # a folder's links may not lead out of the allowed folder the dataset lies in.
    confine = next((root for root in ctx.dataset_roots() if is_inside(source, root)), None)
    dataset = load_dataset(str(source), val_fraction=float(val_fraction), seed=int(seed),
                           workdir=ctx.uploads_dir / "unzipped", progress=progress, allowed_root=confine,
                           extract_limit=ctx.quota_left(), task=task)
    ctx.check_dataset_files(dataset)
    return ctx.datasets.put(key, dataset)


def num_classes(ctx: AppContext, source: str) -> int:
    """Number of classes of a dataset (for sizing the model's head)."""
    return len(load(ctx, source, 0.2).classes)


def training_source(dataset: Any, source: Path) -> str:
    """What training reads: an extracted zip's folder rather than the zip (extracted once, here)."""
    return dataset.root if str(source).lower().endswith(".zip") else str(source)


def resolve_source(ctx: AppContext, source: str, session: str | None = None) -> Path:
    """"demo" (or empty) is the built-in dataset; else a path under --data-root, or this session's own upload."""
    if not isinstance(source, str) or len(source) > 4096:
        raise PathNotAllowedError("source_path must be a path of at most 4096 characters")
    text = source.strip()
    if text.lower() in ("", "demo"):
        return own_copy(ctx, ctx.demo_source(), session)
    # The demo and what this session uploaded itself are readable; another session's upload never is.
    if Path(text).is_absolute() and Path(text).exists() and ctx.readable(text, session) and \
            not (ctx.settings.data_root is not None and is_inside(text, ctx.settings.data_root)):
        return own_copy(ctx, Path(text).resolve(), session)
    roots = [ctx.settings.data_root] if ctx.settings.data_root is not None else []
    return own_copy(ctx, resolve_under(text, roots, what="dataset path"), session)


def own_copy(ctx: AppContext, source: Path, session: str | None) -> Path:
    """This session's edited copy of a shared dataset (the demo, a --data-root folder) once a fix made one:
    its later loads show its fixes; other sessions keep loading the original."""
    from ftui.data.fixes import edited_copy_path

    if not session or not source.is_dir() or not ctx.shared_dataset(source):
        return source
    copy = edited_copy_path(source, ctx.settings.workdir, session)
    return copy if copy.is_dir() and ctx.grants.allows(session, copy) else source


def thumbnails(dataset: Any, per_class: int = THUMBS_PER_CLASS) -> list[tuple[Any, str]]:
    """A few small images per class (PIL, so the originals are never served); multilabel and regression
    datasets: the first images, captioned with their label set or value."""
    from ftui.data.images import ImageError, open_rgb

    if getattr(dataset, "task", "classification") != "classification":
        return _task_thumbnails(dataset, per_class * 3)
    shown: dict[int, int] = {}
    out = []
    for item in dataset.items:
        if shown.get(item.label, 0) >= per_class:
            continue
        try:
            image = open_rgb(item.path, draft_size=THUMB_SIZE)
        except ImageError:
            continue
        image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        out.append((image, dataset.classes[item.label]))
        shown[item.label] = shown.get(item.label, 0) + 1
    # Class by class, so the grid reads as rows of examples.
    return sorted(out, key=lambda pair: dataset.classes.index(pair[1]))


def target_caption(dataset: Any, item: Any) -> str:
    """A multilabel item's labels ('cat;dog', '(no label)') or a regression item's value(s)."""
    if dataset.task == "multilabel":
        return ";".join(n for n, t in zip(dataset.classes, item.target) if t) or "(no label)"
    return ", ".join(f"{v:g}" for v in item.target)


def _task_thumbnails(dataset: Any, count: int) -> list[tuple[Any, str]]:
    from ftui.data.images import ImageError, open_rgb

    out = []
    for item in dataset.items[:count * 2]:
        if len(out) >= count:
            break
        try:
            image = open_rgb(item.path, draft_size=THUMB_SIZE)
        except ImageError:
            continue
        image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        out.append((image, target_caption(dataset, item)))
    return out


TASK_WORDS = {"classification": ("classes", "one class per image"),
              "multilabel": ("labels", "several labels per image (multilabel), from the CSV's label column(s)"),
              "regression": ("values", ("a number per image (regression), from the CSV's number column(s) or the "
                             "numbered folders"))}


def describe(dataset: Any, source: Path | str) -> str:
    """One paragraph: where the data came from, classes, images per split, skipped files."""
    splits = {name: len(dataset.split(name)) for name in ("train", "val", "test")}
    parts = [f"**{splits['train']}** train", f"**{splits['val']}** val"]
    if splits["test"]:
        parts.append(f"**{splits['test']}** test")
    split_note = " (val split drawn at random from the images)" if dataset.split_was_generated else ""
    skipped = f" · {len(dataset.skipped)} files skipped (see below)" if dataset.skipped else ""
    task = getattr(dataset, "task", "classification")
    word, what = TASK_WORDS[task]
    # Detected from a CSV's columns, or forced by the Task dropdown (`python -m ftui train --task` on the CLI).
    task_line = f"Task: **{task}**, {what}  \n"
    return (f"### Dataset ready: {len(dataset.classes)} {word}\n{task_line}"
            f"{' · '.join(parts)} images{split_note}{skipped}  \n<small>{Path(source).name}</small>")


def summary_table(dataset: Any) -> pd.DataFrame:
    """Class x split counts with the class as a column (for gr.Dataframe)."""
    table = dataset.summary()
    if "class" not in table.columns:
        table = table.reset_index().rename(columns={table.index.name or "index": "class"})
    return table


def show(ctx: AppContext, source: Path, val_fraction: float, progress: Any = None, task: str | None = None) -> tuple:
    """Load a source and build every output of the Data step."""
    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(0.05 + 0.75 * fraction, desc=message)

    report(0.0, "Scanning the dataset...")
    dataset = load(ctx, source, val_fraction, progress=report, task=task)
    if progress is not None:
        progress(0.8, desc="Making thumbnails...")
    table = summary_table(dataset)
    return (training_source(dataset, source), describe(dataset, source), table, counts_frame(table),
            thumbnails(dataset), dataset.skipped_table())


def checked_task(task: Any) -> str | None:
    """A task name from the browser or an API client: one of TASK_CHOICES (None for "auto"), else refused."""
    from ftui.ui.guard import InputError

    if task in (None, ""):
        return None
    if not isinstance(task, str) or task not in TASK_CHOICES:
        raise InputError(f"task must be one of {', '.join(TASK_CHOICES)}")
    return None if task == "auto" else task


def check_quota(ctx: AppContext, server_paths: list[str]) -> None:
    """Refuse an upload that would take the work dir over its quota (--work-quota)."""
    size = 0
    for path in server_paths:
        try:
            size += Path(path).stat().st_size if path else 0
        except OSError:
            continue
    left = ctx.quota_left()
    if size > left:
        raise UploadError(f"the upload needs {size / 2**20:.0f} MiB but only {left / 2**20:.0f} MiB of this "
                          "server's upload space (--work-quota) is left")


def uploaded(ctx: AppContext, run: Any, session: str | None, val_fraction: Any) -> tuple:
    """Run an upload handler in a fresh folder granted to this session only; a failed upload leaves nothing."""
    number("val_fraction", val_fraction, 0.01, 0.99, whole=False)
    dest = new_upload_dir(ctx.settings.workdir)
    unzipped = ctx.uploads_dir / "unzipped"
    before = set(unzipped.iterdir()) if unzipped.is_dir() else set()
    try:
        outputs = run(dest)
    except BaseException as exc:
        shutil.rmtree(dest, ignore_errors=True)
        # What this upload's zip unpacked to (extracted, then refused: one class, no images...) would count
        # against everyone's --work-quota for nothing.
        extractions = (set(unzipped.iterdir()) if unzipped.is_dir() else set()) - before
        for extracted in extractions:
            shutil.rmtree(extracted, ignore_errors=True)
        hide_server_paths(exc, {**{d: _zip_name(d) for d in extractions}, dest: "the upload"},
                          [ctx.settings.workdir, Path(gr.utils.get_upload_folder())])
        raise
    ctx.grants.grant(session, dest)
    ctx.grants.grant(session, outputs[0])  # an extracted zip lives in its own folder
    return outputs


def _zip_name(extracted: Path) -> str:
    """The upload's own name for the folder its zip was extracted to (`<stem>-<12 hex>`)."""
    return re.sub(r"-[0-9a-f]{12}$", "", extracted.name) + ".zip"


def hide_server_paths(exc: BaseException, names: dict[Path, str], folders: list[Path]) -> None:
    """Make a refused upload's message name the upload, never the server's folders (issue 20, finding 8):
    each path in `names` becomes its name there, anything else under `folders` its last part. The log keeps
    the full message."""
    if not is_user_error(exc) or callable(getattr(type(exc), "for_client", None)):
        return
    text = str(exc)
    for path, name in sorted(names.items(), key=lambda item: -len(str(item[0]))):
        for form in {str(path), str(path.resolve())}:
            text = text.replace(form, name)
    for folder in folders:
        for form in {str(folder), str(Path(folder).resolve())}:
            text = re.sub(re.escape(form) + r"[^\s'\",:;)]*", lambda m: Path(m.group(0)).name, text)
    exc.for_client = lambda: text  # shown_message shows this instead of str(exc)


HELP_TEXT = ("Images in one **subfolder per class** (or `train/` and `val/` folders holding them). The app opens "
             "with the demo dataset, so **Train** works at once; the card on the right always names the dataset "
             "in use.")
DEMO_TEXT = ("Generated textures in four classes (horizontal stripes, vertical stripes, checkerboard, dots) with "
             "random colours: a fair task that a small net learns from scratch in under a minute on a laptop CPU, "
             "no pretrained weights needed.")


def _finish(run, num_outputs: int) -> tuple:
    """Run one loader; turn its error into a message instead of a traceback."""
    try:
        return (*run(), "")
    except Exception as exc:  # noqa: BLE001 - shown: a user error's message, else logged as internal
        message = shown_message(log, exc, "load data")
        return (*(gr.skip() for _ in range(num_outputs - 1)), f"**Could not load the data:** {message}")


def task_dropdown() -> gr.Dropdown:
    """The Data step's task choice: auto (detected) or the task to read the data as."""
    return gr.Dropdown(list(TASK_CHOICES), value="auto", label="Task", elem_id="ftui-data-task",
                       info="auto: detected (a CSV's labels with ';' = multilabel, number columns = regression). "
                       "Force one here, e.g. numbered folders (0/, 5/, 10/) as regression.")


def _upload_handlers(ctx: AppContext, finish) -> tuple:
    """The folder-picker and file-upload handlers (`finish` turns their errors into the step's message)."""

    def upload_folder(manifest: str, val_fraction: float, task_name: str = "auto", request: gr.Request = None,
                      progress=PROGRESS):
        """Rebuild a folder picked in the browser (relative paths kept) and load it."""
        def run(dest: Path):
            packed = zip_manifest(manifest)  # small folders arrive as one zip packed by the browser
            if packed is not None:
                check_quota(ctx, [packed])
                root = materialize_zip(packed, dest, gr.utils.get_upload_folder(), ctx.quota_left())
            else:
                pairs = parse_manifest(manifest)
                check_quota(ctx, [server for _, server in pairs])
                root, _failed = materialize_tree(pairs, dest, gr.utils.get_upload_folder())
            return show(ctx, dataset_source(root), val_fraction, progress, checked_task(task_name))
        return finish(lambda: uploaded(ctx, run, session_of(request), val_fraction))

    def upload_data(files: list[str] | None, val_fraction: float, task_name: str = "auto",
                    request: gr.Request = None, progress=PROGRESS):
        """Load uploaded files: one .zip, or a CSV plus its images."""
        def run(dest: Path):
            check_quota(ctx, list(files or []))
            return show(ctx, materialize_files(list(files or []), dest), val_fraction, progress,
                        checked_task(task_name))
        return finish(lambda: uploaded(ctx, run, session_of(request), val_fraction))

    return upload_folder, upload_data


def build(ctx: AppContext) -> DataView:
    """Lay out the Data step and wire its events."""
    source = gr.State(str(ctx.demo_source()))
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            gr.Markdown(HELP_TEXT, elem_classes="ftui-help")
            with gr.Tabs(elem_id="ftui-data-sources"):
                with gr.Tab("Demo"):
                    gr.Markdown(DEMO_TEXT)
                    demo_button = gr.Button("Use the demo dataset")
                with gr.Tab("Upload a folder"):
                    picker = folder_picker(MAX_FILES)
                with gr.Tab("Upload .zip / CSV"):
                    files = gr.File(label="A .zip of the folder, or a CSV (path,label; path,labels with ';' for "
                                    "multilabel; path,value for regression) plus its images",
                                    file_count="multiple", file_types=[".zip", ".csv", "image"], height=150,
                                    elem_id="ftui-data-files")
                    upload_button = gr.Button("Load the uploaded files")
                with gr.Tab("Folder on this server"):
                    root = ctx.settings.data_root
                    gr.Markdown(f"Paths under `{root}` can be read." if root else
                                "Switched off: start the app with `--data-root DIR` to allow folders under DIR.")
                    path_box = gr.Textbox(label="Folder, .zip or .csv on the server", placeholder=str(root or ""),
                                          interactive=root is not None)
                    path_button = gr.Button("Load", interactive=root is not None)
            val_fraction = gr.Slider(0.05, 0.5, value=0.2, step=0.05, label="Validation share",
                                     info="Used when the data has no val/ folder.")
            task = task_dropdown()
            error = gr.Markdown(elem_classes="ftui-error", elem_id="ftui-data-error")
        with gr.Column(scale=3, min_width=420):
            status = gr.Markdown(elem_classes="ftui-card", elem_id="ftui-data-status")
            with gr.Row():
                table = gr.Dataframe(label="Images per class and split", interactive=False, max_height=430,
                                     elem_id="ftui-data-table")
                chart = gr.BarPlot(x="class", y="images", color="split", height=240, sort=None,
                                   label="Class balance", show_label=False, color_map=SPLIT_COLORS,
                                   elem_id="ftui-balance")
            gallery = gr.Gallery(label="A few images per class", columns=8, height=260, object_fit="cover",
                                 elem_id="ftui-data-gallery")
            with gr.Accordion("Skipped files", open=False):
                skipped = gr.Dataframe(label="Files that were left out, and why", interactive=False,
                                       max_height=220)

    outputs = [source, status, table, chart, gallery, skipped, error]

    def finish(run):
        return _finish(run, len(outputs))

    def load_data(source_path: str, val_fraction: float, task_name: str = "auto", request: gr.Request = None,
                  progress=PROGRESS):
        """Load a dataset by path: "demo", or a folder/.zip/.csv under --data-root; `task_name` "auto" (detected)
        or the task to read it as."""
        return finish(lambda: show(ctx, resolve_source(ctx, source_path, session_of(request)),
                                   number("val_fraction", val_fraction, 0.01, 0.99, whole=False), progress,
                                   checked_task(task_name)))

    upload_folder, upload_data = _upload_handlers(ctx, finish)

    demo_choice = gr.Textbox("demo", visible=False)
    # Named endpoints first: a private listener of the same function would otherwise take the plain name.
    path_button.click(load_data, [path_box, val_fraction, task], outputs, api_name="load_data")
    demo_button.click(load_data, [demo_choice, val_fraction, task], outputs, api_visibility="private")
    path_box.submit(load_data, [path_box, val_fraction, task], outputs, api_visibility="private")
    picker.change(upload_folder, [picker, val_fraction, task], outputs, api_visibility="private")
    upload_button.click(upload_data, [files, val_fraction, task], outputs, api_name="upload_data")
    # Another task: the loaded data read again as that task (the source is this session's or the demo).
    task.input(load_data, [source, val_fraction, task], outputs, api_visibility="private")
    return DataView(source=source, val_fraction=val_fraction, task=task, on_load=load_data,
                    load_inputs=[demo_choice, val_fraction, task], load_outputs=outputs)
