"""`python -m ftui check DATA [--json]`: the doctor's command line (the main CLI lazy-imports this)."""

from __future__ import annotations

import argparse
import json
import sys

from ftui.doctor.core import DEFAULT_BACKBONE, check
from ftui.doctor.report import DoctorError
from ftui.doctor.timing import timings_table


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The `check` subcommand's arguments."""
    parser.add_argument("data", metavar="DATA", help="folder of class folders, train/val[/test] folders, "
                        ".zip of either, or a CSV of path,label (path,labels with ';' for multilabel, path,value for "
                        "regression)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE,
                        help=f"backbone whose pretrained features drive the label check ({DEFAULT_BACKBONE})")
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' (when downloaded) or a weights file for the label check")
    parser.add_argument("--no-labels", action="store_true",
                        help="skip the feature-based label check (no model is loaded)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share held out for validation when DATA has no val/ folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of a generated train/val split")
    parser.add_argument("--task", default="auto", choices=["auto", "classification", "multilabel", "regression"],
                        help="what the labels are (default: a CSV's columns decide; 'regression' reads class "
                        "folders named by numbers as values)")
    parser.add_argument("--timings", action="store_true",
                        help="also print wall and CPU seconds per phase (load, model, scan, features, checks, "
                        "labels) to stderr: the doctor's benchmark")
    parser.add_argument("--max-rows", type=int, default=15, help="rows shown per check in the text report")


def run_cli(args: argparse.Namespace) -> int:
    """Run the doctor; 0 clean or warnings only, 1 errors found, 2 bad input."""
    def progress(fraction: float, message: str) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"\r{fraction:4.0%} {message:<50}", end="", file=sys.stderr, flush=True)

    try:
        report = check(args.data, labels=not args.no_labels, backbone=args.backbone, weights=args.weights,
                       val_fraction=args.val_fraction, seed=args.seed, progress=progress,
                       task=getattr(args, "task", "auto"))
    except (DoctorError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.json and sys.stderr.isatty():
        print("\r" + " " * 56 + "\r", end="", file=sys.stderr)
    if args.timings:
        print(timings_table(report.timings, report.cpu_timings, report.num_files), end="", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.to_text(max_rows=args.max_rows), end="")
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: `python -m ftui.doctor DATA`."""
    parser = argparse.ArgumentParser(prog="ftui check", description="Sanity-check a labeled image set.")
    add_cli_arguments(parser)
    return run_cli(parser.parse_args(argv))
