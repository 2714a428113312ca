"""int8 ONNX: `ftui export RUN --format onnx --int8`.

The float ONNX export (checked against PyTorch as always) is quantized with onnxruntime's static
quantization: QDQ format, int8 weights per channel, uint8 activations whose ranges are calibrated on the
run's own train images (eval preprocessing, no augmentation, up to CALIBRATION_IMAGES of them, classes in
turn). The parity gate is accuracy, not logits (int8 logits differ by design): on the run's val images the
int8 model's accuracy must be within MAX_ACCURACY_DROP points of the float model's, both run in onnxruntime,
else the export is refused and the file removed. The result says the size ratio and the CPU latency ratio
(batch 1, median of LATENCY_REPEATS runs, one thread each, measured right after one another).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftui.errors import FtuiError

CALIBRATION_IMAGES = 128
# The val images the gate compares on (all of them up to this bound; an export should not take minutes).
MAX_GATE_IMAGES = 2000
MAX_ACCURACY_DROP = 0.5  # points of val accuracy
LATENCY_REPEATS = 30
BATCH = 32


class QuantizeError(FtuiError):
    """An int8 model that loses too much accuracy, or onnxruntime's quantization missing."""


@dataclass
class Int8Report:
    """What the int8 file costs and gains against the float one, measured on this run's images."""

    path: Path
    float_accuracy: float
    int8_accuracy: float
    images: int
    calibration_images: int
    float_bytes: int
    int8_bytes: int
    float_latency_ms: float
    int8_latency_ms: float

    @property
    def drop_points(self) -> float:
        return 100 * (self.float_accuracy - self.int8_accuracy)

    def describe(self) -> str:
        return (f"int8: val accuracy {self.int8_accuracy:.4f} vs float {self.float_accuracy:.4f} on "
                f"{self.images} images ({self.drop_points:+.2f} points lost), calibrated on "
                f"{self.calibration_images} train images; size {self.int8_bytes / 2**20:.2f} MB vs "
                f"{self.float_bytes / 2**20:.2f} MB ({self.int8_bytes / self.float_bytes:.2f}x); CPU latency "
                f"batch 1 {self.int8_latency_ms:.2f} ms vs {self.float_latency_ms:.2f} ms "
                f"({self.int8_latency_ms / self.float_latency_ms:.2f}x)")


def _split_items(run, split: str, limit: int) -> list[tuple[str, int]]:
    """(path, label) of up to `limit` of the run's `split` images, classes in turn."""
    from ftui.data.datasets import load_dataset

    dataset = load_dataset(run.config.data, val_fraction=run.config.val_fraction, seed=run.config.data_seed)
    by_class: dict[int, list] = {}
    for item in dataset.split(split):
        by_class.setdefault(item.label, []).append(item)
    picked: list[tuple[str, int]] = []
    for rank in range(max((len(v) for v in by_class.values()), default=0)):
        for label in sorted(by_class):
            if rank < len(by_class[label]) and len(picked) < limit:
                picked.append((by_class[label][rank].path, label))
    return picked


def _batches(run, paths: list[str]):
    from ftui.results.predict import Predictor

    predictor = Predictor(run)
    for start in range(0, len(paths), BATCH):
        yield predictor.tensors(paths[start:start + BATCH]).numpy()


class _Calibration:
    """onnxruntime's CalibrationDataReader over the run's train images, one batch at a time."""

    def __init__(self, run, paths: list[str]) -> None:
        self.batches = _batches(run, paths)

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {"image": batch}

    def rewind(self) -> None:  # onnxruntime >= 1.19 may call it; one pass is all static calibration needs
        pass


def _session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _accuracy(session, run, items: list[tuple[str, int]]) -> float:
    correct = 0
    labels = np.array([label for _, label in items])
    done = 0
    for batch in _batches(run, [p for p, _ in items]):
        (logits,) = session.run(["logits"], {"image": batch})
        correct += int((logits.argmax(1) == labels[done:done + len(batch)]).sum())
        done += len(batch)
    return correct / max(len(items), 1)


def _latency_ms(session, image: np.ndarray) -> float:
    session.run(["logits"], {"image": image})  # warm-up
    times = []
    for _ in range(LATENCY_REPEATS):
        start = time.perf_counter()
        session.run(["logits"], {"image": image})
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def quantize_onnx(run, float_path: Path, out: Path) -> Int8Report:
    """Quantize the float export at `float_path` into `out`, gate it on val accuracy, measure it."""
    try:
        from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static
    except ImportError:
        raise QuantizeError("int8 export needs onnxruntime (pip install onnxruntime)") from None
    calibration = [p for p, _ in _split_items(run, "train", CALIBRATION_IMAGES)]
    if not calibration:
        raise QuantizeError("int8 calibration needs the run's train images, and none could be read")
    prepared = out.with_name(f".{out.stem}.prepared.onnx")
    try:
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), _Calibration(run, calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    gate = _split_items(run, "val", MAX_GATE_IMAGES) or _split_items(run, "train", MAX_GATE_IMAGES)
    float_session, int8_session = _session(float_path), _session(out)
    one = next(_batches(run, [gate[0][0]]))
    report = Int8Report(path=out, float_accuracy=_accuracy(float_session, run, gate),
                        int8_accuracy=_accuracy(int8_session, run, gate), images=len(gate),
                        calibration_images=len(calibration), float_bytes=float_path.stat().st_size,
                        int8_bytes=out.stat().st_size, float_latency_ms=_latency_ms(float_session, one),
                        int8_latency_ms=_latency_ms(int8_session, one))
    if report.drop_points > MAX_ACCURACY_DROP:
        out.unlink(missing_ok=True)
        raise QuantizeError(f"the int8 model loses {report.drop_points:.2f} points of val accuracy "
                            f"(> {MAX_ACCURACY_DROP}): not written. {report.describe()}")
    return report
