"""Where ftui's GPU training step spends its time, with candidate fixes toggled, in one device call.

    PYTHONUNBUFFERED=1 python3 scripts/gpu_profile.py --out $OUT            # on the CUDA machine
    python3 scripts/gpu_profile.py --device cpu --small --shared ../shared --out /tmp/p   # dry run here

The parent runs each measurement in a fresh child process (cuDNN's algorithm cache is per process, and
environment variables such as FTUI_CUDNN_BENCHMARK or TORCH_CUDNN_V8_API_DISABLED act at the first use), one
per --variants environment, and stops launching children when its time budget is spent. After every child
it rewrites the summary (stdout and OUT/summary.txt) and OUT/results.json.

Children:
- bench: like `ftui bench` (same configs): head-only fit timed from the dataset scan to its first batch (the
  "first metric"), then the all-layers fit with every batch's end synchronised and timed, then the warm
  one-image predict split into decode+transform, eager forward, and a CUDA-graph replay of the same forward.
  The runs use the bench's own settings (bench_config: from-scratch settings for weights "none").
- step: the engine's step by hand on the GPU data path: augmentation alone, a synthetic step (the bench's
  compute limit), the engine-like step with and without its per-step host syncs, the first call at a new
  batch size (what cuDNN autotuning costs per shape), and torch.profiler's top ops over three steps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn, device, repeats: int, warm: int = 2) -> float:
    for _ in range(warm):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


# --- child: the bench's runs with every batch timed ------------------------------------------------------

def _timeline(device):
    from ftui.train.callbacks import Callback

    class SyncTimeline(Callback):
        """Batch and epoch ends (GPU work finished) in seconds from `start`."""

        def __init__(self) -> None:
            self.start = time.perf_counter()
            self.batches: list[dict] = []
            self.epochs: list[dict] = []

        profile_epoch: int | None = None
        profiled: dict | None = None

        def on_epoch_start(self, info) -> None:
            if info["epoch"] == self.profile_epoch:
                from torch.profiler import ProfilerActivity, profile

                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
                self._prof = profile(activities=acts)
                self._prof.__enter__()
                self._t0 = time.perf_counter()

        def on_validate_start(self, info) -> None:
            if info["epoch"] == self.profile_epoch and getattr(self, "_prof", None) is not None:
                _sync(device)
                wall = time.perf_counter() - self._t0
                self._prof.__exit__(None, None, None)
                steps = max(1, sum(1 for b in self.batches if b['epoch'] == info['epoch']))
                self.profiled = _top_ops(self._prof, wall * 1000, device, steps)
                self._prof = None

        def on_batch_end(self, info) -> None:
            _sync(device)
            self.batches.append({"epoch": info["epoch"], "phase": info["phase"],
                                 "at": time.perf_counter() - self.start})

        def on_epoch_end(self, info) -> None:
            self.epochs.append({"epoch": info["epoch"], "phase": info["phase"], "val_acc": info["val_acc"],
                                "seconds": info["seconds"], "at": time.perf_counter() - self.start})

    return SyncTimeline()


def _fit(config, dataset, model, backbone, device, run_dir=None, profile_epoch=None):
    from ftui.models.backbones import layer_groups
    from ftui.train.trainer import fit

    tl = _timeline(device)
    tl.profile_epoch = profile_epoch
    t0 = time.perf_counter()
    result = fit(config, dataset, model, layer_groups(model, backbone), [tl], threading.Event(), run_dir=run_dir)
    wall = time.perf_counter() - t0
    epochs = []
    prev_end = 0.0
    for e in tl.epochs:
        marks = [b["at"] for b in tl.batches if b["epoch"] == e["epoch"]]
        steps = [b - a for a, b in itertools.pairwise(marks)]
        epochs.append({
            "epoch": e["epoch"], "phase": e["phase"], "val_acc": e["val_acc"], "seconds": round(e["seconds"], 3),
            "to_first_batch": round(marks[0] - prev_end, 3) if marks else None,
            "later_batches_ms": [round(1000 * s, 1) for s in steps],
            "validate_s": round(e["at"] - marks[-1], 3) if marks else None,
        })
        prev_end = e["at"]
    return {"status": result.status, "message": result.message, "wall": round(wall, 3),
            "best": result.best_val_acc, "first_batch": round(tl.batches[0]["at"], 3) if tl.batches else None,
            "epochs": epochs, "notes": list(result.notes), "profile": tl.profiled}


def _predict_split(run_dir: Path, image: str, device) -> dict:
    from ftui.results.predict import Predictor

    p = Predictor(run_dir, device=device)
    out = {"total_ms": _median_ms(lambda: p.predict([image]), device, 15, warm=3)}
    out["decode_transform_ms"] = _median_ms(lambda: p._tensor(image), device, 15)
    x = p._tensor(image)[None]
    out["forward_cpu_copy_ms"] = _median_ms(lambda: p._forward(x).float().cpu(), device, 15)
    if device.type != "cuda":
        return out
    try:
        out.update(_graph_forward(p, x, device))
    except Exception as exc:  # noqa: BLE001 - the other figures still come back
        out["graph_error"] = repr(exc)[:300]
    return out


def _graph_forward(p, x, device) -> dict:
    import torch

    from ftui import devices

    out = {}
    static = x.to(device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        eager = p._forward(x).float()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                with devices.autocast(device, p.amp):
                    p.model(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), devices.autocast(device, p.amp):
            static_out = p.model(static)

        def replay():
            static.copy_(x.to(device, non_blocking=True), non_blocking=True)
            graph.replay()
            return static_out.float().cpu()

        out["graph_forward_cpu_copy_ms"] = _median_ms(replay, device, 15)
        out["graph_max_abs_diff"] = float((replay().to(device) - eager).abs().max())
    return out


def child_bench(args) -> dict:
    import torch

    from ftui import devices
    from ftui.bench.speed import BenchOptions, bench_config
    from ftui.data.datasets import load_dataset
    from ftui.models.backbones import build
    from ftui.runs import RunStore

    data = str(Path(args.shared) / "data" / "hymenoptera_data")
    weights = args.weights
    out: dict = {"env": {k: v for k, v in os.environ.items() if k.startswith(("FTUI_", "TORCH_CUDNN"))}}
    t0 = time.perf_counter()
    base = bench_config(BenchOptions(data, args.backbone, weights, args.epochs, args.batch, args.image_size,
                                     args.device))
    dataset = load_dataset(data, val_fraction=base.val_fraction, seed=base.seed)
    model = build(args.backbone, len(dataset.classes), weights=weights)
    pristine = {k: v.clone() for k, v in model.state_dict().items()}
    device = devices.pick_device(args.device)
    out["setup_s"] = round(time.perf_counter() - t0, 3)
    tmp = Path(tempfile.mkdtemp(prefix="ftui-gpuprof-"))
    head_config = base.replace(train_groups="head")
    folder = RunStore(tmp).create(head_config, tmp / "head")
    folder.write_classes(dataset.classes)
    head = _fit(head_config, dataset, model, args.backbone, device, run_dir=folder.path)
    # The bench's "first metric": from the dataset scan to the head-only fit's first batch.
    out["first_metric_s"] = round(head["first_batch"] + out["setup_s"], 3) if head["first_batch"] else None
    out["torch_cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    out["head_only"] = head

    def fresh():
        model.load_state_dict(pristine)
        for p in model.parameters():
            p.requires_grad_(True)
        return model.train()

    # torch.profiler over the last epoch's training batches (the engine's own step, warm).
    out["all_layers"] = _fit(base.replace(train_groups="all"), dataset, fresh(), args.backbone, device,
                             profile_epoch=args.epochs)
    out["predict"] = _predict_split(folder.path, str(dataset.split("val")[0].path), device)
    return out


# --- child: the step by hand ------------------------------------------------------------------------------

def child_step(args) -> dict:
    import torch
    from torch import nn

    from ftui import devices
    from ftui.config import AugConfig, TrainConfig
    from ftui.data import gpudata
    from ftui.data.batchaug import BatchAugment
    from ftui.data.datasets import load_dataset
    from ftui.models.backbones import build
    from ftui.train.batches import transform_settings

    data = str(Path(args.shared) / "data" / "hymenoptera_data")
    config = TrainConfig(data=data, backbone=args.backbone, weights=args.weights, batch_size=args.batch,
                         image_size=args.image_size, device=args.device)
    device = devices.pick_device(args.device)
    devices.configure_threads()
    devices.configure_device(device)
    out: dict = {"cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if device.type == "cuda" else None}
    dataset = load_dataset(data, val_fraction=config.val_fraction, seed=config.seed)
    items = dataset.split("train")
    s = transform_settings(config)
    store = gpudata.make_store(device, len(items), s["resize_size"])
    pipeline = BatchAugment(AugConfig(), s["image_size"], s["mean"], s["std"], s["resize_size"])
    batches = gpudata.DeviceBatches(store, [(str(it.path), int(it.label)) for it in items], pipeline,
                                    args.batch, seed=0)
    t0 = time.perf_counter()
    xs = list(batches(torch.arange(len(items)), augmented=True))  # decode every file once, first pass
    _sync(device)
    out["first_pass_decode_aug_s"] = round(time.perf_counter() - t0, 3)
    out["store_where"] = store.where
    x0, y0 = xs[0]
    idx = list(range(args.batch))
    gen = torch.Generator().manual_seed(1)
    images = [store.get(batches.paths[i]) for i in idx]
    out["aug_ms"] = _median_ms(lambda: pipeline(images, gen), device, 8)

    model = build(args.backbone, len(dataset.classes), weights=args.weights).to(device)
    channels_last = devices.use_channels_last(model, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()  # frozen statistics: the engine's default
    use_amp = devices.amp_enabled(device, True) and device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    crit = nn.CrossEntropyLoss(reduction="sum")
    synth = torch.randn_like(x0)

    def step(x, y, syncs: bool):
        opt.zero_grad(set_to_none=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with devices.autocast(device, use_amp):
            logits = model(x)
            loss = crit(logits.float(), y) / float(y.shape[0])
        if syncs and not torch.isfinite(loss):
            raise RuntimeError("loss not finite")
        loss.backward()
        opt.step()
        if syncs:
            return float(loss.detach()), int((logits.detach().argmax(1) == y).sum())
        return loss.detach(), (logits.detach().argmax(1) == y).sum()

    out["step_synthetic_ms"] = _median_ms(lambda: step(synth, y0, False), device, 10, warm=3)
    out["step_engine_syncs_ms"] = _median_ms(lambda: step(pipeline(images, gen), y0, True), device, 10)
    out["step_engine_nosync_ms"] = _median_ms(lambda: step(pipeline(images, gen), y0, False), device, 10)
    out["step_fixed_batch_syncs_ms"] = _median_ms(lambda: step(x0, y0, True), device, 10)
    # A new batch size: what the first call at a shape costs (cuDNN autotuning when benchmark is on).
    n_new = max(1, args.batch - 12)
    t0 = time.perf_counter()
    step(x0[:n_new], y0[:n_new], True)
    _sync(device)
    out["first_call_new_batch_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    out["second_call_new_batch_ms"] = round(_median_ms(lambda: step(x0[:n_new], y0[:n_new], True), device, 3,
                                                       warm=0), 1)
    model.eval()
    with torch.inference_mode():
        t0 = time.perf_counter()
        with devices.autocast(device, devices.amp_enabled(device, True)):
            model(x0[:n_new - 3].contiguous(memory_format=torch.channels_last) if channels_last else x0[:n_new - 3])
        _sync(device)
    out["first_eval_call_new_batch_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    out["profile"] = _profile(lambda: step(pipeline(images, gen), y0, True), device)
    return out


def _profile(fn, device, steps: int = 3) -> dict:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    _sync(device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        _sync(device)
    return _top_ops(prof, 1000 * (time.perf_counter() - t0), device, steps)


def _top_ops(prof, wall_ms: float, device, steps: int = 1) -> dict:
    """Top ops per step by self CUDA and self CPU time; total kernel time vs wall time."""
    events = prof.key_averages()
    cuda_key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"

    def rows(key: str, n: int = 12):
        top = sorted(events, key=lambda e: getattr(e, key, 0) or 0, reverse=True)[:n]
        return [{"op": e.key[:60], "calls": e.count // steps,
                 "self_cpu_ms": round(e.self_cpu_time_total / 1000 / steps, 3),
                 "self_cuda_ms": round((getattr(e, cuda_key, 0) or 0) / 1000 / steps, 3)} for e in top]

    kernel_ms = sum((getattr(e, cuda_key, 0) or 0) for e in events) / 1000 / steps
    return {"wall_ms_per_step": round(wall_ms / steps, 2), "gpu_self_ms_per_step": round(kernel_ms, 2),
            "top_cuda": rows(cuda_key) if device.type == "cuda" else [],
            "top_cpu": rows("self_cpu_time_total")}


# --- parent ---------------------------------------------------------------------------------------------

# Environment variants compared, each in fresh processes: "name:VAR=value,VAR=value;name2:..." (--variants).
# Run 1 (docs/gpu.md) compared FTUI_CUDNN_BENCHMARK=0 and 1; autotuning is now off by default. Next: cuDNN's
# legacy (v7) API, whose precompiled kernels may skip the per-shape plan building that cost 12 s a shape.
DEFAULT_VARIANTS = "default:;v7api:TORCH_CUDNN_V8_API_DISABLED=1"


def _variants(text: str) -> list[tuple[str, dict]]:
    out = []
    for part in filter(None, text.split(";")):
        name, _, assignments = part.partition(":")
        env = dict(a.split("=", 1) for a in filter(None, assignments.split(",")))
        out.append((name, env))
    return out


def _plan(args) -> list[tuple[str, list[str], dict]]:
    """(name, child argv, env): mobilenet_v2 then resnet50, each variant's bench then step."""
    mnv2 = ["--backbone", "mobilenet_v2", "--weights",
            str(Path(args.shared) / "weights" / "mobilenet_v2_imagenet_dequantized.pth")]
    r50 = ["--backbone", "resnet18" if args.small else "resnet50", "--weights", "none"]
    plan = []
    for model in (mnv2, r50):
        for name, env in _variants(args.variants):
            plan.append((f"bench {model[1]} {name}", ["bench", *model], env))
            plan.append((f"step {model[1]} {name}", ["step", *model], env))
    return plan


def _summary(results: dict) -> str:
    lines = []
    for name, r in results.items():
        if "error" in r:
            lines.append(f"== {name}: {r['error'][-600:]}")
            continue
        if name.startswith("bench"):
            al, ho = r["all_layers"], r["head_only"]
            lines.append(f"== {name} (child {r['child_s']} s): first metric {r['first_metric_s']} s "
                         f"(setup {r['setup_s']}), head-only wall {ho['wall']} best {ho['best']}; all layers wall "
                         f"{al['wall']} best {al['best']}")
            for e in al["epochs"]:
                lines.append(f"   epoch {e['epoch']} {e['phase']:<9} {e['seconds']:7.3f} s  to 1st batch "
                             f"{e['to_first_batch']} s, later batches ms {e['later_batches_ms']}, "
                             f"validate {e['validate_s']} s, val {e['val_acc']}")
            if al.get("profile"):
                _profile_lines(lines, al["profile"], "last epoch's training (engine)")
            lines.append("   predict ms: " + ", ".join(f"{k} {v:.3g}" for k, v in r["predict"].items()))
        else:
            keys = ("first_pass_decode_aug_s", "aug_ms", "step_synthetic_ms", "step_engine_syncs_ms",
                    "step_engine_nosync_ms", "step_fixed_batch_syncs_ms", "first_call_new_batch_ms",
                    "second_call_new_batch_ms", "first_eval_call_new_batch_ms")
            lines.append(f"== {name} (child {r['child_s']} s, store {r['store_where']}): "
                         + ", ".join(f"{k} {r[k]}" for k in keys))
            _profile_lines(lines, r["profile"], "3 engine-like steps")
    return "\n".join(lines)


def _profile_lines(lines: list[str], p: dict, what: str) -> None:
    lines.append(f"   profile of {what}: wall {p['wall_ms_per_step']} ms/step, GPU self "
                 f"{p['gpu_self_ms_per_step']} ms/step")
    for title, rows in (("top CUDA", p["top_cuda"][:8]), ("top CPU", p["top_cpu"][:8])):
        if rows:
            lines.append(f"   {title}: " + "; ".join(
                f"{x['op']} x{x['calls']} cpu {x['self_cpu_ms']} cuda {x['self_cuda_ms']}" for x in rows))


def parent(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    env_line = f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()}"
    if torch.cuda.is_available():
        env_line += f" card {torch.cuda.get_device_name(0)}"
    print(env_line, flush=True)
    start = time.perf_counter()
    results: dict = {}
    common = ["--device", args.device, "--shared", args.shared, "--epochs", str(args.epochs), "--batch",
              str(args.batch)] + (["--image-size", str(args.image_size)] if args.image_size else [])
    for name, argv, env in _plan(args):
        left = args.budget - (time.perf_counter() - start)
        if left < 25:
            results[name] = {"error": f"skipped: {left:.0f} s of the budget left"}
            continue
        t0 = time.perf_counter()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *argv, *common]
        try:
            proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False,
                                  timeout=min(args.child_timeout, left - 5), cwd=str(ROOT))
            last = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not last:
                results[name] = {"error": f"rc {proc.returncode}: {proc.stderr[-1500:]}"}
            else:
                results[name] = json.loads(last[-1])
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            results[name] = {"error": f"timed out after {time.perf_counter() - t0:.0f} s: {err[-800:]}"}
        results[name]["child_s"] = round(time.perf_counter() - t0, 1)
        text = env_line + "\n" + _summary(results)
        (out / "summary.txt").write_text(text + "\n")
        (out / "results.json").write_text(json.dumps(results, indent=1))
        print(_summary({name: results[name]}), flush=True)
    print("\n==== SUMMARY ====\n" + _summary(results), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs="?", const=None, default=None)
    ap.add_argument("kind", nargs="?")
    ap.add_argument("--out", default="/tmp/gpu_profile")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shared", default="shared")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image-size", dest="image_size", type=int, default=None)
    ap.add_argument("--small", action="store_true", help="CPU dry run: resnet18, small images, batch 8, 2 epochs")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help="name:VAR=value,...;name2:... (environments)")
    ap.add_argument("--budget", type=float, default=380.0, help="seconds for all children together")
    ap.add_argument("--child-timeout", dest="child_timeout", type=float, default=150.0)
    args = ap.parse_args()
    if args.small:
        args.image_size, args.batch, args.epochs = args.image_size or 64, 8, 2
    if args.child is None and args.kind is None:
        return parent(args)
    kind = args.child or args.kind
    t0 = time.perf_counter()
    result = (child_bench if kind == "bench" else child_step)(args)
    result["child_inner_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
