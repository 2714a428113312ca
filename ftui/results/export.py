"""Export a trained run as a file that loads without ftui: a torch.export program (.pt2), ONNX (.onnx) or
the weights as .safetensors (with the run's metadata in the file's header).

Both take a float batch `image` of shape (N, 3, H, W), already resized, center-cropped and normalised
the way the run was validated (the sizes, mean and std travel inside the file as metadata), and return
`logits` (N, classes). The batch dimension is dynamic. Each export is checked against the PyTorch model
on the run's own val images: the largest absolute logit difference is measured and must be <= 1e-4.
The plain checkpoint (best.pt, `torch.load(weights_only=True)`) stays as it is.

A .safetensors export holds only tensors (the state_dict of the run's torchvision/timm model) plus string
metadata: `ftui` (the JSON of `metadata()`: classes, preprocessing, task, backbone). `load_safetensors`
rebuilds the model from it; `--weights FILE.safetensors` starts a new run from it.

CLI: `python -m ftui export RUN_DIR --format pt2|onnx|safetensors [--out FILE]`.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftui.errors import FtuiError
from ftui.results.loading import LoadedRun, load_run
from ftui.runs import atomic_path, write_bytes_atomic

FORMATS = ("pt2", "onnx", "safetensors")
PARITY_TOLERANCE = 1e-4
# Enough val images to catch a wrong export, few enough to check in a second or two on a CPU.
PARITY_IMAGES = 16
MAX_BATCH = 4096

log = logging.getLogger(__name__)


class ExportError(FtuiError):
    """A format that is unknown or needs a package that is not installed, or an export that does not match."""


@dataclass
class ExportResult:
    """Where the file went and how closely it matched the PyTorch model."""

    path: Path
    format: str
    max_abs_diff: float | None  # None when the check could not run (onnxruntime missing)
    images_checked: int
    note: str = ""
    int8: Any = None  # an ftui.results.quantize.Int8Report for --int8


def metadata(run: LoadedRun) -> dict:
    """What a user of the exported file needs: classes and the preprocessing the run was validated with."""
    t = run.transform
    return {"run": run.id, "backbone": run.config.backbone, "task": getattr(run.config, "task", "classification"),
            "classes": list(run.classes),
            "input": "float32 (N, 3, image_size, image_size), RGB scaled to 0..1, then (x - mean) / std",
            "image_size": int(t["image_size"]), "resize_size": int(t["resize_size"]),
            "mean": [float(v) for v in t["mean"]], "std": [float(v) for v in t["std"]],
            # Calibration and "none of these" (ftui/results/trust.py), so a user of the file gets ftui's answers.
            "temperature": float(run.trust.temperature), "abstain_below_energy": run.trust.energy_threshold,
            "answers": "probabilities = softmax(logits / temperature); 'unknown' when logsumexp(logits) < "
                       "abstain_below_energy; 'unsure' when the runner-up has at least half the top probability",
            **_none_of_these(run),
            **({"members": [m["run"] for m in run.members]} if run.members else {}),
            **_task_outputs(run)}


def _none_of_these(run: LoadedRun) -> dict:
    """The score ftui itself answers "unknown" with. A feature-space score needs the pooled features and the
    fitted statistics, which the exported graph does not output: they are in the .pt export's "trust"."""
    trust = run.trust
    if trust.ood_method == "energy":
        return {"ood_method": "energy"}
    return {"ood_method": trust.ood_method, "abstain_below_score": trust.threshold,
            "ood_score": "ftui answers 'unknown' when -min_c ||W (f - mean_c)||^2 < abstain_below_score, f the "
                         "pooled features the last layer reads; mean_c and W are in the .pt export's "
                         "trust.features (means, whiten). This graph outputs logits only: with it alone use "
                         "abstain_below_energy"}


def _task_outputs(run: LoadedRun) -> dict:
    """How to read the logits: softmax (classification), sigmoid per label with its threshold (multilabel), or
    logits * target_std + target_mean in the user's units (regression)."""
    if run.kind == "regression":
        return {"task": "regression", "outputs": "value = logits * target_std + target_mean",
                "target_mean": [float(v) for v in run.task.mean], "target_std": [float(v) for v in run.task.std]}
    if run.kind == "multilabel":
        from ftui.results.predict import Predictor

        return {"task": "multilabel", "outputs": "probability = sigmoid(logits); a label is on at its threshold",
                "thresholds": Predictor(run).thresholds()}
    return {"task": "classification"}


def val_images(run: LoadedRun, limit: int = PARITY_IMAGES) -> list[str]:
    """Up to `limit` of the run's own val images, every class in turn; [] when its data cannot be read."""
    from ftui.results.predict import val_examples

    return [path for path, _ in val_examples(run, limit)]


def named_checkpoint(run: LoadedRun | str | Path) -> Path:
    """The run's best (else last) checkpoint as `<run>/export/<run id>.pt`, so a download is named after it."""
    from ftui.runs import RunError, RunFolder

    folder = RunFolder(run.path if isinstance(run, LoadedRun) else Path(run))
    source = folder.best_path if folder.best_path.is_file() else folder.last_path
    if not source.is_file():
        raise RunError(f"{folder.path} has no checkpoint yet")
    if source.is_symlink():  # its download would be whatever file the link leads to
        raise RunError(f"{source.name} in {folder.id} is a link: a run's checkpoints are read only as files in "
                       "its own folder")
    target = folder.path / "export" / f"{folder.id}.pt"
    if not target.is_file() or target.stat().st_mtime_ns != source.stat().st_mtime_ns:
        target.parent.mkdir(exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)  # same file, no copy; replaced when training writes a new best.pt
        except OSError:
            shutil.copy2(source, target)
    return target


def sample_batch(run: LoadedRun, limit: int = PARITY_IMAGES) -> tuple[torch.Tensor, int]:
    """The val images as the model sees them, and how many were real images (random tensors otherwise)."""
    from ftui.results.predict import Predictor

    paths = val_images(run, limit)
    if len(paths) >= 2:
        predictor = Predictor(run)
        return predictor.tensors(paths), len(paths)
    size = int(run.transform["image_size"])
    return torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0)), 0


def _dynamic_batch() -> dict:
    return {"image": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}


class _Named(torch.nn.Module):
    """Wraps the model so the exported input is called `image` (a clearer name than `x` or `input`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)


def export_pt2(run: LoadedRun, path: Path, batch: torch.Tensor) -> float:
    """torch.export with a dynamic batch, saved with the metadata; returns the max abs diff on `batch`."""
    model = _Named(run.model.float()).eval()
    program = torch.export.export(model, (batch[:2],), dynamic_shapes=_dynamic_batch())
    # Serialised in memory, then written atomically: torch's own file writer aborts the whole process
    # (c10::Error, SIGABRT) when the disk fills, and leaves a truncated file at the final path.
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"ftui.json": json.dumps(metadata(run))})
    write_bytes_atomic(path, buffer.getvalue())
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    with torch.no_grad():
        return float((loaded(batch) - model(batch)).abs().max())


def export_onnx(run: LoadedRun, path: Path, batch: torch.Tensor) -> float | None:
    """torch.onnx.export (dynamo) with a dynamic batch and metadata; max abs diff via onnxruntime or None."""
    try:
        import onnxscript  # noqa: F401 - torch.onnx's dynamo exporter needs it; say so before it fails deep inside
    except ImportError:
        raise ExportError("ONNX export needs onnx, onnxscript and onnxruntime (default dependencies of ftui): "
                          "reinstall with `pip install -e .`") from None
    model = _Named(run.model.float()).eval()
    program = torch.onnx.export(model, (batch[:2],), dynamo=True, input_names=["image"],
                                output_names=["logits"], dynamic_shapes=_dynamic_batch(), verbose=False)
    for key, value in metadata(run).items():
        program.model.metadata_props[key] = json.dumps(value)
    # One self-contained file (weights inside), the thing a user downloads and loads elsewhere; written to a
    # temp file and renamed, so a full disk leaves nothing at `path`.
    with atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"image": batch.numpy()})
    with torch.no_grad():
        return float((torch.from_numpy(got) - model(batch)).abs().max())


def export_safetensors(run: LoadedRun, path: Path, batch: torch.Tensor) -> float:
    """The state_dict as .safetensors with the metadata; reloaded into a fresh model, max abs diff on `batch`."""
    from safetensors.torch import save

    from ftui.runs import write_bytes_atomic

    model = run.model.float().eval()
    # Copies: safetensors refuses tensors that share memory, and a copy never does.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    write_bytes_atomic(path, save(state, metadata={"ftui": json.dumps(metadata(run)), "format": "pt"}))
    loaded, _meta = load_safetensors(path)
    with torch.no_grad():
        return float((loaded(batch) - model(batch)).abs().max())


def load_safetensors(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """The eval-mode model and metadata of an ftui .safetensors export (nothing in the file can run code)."""
    from safetensors import safe_open

    from ftui.models.backbones import build
    from ftui.models.weights import read_safetensors

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    if "ftui" not in header:
        raise ExportError(f"{path} has no ftui metadata: use it as a weights file (--weights) instead")
    meta = json.loads(header["ftui"])
    model = build(meta["backbone"], len(meta["classes"]), weights="none")
    model.load_state_dict(read_safetensors(path), strict=True)
    return model.eval(), meta


_EXPORTERS = {"pt2": export_pt2, "onnx": export_onnx, "safetensors": export_safetensors}


def export_run(run: LoadedRun | str | Path, fmt: str, out: str | Path | None = None,
               int8: bool = False) -> ExportResult:
    """Export `run` as `fmt` to `out` (default `<run>/export/<run id>.<fmt>`) and check it; ExportError on mismatch.

    int8=True (onnx only): the float file is written and checked as usual, then quantized into
    `<run id>.int8.onnx` (or `out`) and gated on val accuracy (ftui/results/quantize.py)."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if int8 and fmt != "onnx":
        raise ExportError("--int8 works with --format onnx only")
    run = run if isinstance(run, LoadedRun) else load_run(run)
    default = run.path / "export" / f"{run.id}.{fmt}"
    path = default if int8 or not out else Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch, real = sample_batch(run)
    diff = _EXPORTERS[fmt](run, path, batch)
    checked_on = f"{real} val images" if real else "random inputs (the run's images could not be read)"
    if diff is None:
        note = "not checked: install onnxruntime to compare it with PyTorch"
    elif diff > PARITY_TOLERANCE:
        raise ExportError(f"the {fmt} export differs from the PyTorch model by {diff:.2e} on {checked_on} "
                          f"(> {PARITY_TOLERANCE:g}); the file at {path} should not be used")
    else:
        note = f"max abs logit difference {diff:.1e} on {checked_on}"
    result = ExportResult(path=path, format=fmt, max_abs_diff=diff, images_checked=real, note=note)
    if int8:
        from ftui.results.quantize import quantize_onnx

        target = Path(out) if out else run.path / "export" / f"{run.id}.int8.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        result.int8 = quantize_onnx(run, path, target)
        result.path, result.note = target, f"float export: {note}; {result.int8.describe()}"
    return result


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """`ftui export RUN --format pt2|onnx|safetensors [--out FILE]`."""
    parser.add_argument("run_dir")
    parser.add_argument("--format", choices=FORMATS, default="pt2", dest="format")
    parser.add_argument("--out", help="the file to write (default: RUN/export/<run id>.<format>)")
    parser.add_argument("--int8", action="store_true",
                        help="with --format onnx: also an int8 model (static quantization calibrated on the run's "
                             "train images), refused if it loses over 0.5 points of val accuracy")


def run_cli(args: argparse.Namespace) -> int:
    result = export_run(args.run_dir, args.format, args.out, int8=args.int8)
    print(f"wrote {result.path} ({result.note})")
    return 0
