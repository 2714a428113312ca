"""Weight sources for a stock torchvision model: published ImageNet weights, a local file, or random init.

Every file is read with `torch.load(..., weights_only=True)` or, for `.safetensors` (timm and Hugging Face
checkpoints, ftui's own safetensors export), with `safetensors.torch.load_file`: a weights file never runs code.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ftui.errors import FtuiError
from ftui.models.families import default_weights, head_path

Progress = Callable[[float, str], None]

_CHUNK = 1 << 20
# Short: an offline machine should hear "no network" in seconds, not minutes.
DOWNLOAD_TIMEOUT_S = 15.0

# Old torchvision DenseNet checkpoints (including the published ones) name layers "norm.1" etc.
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
# GoogLeNet / Inception aux heads exist in the stock model only to accept published files; ftui drops them.
_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
# Wrappers that prefix every key: DataParallel / DistributedDataParallel, torch.compile.
_KEY_PREFIXES = ("module.", "_orig_mod.")


class WeightsError(FtuiError):
    """Weights that cannot be obtained or do not fit the model; the message says what to do."""


@dataclass
class WeightsReport:
    """What a weight source put into the model, printable by the UI and CLI."""

    source: str
    loaded_keys: int = 0
    skipped_head_keys: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    message: str = ""
    # Head tensors from the file, kept so `load_head_if_fits` can use them after the head swap.
    head_tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def _say(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def download_imagenet(name: str, progress: Progress | None = None, url: str | None = None,
                      cache_dir: str | Path | None = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch torchvision's published weights for `name` into the hub cache (or return the cached file).

    Written to a temporary file first and renamed, so an interrupted download never leaves a half file.
    """
    url = url or default_weights(name).url
    folder = Path(cache_dir) if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    filename = os.path.basename(urlparse(url).path)
    dest = folder / filename
    if dest.is_file():
        _say(progress, 1.0, f"{filename}: already in {folder}")
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            _say(progress, 0.0, f"downloading {filename}")
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                fraction = done / total if total else 0.0
                _say(progress, min(fraction, 1.0), f"downloading {filename}: {done / 1e6:.1f} MB")
        if total and done != total:
            raise OSError(f"got {done} of {total} bytes")
        os.replace(tmp_name, dest)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"could not download {filename} from {url} ({reason}). Without network access, download that "
            f"file on another machine and put it in {folder} as {filename}; or choose weights 'none' "
            f"or a local weights file."
        ) from None
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    _say(progress, 1.0, f"{filename}: saved to {folder}")
    return dest


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a bare state_dict or a checkpoint dict (`state_dict`/`model`), wrapper prefixes gone."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return _normalise_keys(read_safetensors(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same plain message
        raise WeightsError(
            f"{path} is not a PyTorch weights file ftui can read safely ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). "
            f"Save it with torch.save(model.state_dict(), ...)."
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path} holds no state_dict (a dict of tensors); got {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path} holds a dict but no tensors in it")
    return _normalise_keys(tensors)


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file (a flat name -> tensor table: nothing in it can run)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from None
    if not tensors:
        raise WeightsError(f"{path} holds no tensors")
    return tensors


def _normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _KEY_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        match = _DENSENET_KEY.match(key)
        if match:
            key = match.group(1) + match.group(2)
        out[key] = value
    return out


def _is_aux(key: str) -> bool:
    return key.startswith(_AUX_PREFIXES)


def load_state(model: nn.Module, name: str, state: dict[str, torch.Tensor], source: str) -> WeightsReport:
    """Load every tensor whose name and shape fit; head-shape differences are expected and kept aside."""
    head = head_path(name) + "."
    own = model.state_dict()
    fits: dict[str, torch.Tensor] = {}
    report = WeightsReport(source=source)
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape == value.shape:
            fits[key] = value
        elif key.startswith(head):
            report.skipped_head_keys.append(key)
            report.head_tensors[key] = value
        else:
            report.mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
    if not fits:
        sample_file = ", ".join(list(state)[:3])
        sample_model = ", ".join(list(own)[:3])
        raise WeightsError(
            f"none of the {len(state)} tensors in {source} fit {name}: it was probably saved from a "
            f"different architecture (file has {sample_file}, ...; {name} expects {sample_model}, ...)"
        )
    _check_finite({**fits, **report.head_tensors}, source)
    model.load_state_dict(fits, strict=False)
    report.loaded_keys = len(fits)
    # num_batches_tracked is a counter, not a weight; older published checkpoints predate it.
    report.missing = [k for k in own if k not in fits and not k.startswith(head) and not _is_aux(k)
                      and not k.endswith("num_batches_tracked")]
    # Aux-head tensors in a file are fine: the stock model has those heads until ftui drops them.
    report.unexpected = [k for k in report.unexpected if not _is_aux(k)]
    report.message = _describe(report, name)
    return report


def _check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a file with NaN or infinite weights: training from it fails at once with a NaN loss, which was
    blamed on the learning rate (issue 20, finding 12)."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"{source} holds NaN or infinite values in {len(bad)} of its tensors "
                           f"({_short(bad[:5])}{', ...' if len(bad) > 5 else ''}): the file is damaged or was "
                           "saved from a run that diverged; use another weights file")


def _describe(report: WeightsReport, name: str) -> str:
    parts = [f"{name}: loaded {report.loaded_keys} tensors from {report.source}"]
    if report.skipped_head_keys:
        parts.append(f"classification head not loaded (different number of classes): "
                     f"{', '.join(report.skipped_head_keys)}")
    if report.missing:
        parts.append(f"{len(report.missing)} model tensors not in the file, left at random init: "
                     f"{_short(report.missing)}")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} file tensors the model does not have, ignored: "
                     f"{_short(report.unexpected)}")
    if report.mismatched:
        parts.append(f"{len(report.mismatched)} tensors with a different shape, ignored: "
                     f"{_short(report.mismatched)}")
    return "; ".join(parts)


def _short(keys: list[str]) -> str:
    """Every key: a report that hides some mismatches hides the one that matters."""
    return ", ".join(keys)


def load_weights(model: nn.Module, name: str, source: str, progress: Progress | None = None) -> WeightsReport:
    """Put weights into the stock (1000-class) `model`: "imagenet", "none" (random init) or a file path."""
    if source == "none":
        _say(progress, 1.0, "random initialisation")
        return WeightsReport(source="none", message=f"{name}: random initialisation (no pretrained weights)")
    if source == "imagenet":
        if name.startswith("timm:"):
            from ftui.models.timm_models import missing_weights_message

            raise WeightsError(missing_weights_message(name))
        path = download_imagenet(name, progress=progress)
        state = read_state_dict(path)
        report = load_state(model, name, state, f"torchvision ImageNet weights ({path.name})")
        if report.missing or report.mismatched:
            raise WeightsError(
                f"{path} does not match {name} ({report.message}); delete the file so it is downloaded again"
            )
        return report
    report = load_state(model, name, read_state_dict(source), str(source))
    _say(progress, 1.0, f"loaded {report.loaded_keys} tensors from {source}")
    return report


def load_head_if_fits(model: nn.Module, name: str, report: WeightsReport) -> None:
    """After the head swap: load the file's head too when it has exactly the new head's shape."""
    if report.source == "none":
        return
    own = model.state_dict()
    held = report.head_tensors
    head = head_path(name) + "."
    head_keys = [k for k in own if k.startswith(head)]
    if held and all(k in held and held[k].shape == own[k].shape for k in head_keys):
        model.load_state_dict({k: held[k] for k in head_keys}, strict=False)
        report.loaded_keys += len(head_keys)
        report.skipped_head_keys = []
        report.message = _describe(report, name) + "; classification head loaded from the file (same classes)"
    else:
        report.message += "; new classification head (random init) for this dataset's classes"
