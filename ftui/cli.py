"""`python -m ftui ...`: the same engine without a browser.

Subcommands: backbones, summary, train, predict, evaluate, plus check and bench (from ftui.doctor and
ftui.bench), fix / undo (ftui.fix_cli) and compare (ftui.compare). Every user error prints
`error: <message>` to stderr and exits 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
from collections.abc import Sequence

from ftui.config import AugConfig, TrainConfig

EXIT_USER_ERROR = 2
EXIT_FAILED = 1
EXIT_STOPPED = 130


def _cmd_backbones(args: argparse.Namespace) -> int:
    from ftui.backbones import backbones_table

    print(backbones_table(all=args.all).to_string(index=False))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from ftui.data import load_dataset

    dataset = load_dataset(args.data, val_fraction=args.val_fraction, seed=args.seed)
    print(dataset.summary().to_string(index=False))
    note = " (generated split)" if dataset.split_was_generated else ""
    print(f"\n{len(dataset.items)} images, {len(dataset.classes)} classes{note}")
    if dataset.skipped:
        print(f"{len(dataset.skipped)} files skipped:")
        print(dataset.skipped_table().to_string(index=False))
    return 0


# Flags that override a --config file only when given (their argparse default is None).
_TRAIN_FLAGS = {
    "backbone": "backbone", "weights": "weights", "train_groups": "train_groups", "epochs": "epochs",
    "batch_size": "batch_size", "lr": "lr", "seed": "seed", "val_fraction": "val_fraction",
    "optimizer": "optimizer", "scheduler": "scheduler", "device": "device", "image_size": "image_size",
    "recipe": "recipe", "runs_dir": "runs_dir",
}


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A TrainConfig from --config (if given) with the explicitly given flags on top; validated."""
    config = TrainConfig.from_json(args.config) if args.config else TrainConfig()
    changes = {field: getattr(args, flag) for flag, field in _TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    if args.data:
        changes["data"] = args.data
    if args.no_augment:
        changes["aug"] = AugConfig.none()
    config = config.replace(**changes)
    config.validate()
    return config


def _cmd_train(args: argparse.Namespace) -> int:
    from ftui.callbacks import PrintProgress
    from ftui.devices import pick_device
    from ftui.jobs import Job
    from ftui.runs import RunStore

    config = train_config_from_args(args)
    device = pick_device(config.device).type
    printer = PrintProgress(lambda line: print(line, flush=True))
    job = Job(config, RunStore(config.runs_dir), device=device, run_dir=args.out, callbacks=[printer])
    thread = threading.Thread(target=job.run, name="ftui-train", daemon=True)
    thread.start()
    try:
        while not job.wait(0.2):
            pass
    except KeyboardInterrupt:
        print("stopping (Ctrl-C again to abort without saving)...", file=sys.stderr, flush=True)
        job.stop()
        job.wait()
    snap = job.snapshot()
    for note in snap["notes"]:
        if note not in printer.printed:
            print(note)
    if snap["run_dir"]:
        print(f"run folder: {snap['run_dir']}")
    if snap["status"] == "done":
        best = snap["best_val_acc"]
        print(f"done: best val accuracy {best:.4f} in {snap['elapsed_s']:.1f}s" if best is not None else "done")
        return 0
    if snap["status"] == "stopped":
        print(f"stopped: {snap['message']}", file=sys.stderr)
        return EXIT_STOPPED
    print(f"error: {snap['error'] or snap['message']}", file=sys.stderr)
    # A job that failed before training started is bad input (data, weights, config).
    return EXIT_FAILED if job.result is not None else EXIT_USER_ERROR


def _cmd_predict(args: argparse.Namespace) -> int:
    from ftui.predict import Predictor

    table = Predictor(args.run_dir, batch_size=args.batch_size).predictions_table(args.images, top_k=args.top_k)
    sys.stdout.write(table.to_csv(index=False))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ftui.evaluate import evaluate

    split = args.split or ("all" if args.data else "val")
    result = evaluate(args.run_dir, split=split, dataset=args.data)
    print(f"accuracy {result.accuracy:.4f} on {result.num_items} images ({split})")
    print(result.per_class.to_string(index=False))
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier and write a run folder")
    p.add_argument("data", nargs="?", help="dataset folder, .zip or .csv (optional with --config)")
    p.add_argument("--config", help="a run.json TrainConfig; flags given here override it")
    p.add_argument("--backbone")
    p.add_argument("--weights", help="imagenet | none | path to a weights file")
    p.add_argument("--train-groups", dest="train_groups", help="head | all | last:N | G1,G2")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--val-fraction", dest="val_fraction", type=float)
    p.add_argument("--optimizer", help="sgd | adam | adamw")
    p.add_argument("--scheduler", help="none | step | cosine | onecycle")
    p.add_argument("--recipe", help="fine_tune | plain")
    p.add_argument("--device", help="auto | cpu | cuda | mps")
    p.add_argument("--image-size", dest="image_size", type=int)
    p.add_argument("--runs-dir", dest="runs_dir", help="where runs/<id>/ go when --out is not given")
    p.add_argument("--out", help="the run folder to write (must be new or empty)")
    p.add_argument("--no-augment", dest="no_augment", action="store_true", help="switch augmentation off")
    p.set_defaults(func=_cmd_train)


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
    p.set_defaults(func=_cmd_backbones)
    p = sub.add_parser("summary", help="print a dataset's class x split counts")
    p.add_argument("data")
    p.add_argument("--val-fraction", dest="val_fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_summary)
    _add_train(sub)
    p = sub.add_parser("predict", help="top-k predictions as CSV: path,label,probability,top_k")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", dest="top_k", type=int, default=3)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=32)
    p.set_defaults(func=_cmd_predict)
    p = sub.add_parser("evaluate", help="accuracy and per-class table of a run")
    p.add_argument("run_dir")
    p.add_argument("data", nargs="?", help="another dataset to evaluate on (default: the run's val split)")
    p.add_argument("--split", choices=["train", "val", "test", "all"])
    p.set_defaults(func=_cmd_evaluate)
    _add_lazy(sub, "check", "ftui.doctor", "dataset health check")
    _add_lazy(sub, "bench", "ftui.bench", "speed benchmarks")
    _add_lazy(sub, "fix", "ftui.fix_cli", "relabel, remove or merge in a dataset folder (journaled)")
    p = sub.add_parser("undo", help="undo the newest fix in a dataset folder")
    from ftui.fix_cli import add_undo_arguments, run_undo
    add_undo_arguments(p)
    p.set_defaults(func=run_undo)
    _add_lazy(sub, "compare", "ftui.compare", "compare two runs: curves, per-class deltas, flipped images")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the subcommand; user errors print `error: ...` and return 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:  # every ftui *Error is a ValueError: a message for the user, not a traceback
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
