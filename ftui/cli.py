"""`python -m ftui ...`: the same engine without a browser.

Subcommands: backbones, summary, train, predict, evaluate, plus check and bench (from ftui.doctor and
ftui.bench.speed), fix / undo (ftui.fix_cli) and compare (ftui.results.compare). Every user error prints
`error: <message>` to stderr and exits 2, without a traceback; anything else (a bug, the environment) logs
its traceback and exits 1 (a training run's traceback also goes to its log.txt).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ftui.config import AugConfig, TrainConfig
from ftui.errors import FtuiError, configure_logging, log_failure

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
EXIT_FAILED = 1
EXIT_STOPPED = 130


def _cmd_backbones(args: argparse.Namespace) -> int:
    from ftui.models.backbones import backbones_table

    print(backbones_table(all=args.all, timm_pattern=args.timm or "").to_string(index=False))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from ftui.data.datasets import load_dataset

    dataset = load_dataset(args.data, val_fraction=args.val_fraction, seed=args.seed, task=args.task)
    print(dataset.summary().to_string(index=False))
    note = " (generated split)" if dataset.split_was_generated else ""
    what = {"multilabel": "labels", "regression": "values"}.get(dataset.task, "classes")
    print(f"\n{len(dataset.items)} images, {len(dataset.classes)} {what}{note}, task {dataset.task}")
    if dataset.skipped:
        print(f"{len(dataset.skipped)} files skipped:")
        print(dataset.skipped_table().to_string(index=False))
    return 0


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A TrainConfig from --config (if given) with the explicitly given flags on top; validated."""
    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    changes = {name: getattr(args, name) for name in args.config_fields if getattr(args, name) is not None}
    if args.data:
        changes["data"] = args.data
    if args.no_augment:
        changes["aug"] = AugConfig.none()
    config = config.replace(**changes)
    config.validate()
    return config


def _stop_on_signals(job) -> Callable[[], None]:
    """Ctrl-C and SIGTERM ask the job to stop, every time (a second one never aborts a write half-way).

    Returns a function that puts the previous handlers back.
    """
    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        again = job.status in ("stopping", "stopped")
        message = ("still stopping: finishing the current batch and saving last.pt" if again else
                   f"{name}: stopping after the current batch, keeping metrics.csv and last.pt...")
        print(message, file=sys.stderr, flush=True)
        job.stop()

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. called from a worker): leave signals alone
            pass

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return restore


def _cmd_train(args: argparse.Namespace) -> int:
    from ftui.train import distributed

    if args.resume:
        from ftui.train.resume import open_for_resume

        # The run's own config.json; it goes on in its folder, appending to metrics.csv.
        folder, config, _checkpoint = open_for_resume(args.resume)
        args.out = str(folder.path)
        dist = distributed.init_from_env(config.device)
        try:
            return _train(args, config, dist, resume=True)
        finally:
            distributed.shutdown()
    if args.nnodes is not None and distributed.env_world() is None:
        return _launch_elastic(args)
    if args.gpus is not None and args.gpus > 1 and distributed.env_world() is None:
        return _spawn_ranks(args)
    config = train_config_from_args(args)
    dist = distributed.init_from_env(config.device)  # joins torchrun's group; one process: nothing to join
    try:
        from ftui.train import elastic

        if elastic.is_elastic_worker() and args.out and elastic.prepare_restart(args.out, dist):
            return _resume_elastic(args, dist)
        if args.batch_size is None and not args.config:
            config = _default_batch(config, dist)
        return _train(args, config, dist)
    finally:
        distributed.shutdown()


def _launch_elastic(args: argparse.Namespace) -> int:
    """`train ... --nnodes N --rdzv-endpoint HOST:PORT`: this node's torchrun agent (ftui/train/elastic.py)."""
    import subprocess

    from ftui.train.distributed import _package_env
    from ftui.train.elastic import launch_command, launch_env

    command = launch_command(args.argv, args.nnodes, args.rdzv_endpoint, args.nproc_per_node or 1,
                             args.max_restarts, args.out, args.rdzv_id)
    proc = subprocess.Popen(command, env=launch_env(_package_env()))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return proc.wait()


def _resume_elastic(args: argparse.Namespace, dist) -> int:
    """A restarted worker group goes on from last.pt: rank 0 reopens the run, the others read its config."""
    from pathlib import Path

    from ftui.train.resume import open_for_resume

    if dist.is_main:
        _folder, config, _checkpoint = open_for_resume(args.out)
    dist.barrier()  # rank 0 has trimmed metrics.csv to last.pt's epoch before anyone trains
    if not dist.is_main:
        config = TrainConfig.from_file(Path(args.out) / "config.json")
    return _train(args, config, dist, resume=True)


def _train(args: argparse.Namespace, config: TrainConfig, dist, resume: bool = False) -> int:
    """Run one training job in a thread (Ctrl-C / SIGTERM stop it cleanly); rank 0 alone prints and writes."""
    from ftui.jobs import Job
    from ftui.runs import RunStore
    from ftui.train.callbacks import PrintProgress
    from ftui.train.trackers import make_trackers, parse_trackers

    device = dist.device.type
    printer = PrintProgress((lambda line: print(line, flush=True)) if dist.is_main else (lambda line: None))
    trackers = make_trackers(parse_trackers(getattr(args, "log", "")), config.runs_dir,
                             getattr(args, "tracking_uri", "") or "")
    job = Job(config, RunStore(config.runs_dir), device=device, run_dir=args.out, callbacks=[printer, *trackers],
              resume=resume)
    thread = threading.Thread(target=job.run, name="ftui-train", daemon=True)
    restore = _stop_on_signals(job)
    try:
        thread.start()
        # The thread is joined, never abandoned: leaving it inside torch at exit aborts the process (134).
        while thread.is_alive():
            thread.join(0.2)
    finally:
        if getattr(args, "from_command_line", False):
            # The run is over and this process only prints and exits. Interpreter shutdown puts the default
            # handlers back for signals Python handles (not for ignored ones), so a second Ctrl-C landing then
            # killed the process with SIGINT (-2) instead of the clean stop's 130: ignore late signals.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
        else:
            restore()
    snap = job.snapshot()
    if not dist.is_main:
        return 0 if snap["status"] in ("done", "stopped") else EXIT_FAILED
    for note in snap["notes"]:
        if note not in printer.printed:
            print(note)
    if snap["run_dir"]:
        print(f"run folder: {snap['run_dir']}")
    if snap["status"] == "done":
        best = snap["best_val_acc"]
        if str(snap.get("message") or "").startswith("stopped early"):
            print(snap["message"])  # why a 10-epoch run ended at 5, and which epoch best.pt is
        print(f"done: best val {_score_text(_run_task(snap['run_dir']), best)} in {snap['elapsed_s']:.1f}s"
              if best is not None else "done")
        _print_evaluation(snap["run_dir"])
        return 0
    if snap["status"] == "stopped":
        print(f"stopped: {snap['message']}", file=sys.stderr)
        return EXIT_STOPPED
    print(f"error: {snap['error'] or snap['message']}", file=sys.stderr)
    # A job that failed before training started on bad input (data, weights, config) is the user's to fix.
    return EXIT_USER_ERROR if job.result is None and not snap["internal_error"] else EXIT_FAILED


def _default_batch(config: TrainConfig, dist) -> TrainConfig:
    """On CUDA, with no --batch-size given: the batch free GPU memory allows (per GPU, times the GPUs)."""
    if dist.device.type != "cuda":
        return config
    from ftui.devices import default_batch_size, device_name
    from ftui.models.backbones import backbone_info, build

    size = config.image_size or backbone_info(config.backbone).input_size
    per_gpu = default_batch_size(build(config.backbone, 2, weights="none"), size, dist.device) if dist.is_main else 0
    batch = int(dist.broadcast(per_gpu)) * dist.world_size
    if dist.is_main:
        print(f"batch {batch}: picked from free memory on {device_name(dist.device)} "
              f"({per_gpu} per GPU; --batch-size sets it)", flush=True)
    return config.replace(batch_size=batch)


def _without_gpus(argv: Sequence[str]) -> list[str]:
    """argv with its --gpus N / --gpus=N removed (the processes torchrun starts are one each)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True
        elif not arg.startswith("--gpus="):
            out.append(arg)
    return out


def _spawn_ranks(args: argparse.Namespace) -> int:
    """`train ... --gpus N`: the same command as N processes under torchrun (DistributedDataParallel)."""
    import subprocess
    from pathlib import Path

    import torch

    from ftui.train.distributed import DistributedError, torchrun_command

    if args.device != "cpu" and torch.cuda.device_count() < args.gpus:
        raise DistributedError(f"--gpus {args.gpus}: this machine has {torch.cuda.device_count()} GPU(s) "
                         "(--device cpu runs N CPU processes instead)")
    env = dict(os.environ)
    # The processes import this ftui, wherever it lies (a checkout need not be installed).
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(torchrun_command(args.gpus, _without_gpus(args.argv)), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The terminal's Ctrl-C reached every process: let them stop cleanly and save.
        return proc.wait()


def _run_task(run_dir: str | None) -> str:
    """The task a run folder trained (its config.json), classification when it cannot say."""
    import json
    from pathlib import Path

    try:
        return str(json.loads((Path(run_dir or "") / "config.json").read_text()).get("task", "classification"))
    except (OSError, ValueError):
        return "classification"


def _score_text(task: str, score: float) -> str:
    """The trainer's best score in the task's words: accuracy, mAP, or MAE (the score is -MAE)."""
    from ftui.train.tasks import METRIC_NAMES, metric_value

    name = METRIC_NAMES.get(task, "accuracy")
    return f"{name} {metric_value(task, score):.4f}"


def _print_evaluation(run_dir: str | None) -> None:
    """The kept model's val numbers with their 95% intervals, from the run's evaluation.json."""
    import json
    from pathlib import Path

    from ftui.stats import format_accuracy

    path = Path(run_dir or "") / "evaluation.json"
    if run_dir and path.is_file():
        ev = json.loads(path.read_text())
        if ev.get("task", "classification") != "classification":
            print(f"val {_task_numbers(ev)}")
            return
        print(f"val accuracy {format_accuracy(ev['correct'], ev['num_items'])}, [95% Wilson interval] "
              "(correct/total)")


def _task_numbers(ev: dict) -> str:
    """One line of a multilabel or regression evaluation: each number with its [95% bootstrap interval]."""
    keys = (("map", "f1_at_val_thresholds", "f1_at_0.5", "exact_match") if ev["task"] == "multilabel"
            else ("mae", "rmse", "r2", "mae_mean_baseline"))

    def one(key):
        value, ci = ev.get(key), ev.get(f"{key}_ci95") or [None, None]
        if value is None:
            return f"{key} n/a"
        return f"{key} {value:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]" if None not in ci else f"{key} {value:.4g}"

    return ", ".join(one(k) for k in keys) + f" on {ev['num_items']} images, [95% bootstrap interval]"


def _cmd_predict(args: argparse.Namespace) -> int:
    from ftui.results.predict import Predictor

    predictor = Predictor(args.run_dir, device=args.device, batch_size=args.batch_size, tta=args.tta)
    table = predictor.predictions_table(args.images, top_k=args.top_k)
    sys.stdout.write(table.to_csv(index=False))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ftui.results.evaluate import evaluate

    split = args.split or ("all" if args.data else "val")
    result = evaluate(args.run_dir, split=split, dataset=args.data, device=args.device, ood=args.ood, tta=args.tta)
    if hasattr(result, "task"):  # multilabel / regression (ftui/results/taskeval.py)
        print(f"{split}: {_task_numbers(result.to_dict())}")
        table = result.metrics.get("per_label") or result.metrics.get("per_output")
        print(__import__("pandas").DataFrame(table).to_string(index=False))
        for note in result.notes:
            print(f"note: {note}")
        return 0
    print(f"accuracy {result.accuracy_text()} on {split} images{' with TTA' if args.tta else ''}, "
          "[95% Wilson interval] (correct/total)")
    print(result.per_class.to_string(index=False))
    cal = result.calibration
    if cal:
        print(f"calibration: temperature {cal['temperature']:.3f}, ECE (15 bins) {cal['ece_before']:.2%} with T = 1, "
              f"{cal['ece_after']:.2%} with T" + (f"; {cal['abstain_rate']:.1%} answered 'unknown'"
                                                 if "abstain_rate" in cal else ""))
    if result.ood:
        _print_ood(result.ood)
        _save_ood(args.run_dir, result.ood)
    for line in result.warnings:
        print(f"warning: {line}")
    return 0


def _print_ood(ood: dict) -> None:
    method = ood.get("method", "energy")
    others = [name for name in (method, "energy", "msp") if name in ood]
    print(f"none of these ({ood['num_out']} images of {ood['folder']} vs {ood['num_in']} in-distribution): "
          + "; ".join(f"{name}{' (used)' if name == method else ''} AUROC {ood[name]['auroc']:.3f}, "
                      f"FPR at 95% TPR {ood[name]['fpr95']:.3f}" for name in dict.fromkeys(others))
          + (f"; the stored threshold answers 'unknown' for {ood['unknown_rate']:.1%} of them"
             if "unknown_rate" in ood else ""))


def _save_ood(run_dir: str, ood: dict) -> None:
    """The OOD report into the run's evaluation.json ("ood"), so the model card can state it."""
    import json
    from pathlib import Path

    from ftui.runs import write_json_atomic

    path = Path(run_dir) / "evaluation.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        write_json_atomic(path, {**saved, "ood": ood})


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier and write a run folder",
                       description="Every TrainConfig field is a flag, in its group; a flag given overrides "
                                   "--config.")
    p.add_argument("data", nargs="?", help="dataset folder, .zip or .csv (optional with --config)")
    p.add_argument("--config", help="a run.json TrainConfig; flags given here override it")
    p.add_argument("--out", help="the run folder to write (must be new or empty)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="carry on an interrupted or stopped run from its last.pt (its own config; other flags ignored)")
    p.add_argument("--no-augment", dest="no_augment", action="store_true", help="switch augmentation off")
    p.add_argument("--gpus", type=int, default=None,
                   help="N: DistributedDataParallel over N GPUs of this machine (torchrun); with --device cpu, "
                        "N CPU processes (gloo)")
    p.add_argument("--nnodes", type=int, default=None,
                   help="N machines (torchrun, c10d rendezvous at --rdzv-endpoint); run the same command on each")
    p.add_argument("--rdzv-endpoint", dest="rdzv_endpoint", help="HOST:PORT of the rendezvous (one node's port)")
    p.add_argument("--rdzv-id", dest="rdzv_id", help="the job's rendezvous id (default: from --out's name)")
    p.add_argument("--nproc-per-node", dest="nproc_per_node", type=int, default=None,
                   help="worker processes per machine with --nnodes (default 1; one per GPU on GPU machines)")
    p.add_argument("--max-restarts", dest="max_restarts", type=int, default=0,
                   help="with --nnodes: restart the worker group up to K times; it resumes from last.pt")
    p.add_argument("--log", default="", help="run trackers, comma-separated: tensorboard (event files in the run "
                   "folder) | mlflow (a local MLflow store, sqlite in the runs folder)")
    p.add_argument("--tracking-uri", dest="tracking_uri", default="",
                   help="the MLflow tracking URI for --log mlflow (default sqlite:///RUNS_DIR/mlflow.db)")
    _add_config_flags(p)
    p.set_defaults(func=_cmd_train)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, grouped as the config is, help and range from the field's spec; a flag
    given overrides --config (default None). Flags defined above by hand are left as they are."""
    taken = set(p._option_string_actions)
    added = []
    for group, fields in TrainConfig.fields_by_group().items():
        section = p.add_argument_group(f"{group} settings")
        for f in fields:
            flag = "--" + f.name.replace("_", "-")
            if f.name in ("data", "aug") or flag in taken:
                continue
            kind = str(f.type)
            options: dict[str, Any] = {"dest": f.name, "default": None, "help": TrainConfig.hint(f.name)}
            if kind.startswith("bool"):
                options["action"] = argparse.BooleanOptionalAction
            else:
                options["type"] = int if kind.startswith("int") else float if kind.startswith("float") else str
                if f.metadata.get("choices"):
                    options["choices"] = f.metadata["choices"]
            section.add_argument(flag, **options)
            added.append(f.name)
    p.set_defaults(config_fields=added)


def _add_lazy(sub, name: str, module: str, help_text: str) -> None:
    """Register a subcommand implemented elsewhere; 'not available yet' when its module is missing."""
    p = sub.add_parser(name, help=help_text)
    try:
        mod = importlib.import_module(module)
        mod.add_cli_arguments(p)
        p.set_defaults(func=mod.run_cli)
    except (ImportError, AttributeError):
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args: _not_available(name))


def _not_available(name: str) -> int:
    print(f"error: `{name}` is not available yet", file=sys.stderr)
    return EXIT_USER_ERROR


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="ftui", description="Fine-tune pretrained image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backbones", help="list the backbone registry")
    p.add_argument("--all", action="store_true", help="every torchvision classification model")
    p.add_argument("--timm", metavar="PATTERN", help="the timm classifiers matching PATTERN (e.g. 'resnet*'), "
                   "usable as --backbone timm:<name>")
    p.set_defaults(func=_cmd_backbones)
    p = sub.add_parser("summary", help="print a dataset's class x split counts")
    p.add_argument("data")
    p.add_argument("--val-fraction", dest="val_fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", help="classification | multilabel | regression (default: detected)")
    p.set_defaults(func=_cmd_summary)
    _add_train(sub)
    p = sub.add_parser("predict", help="top-k predictions as CSV: path,label,probability,top_k,verdict,ood_score")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", dest="top_k", type=int, default=3)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one) | cpu | cuda | mps")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average flip + 4 corner crops")
    p.set_defaults(func=_cmd_predict)
    p = sub.add_parser("evaluate", help="accuracy and per-class table of a run")
    p.add_argument("run_dir")
    p.add_argument("data", nargs="?", help="another dataset to evaluate on (default: the run's val split)")
    p.add_argument("--split", choices=["train", "val", "test", "all"])
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one) | cpu | cuda | mps")
    p.add_argument("--ood", metavar="DIR", help="a folder of images from none of the classes: AUROC and FPR at "
                   "95%% TPR of the 'none of these' score (saved in evaluation.json)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average flip + 4 corner crops")
    p.set_defaults(func=_cmd_evaluate)
    _add_lazy(sub, "check", "ftui.doctor", "dataset health check")
    _add_lazy(sub, "bench", "ftui.bench.speed", "speed benchmarks")
    _add_lazy(sub, "export", "ftui.results.export", "export a run as .pt2, .onnx (optionally int8) or .safetensors")
    _add_lazy(sub, "sweep", "ftui.bench.sweep", "an Optuna hyperparameter sweep: every trial is a run")
    _add_lazy(sub, "fix", "ftui.fix_cli", "relabel, remove or merge in a dataset folder (journaled)")
    p = sub.add_parser("undo", help="undo the newest fix in a dataset folder")
    from ftui.fix_cli import add_undo_arguments, run_undo
    add_undo_arguments(p)
    p.set_defaults(func=run_undo)
    _add_lazy(sub, "compare", "ftui.results.compare", "compare two runs: curves, per-class deltas, flipped images")
    _add_lazy(sub, "ensemble", "ftui.results.ensemble", "combine finished runs into one (averaged calibrated probabilities)")
    _add_lazy(sub, "bench-trust", "ftui.bench.trust", "calibration, none-of-these, TTA and ensembles on a suite of sets")
    _add_lazy(sub, "make-variant", "ftui.data.variants", "a low-resolution / grayscale / rotated copy of a dataset")
    _add_lazy(sub, "bench-recipes", "ftui.bench.recipes", "the default recipe vs a linear probe and a hand fine-tune")
    _add_lazy(sub, "bench-tasks", "ftui.bench.tasks", "multilabel and regression: the default vs a hand fine-tune")
    _add_lazy(sub, "bench-history", "ftui.bench.history", "append bench results, render docs/bench-history.md")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the subcommand; user errors print `error: ...` and return 2."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.from_command_line = argv is None
    configure_logging(console=logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except FtuiError as exc:  # a message for the user, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except FileNotFoundError as exc:
        print(f"error: file not found: {exc.filename or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_STOPPED
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 0
    except Exception as exc:  # noqa: BLE001 - a bug or the environment: the traceback is logged (stderr)
        log_failure(log, exc, f"ftui {args.command}")
        print("error: internal error, details above", file=sys.stderr)
        return EXIT_FAILED
