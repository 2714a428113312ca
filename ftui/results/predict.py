"""Top-k predictions from a trained run for PIL images or image paths, batched, with the model kept warm."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from ftui.errors import FtuiError
from ftui.results.loading import LoadedRun, load_run

ImageLike = Image.Image | str | Path
TABLE_COLUMNS = ["path", "label", "probability", "top_k", "verdict", "ood_score"]


class PredictError(FtuiError):
    """Bad prediction input (no images, top_k out of range)."""


def _as_run(run: LoadedRun | str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run, device=device)


def _resolve(device: str | torch.device) -> torch.device:
    from ftui.devices import pick_device

    return pick_device(device) if isinstance(device, str) and device == "auto" else torch.device(device)


class Predictor:
    """Keeps a run's model in eval mode on one device and answers predictions in batches.

    device "auto" takes the GPU when there is one; there the model runs BatchNorm-folded, channels_last and
    under the card's autocast (the CPU path stays float32 as validated)."""

    def __init__(self, run: LoadedRun | str | Path, device: str | torch.device = "cpu", batch_size: int = 32,
                 tta: bool = False, features: bool = False):
        self.device = _resolve(device)
        self.run = _as_run(run, "cpu" if self.device.type == "cuda" else self.device)
        self.model = self.run.model.to(self.device).eval()
        self.amp = False
        if self.device.type == "cuda":
            from ftui import devices
            from ftui.models.fusing import fuse_for_inference

            self.model = fuse_for_inference(self.model).to(memory_format=torch.channels_last)
            # As the run validated (ftui/train/batches.py SpeedSettings.val_amp): one model, one accuracy.
            self.amp = devices.amp_enabled(self.device, self.run.config.mixed_precision)
        self.classes = list(self.run.classes)
        self.transform = self.run.eval_transform()
        self.batch_size = batch_size
        # What the forward pass runs: the model, or (a run storing a feature-space "none of these" score)
        # the same model returning its logits and pooled features together (ftui/models/features.py).
        self.network, self.scorer, self._trust = self.model, None, self.run.trust
        self._with_features(features)
        # Test-time augmentation: the logits averaged over TTA_VIEWS views of each image (tta_views).
        self.tta = bool(tta)
        self._one = OneImageGraph(self) if self.device.type == "cuda" and not self.tta else None

    def _with_features(self, wanted: bool) -> None:
        """Run the logits-and-features network when the run stores a feature score, or when `wanted` (the
        post-training step fitting one: then the split is checked on an image first)."""
        from dataclasses import replace

        from ftui.models.families import head_path
        from ftui.models.features import with_features
        from ftui.results.trust import single_label

        if not single_label(self.run.config) or self.run.members:
            return
        if wanted:
            size = self.run.transform["image_size"]
            self.network = with_features(self.model, head_path(self.run.config.backbone), size) or self.model
            return
        scorer = self._trust.feature_score()
        if scorer is None:
            return
        split = with_features(self.model, head_path(self.run.config.backbone))
        if split is None or split.head.in_features != scorer.whiten.shape[0]:
            logging.getLogger(__name__).warning("run %s: its feature score does not fit its model; using the "
                                                "energy score", self.run.id)
            self._trust = replace(self._trust, ood_method="energy", ood_threshold=None, features=None)
            return
        self.network, self.scorer = split, scorer

    def _tensor(self, image: ImageLike) -> torch.Tensor:
        from PIL import ImageOps

        from ftui.data.imagecache import decode_for_cache, resize_for_cache
        from ftui.data.images import to_rgb

        size = self.run.transform["resize_size"]
        if isinstance(image, Image.Image):
            # An in-memory image gets the same upright/RGB handling a file does.
            return self.transform(resize_for_cache(to_rgb(ImageOps.exif_transpose(image)), size))
        # The same decode (JPEG draft scale included) and resize as the training cache, so predictions on
        # a file match validation exactly.
        return self.transform(decode_for_cache(image, size))

    def tensors(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """The batch the model sees for `images`: decoded, resized, cropped and normalised like validation."""
        return torch.stack([self._tensor(im) for im in images])

    @torch.inference_mode()
    def logits(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Raw scores, one row per image, computed `batch_size` images at a time."""
        return self._outputs(images)[:, :len(self.classes)]

    @torch.inference_mode()
    def logits_and_features(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, pooled penultimate features) from one pass; features None when the network has none."""
        out = self._outputs(images)
        c = len(self.classes)
        return out[:, :c], (out[:, c:] if out.shape[1] > c else None)

    @torch.inference_mode()
    def scored(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, "none of these" score) for every image from one forward pass; the score is the run's
        `trust.ood_method` (higher = more like the training images)."""
        from ftui.results.trust import energy_score

        out = self._outputs(images)
        logits = out[:, :len(self.classes)]
        return logits, (self.scorer(out[:, len(self.classes):]) if self.scorer is not None
                        else energy_score(logits))

    @torch.inference_mode()
    def _outputs(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """The network's output rows (logits, then features when it returns them)."""
        if len(images) == 0:
            raise PredictError("no images to predict")
        out = []
        if len(images) == 1:  # one image (the app's warm predict): no thread hand-off
            x = self._tensor(images[0])[None]
            return (self._one(x) if self._one is not None else self._forward(x)).float().cpu()
        from concurrent.futures import ThreadPoolExecutor

        from ftui.devices import decode_workers

        # Decoding dominates once the model is on a GPU: files are decoded on every core (PIL frees the GIL),
        # one batch ahead of the model (bounded memory however many images there are).
        chunks = [images[s:s + self.batch_size] for s in range(0, len(images), self.batch_size)]
        with ThreadPoolExecutor(max_workers=decode_workers(), thread_name_prefix="ftui-predict") as pool:
            ahead = [pool.submit(self._tensor, im) for im in chunks[0]]
            for k in range(len(chunks)):
                current = ahead
                ahead = [pool.submit(self._tensor, im) for im in chunks[k + 1]] if k + 1 < len(chunks) else []
                out.append(self._forward(torch.stack([f.result() for f in current])).float().cpu())
        return torch.cat(out)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.tta:
            views = tta_views(batch)
            return self._forward_once(torch.cat(views)).float().reshape(len(views), len(batch), -1).mean(0)
        return self._forward_once(batch)

    def _forward_once(self, batch: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cuda":
            return self.network(batch.to(self.device))
        x = batch.pin_memory().to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with self._autocast():
            return self.network(x)

    def _autocast(self):
        from ftui import devices

        return devices.autocast(self.device, self.amp)

    @property
    def trust(self):
        """The run's temperature and abstain threshold (T = 1 and no threshold for old runs)."""
        return self._trust

    def probabilities(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Calibrated probabilities softmax(logits / T), one row per image, columns in `classes` order."""
        from ftui.results.trust import calibrated

        return calibrated(self.logits(images), self.trust.temperature)

    @property
    def kind(self) -> str:
        return self.run.kind

    def outputs(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """What the run's task reads from the model (ftui/train/tasks.py): class probabilities, per-label
        probabilities (multilabel) or values in the user's units (regression); one row per image."""
        logits = self.logits(images)
        return self.run.task.outputs(logits) if self.run.task is not None else torch.softmax(logits, dim=1)

    def thresholds(self) -> list[float]:
        """Multilabel: each label's threshold chosen on val (the run's evaluation.json), else 0.5."""
        import json

        saved = self.run.path / "evaluation.json"
        try:
            data = json.loads(saved.read_text()) if saved.is_file() else {}
        except (OSError, ValueError):
            data = {}
        found = data.get("thresholds") if data.get("split") == "val" else None
        return [float(t) for t in found] if found and len(found) == len(self.classes) else [0.5] * len(self.classes)

    def predict(self, images: Sequence[ImageLike], top_k: int = 3) -> list[list[tuple[str, float]]]:
        """For each image the top-k (label, calibrated probability) pairs, most likely first. Multilabel: each
        label's own (sigmoid) probability; regression: (value name, value in the user's units) per output."""
        if self.kind != "classification":
            return self._task_predict(images, top_k)
        return [v.top for v in self.verdicts(images, top_k)]

    def _task_predict(self, images: Sequence[ImageLike], top_k: int) -> list[list[tuple[str, float]]]:
        if top_k < 1:
            raise PredictError(f"top_k must be >= 1, got {top_k}")
        probs = self.outputs(images)
        if self.kind == "regression":
            return [[(name, float(v)) for name, v in zip(self.classes, row)] for row in probs]
        values, indices = probs.topk(min(top_k, len(self.classes)), dim=1)
        return [[(self.classes[int(i)], float(v)) for v, i in zip(row_v, row_i)]
                for row_v, row_i in zip(values, indices)]

    def _task_table(self, images: Sequence[ImageLike]) -> pd.DataFrame:
        outputs = self.outputs(images).double().numpy()
        paths = [getattr(im, "filename", "") if isinstance(im, Image.Image) else str(im) for im in images]
        table = pd.DataFrame({"path": paths})
        if self.kind == "regression":
            for k, name in enumerate(self.classes):
                table[name] = outputs[:, k].round(6)
            return table
        cuts = self.thresholds()
        table["labels"] = [";".join(n for n, p, t in zip(self.classes, row, cuts) if p >= t) for row in outputs]
        for k, name in enumerate(self.classes):
            table[f"p_{name}"] = outputs[:, k].round(6)
        for k, name in enumerate(self.classes):
            table[f"threshold_{name}"] = cuts[k]
        return table

    def verdicts(self, images: Sequence[ImageLike], top_k: int = 3) -> list:
        """For each image a `ftui.results.trust.Verdict`: top-k, "none of these" score, class/unsure/unknown."""
        from ftui.results.trust import Trust, calibrated, judge, single_label

        if top_k < 1:
            raise PredictError(f"top_k must be >= 1, got {top_k}")
        k = min(top_k, len(self.classes))
        logits, scores = self.scored(images)
        probs = calibrated(logits, self.trust.temperature)
        # Other tasks (multi-label, regression) have no abstain threshold: never "unknown"/"unsure".
        trust = self.trust if single_label(self.run.config) else Trust()
        return [judge(p, self.classes, k, float(e), trust) for p, e in zip(probs, scores)]

    def predictions_table(self, images: Sequence[ImageLike], top_k: int = 3, verdicts: list | None = None) -> pd.DataFrame:
        """DataFrame(path, label, probability, top_k, verdict, ood_score): top_k as 'label:prob;label:prob',
        verdict the class, 'unknown' or 'unsure: A | B', ood_score the run's "none of these" score (low = unlike
        every class; `trust.ood_method`: mahalanobis, or energy for runs without feature statistics).
        `verdicts`: this call's `verdicts(images, top_k)` when the caller has them (no second forward pass)."""
        if self.kind != "classification":  # multilabel: labels + p_<label> + thresholds; regression: values
            return self._task_table(images)
        rows = []
        for image, v in zip(images, verdicts if verdicts is not None else self.verdicts(images, top_k)):
            path = getattr(image, "filename", "") if isinstance(image, Image.Image) else str(image)
            rows.append({
                "path": path, "label": v.top[0][0], "probability": round(v.top[0][1], 6),
                "top_k": ";".join(f"{label}:{prob:.4f}" for label, prob in v.top),
                "verdict": v.label, "ood_score": round(v.score, 4),
            })
        return pd.DataFrame(rows, columns=TABLE_COLUMNS)


TTA_CROP = 0.875  # the corner crops keep 87.5% of each side (the usual 224-of-256 ratio), then are resized back


def tta_views(batch: torch.Tensor) -> list[torch.Tensor]:
    """The validation view, its mirror image and four corner crops (zoomed back to size): 6 views.

    A mirror changes the meaning of some images (digits, text); bench-trust measures what TTA gains or
    costs on each set instead of assuming it helps."""
    import torch.nn.functional as F

    size = batch.shape[-1]
    side = max(1, round(size * TTA_CROP))
    views = [batch, batch.flip(-1)]
    for top, left in ((0, 0), (0, size - side), (size - side, 0), (size - side, size - side)):
        crop = batch[..., top:top + side, left:left + side]
        views.append(F.interpolate(crop, size=batch.shape[-2:], mode="bilinear", align_corners=False))
    return views


class OneImageGraph:
    """A CUDA graph of the predictor's model at one image, replayed for every one-image prediction.

    The eager forward launches every layer's kernels one by one from Python: on an H200 mobilenet_v2 took
    9.6-11.9 ms for one image, the replay of the same kernels 0.9-1.0 ms with identical outputs
    (scripts/gpu_profile.py, docs/gpu.md). Captured on first use (after two warm-up calls, so cuDNN's plans
    and lazily loaded kernels are ready), again when the input's shape changes; one lock serialises replays
    (they share the input and output buffers). If capturing fails the predictor stays eager."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.lock = threading.Lock()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.shape: tuple[int, ...] | None = None
        self.failed = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.predictor
        if self.failed:
            return p._forward(x)
        with self.lock:
            if self.graph is None or self.shape != tuple(x.shape):
                try:
                    self._capture(x)
                except Exception:  # logged; eager inference still answers
                    logging.getLogger(__name__).exception("CUDA graph capture failed: predicting eagerly")
                    self.failed, self.graph = True, None
                    return p._forward(x)
            self.input.copy_(x)
            self.graph.replay()
            return self.output.float().cpu()  # inside the lock: the next replay overwrites the buffer

    def _capture(self, x: torch.Tensor) -> None:
        p = self.predictor
        self.input = torch.empty(x.shape, device=p.device).contiguous(memory_format=torch.channels_last)
        self.input.copy_(x)
        side = torch.cuda.Stream(p.device)
        side.wait_stream(torch.cuda.current_stream(p.device))
        with torch.cuda.stream(side), p._autocast():
            for _ in range(2):
                p.network(self.input)
        torch.cuda.current_stream(p.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: a training job's CUDA calls in another thread neither break nor join the capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"), p._autocast():
            self.output = p.network(self.input)
        self.graph, self.shape = graph, tuple(x.shape)


def val_examples(run: LoadedRun, limit: int = 12) -> list[tuple[str, str]]:
    """(path, true class) of up to `limit` of the run's own val images (train when it has none), taking the
    classes in turn so every class shows; [] when the run's data can no longer be read. Multilabel and
    regression runs: (path, the label set or value as text)."""
    import logging

    from ftui.data.datasets import load_dataset

    try:
        dataset = load_dataset(run.config.data, val_fraction=run.config.val_fraction,
                               seed=run.config.data_seed, task=run.config.task)
    except (ValueError, OSError) as exc:
        logging.getLogger(__name__).warning("cannot reload %s for examples: %s", run.config.data, exc)
        return []
    items = dataset.split("val") or dataset.split("train")
    if dataset.task != "classification":  # the truth is the label set or the value(s)
        from ftui.data.tasks import target_text

        return [(item.path, target_text(dataset.task, dataset.classes, item.target)) for item in items[:limit]]
    by_class: dict[int, list] = {}
    for item in items:
        by_class.setdefault(item.label, []).append(item)
    picked: list[tuple[str, str]] = []
    for rank in range(max((len(v) for v in by_class.values()), default=0)):
        for label in sorted(by_class):
            if rank < len(by_class[label]) and len(picked) < limit:
                picked.append((by_class[label][rank].path, dataset.classes[label]))
    return picked


def predict(run: LoadedRun | str | Path, images: Sequence[ImageLike], top_k: int = 3) -> list[list[tuple[str, float]]]:
    """One-shot top-k prediction (use `Predictor` to keep the model warm across calls)."""
    return Predictor(run).predict(images, top_k)
