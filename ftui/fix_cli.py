"""`ftui fix relabel|remove|merge ...` and `ftui undo DATA`: the fix loop's command line (see ftui.data.fixes)."""

from __future__ import annotations

import argparse

from ftui.data import fixes


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The `fix` subcommand: one action per call, each journaled in the dataset folder."""
    actions = parser.add_subparsers(dest="action", required=True)
    p = actions.add_parser("relabel", help="move images into another class folder (same split)")
    p.add_argument("data", help="the dataset folder")
    p.add_argument("to_class", metavar="CLASS")
    p.add_argument("paths", nargs="+", help="images, relative to DATA or absolute inside it")
    p = actions.add_parser("remove", help="move images into DATA/_removed/ (the loader ignores it)")
    p.add_argument("data")
    p.add_argument("paths", nargs="+")
    p = actions.add_parser("merge", help="move every image of one class into another")
    p.add_argument("data")
    p.add_argument("from_class", metavar="FROM")
    p.add_argument("to_class", metavar="INTO")
    p = actions.add_parser("log", help="the journal, newest first")
    p.add_argument("data")
    for sub in actions.choices.values():
        sub.add_argument("--workdir", default=None,
                         help="where an edited copy of a read-only dataset goes (default: none, refuse)")


def run_cli(args: argparse.Namespace) -> int:
    """Apply one fix and print what moved; errors are FixError (a ValueError: exit 2, no traceback)."""
    if args.action == "log":
        for entry in fixes.history(args.data):
            state = " (undone)" if entry["undone"] else ""
            print(f"#{entry['id']} {entry['time']} {entry['op']}{state}: "
                  + ", ".join(f"{a} -> {b}" for a, b in entry["moves"]))
        return 0
    if args.action == "merge":
        results = [fixes.merge(args.data, args.from_class, args.to_class, workdir=args.workdir)]
    elif args.action == "relabel":
        results = [fixes.relabel(args.data, p, args.to_class, workdir=args.workdir) for p in args.paths]
    else:
        results = [fixes.remove(args.data, p, workdir=args.workdir) for p in args.paths]
    for result in results:
        print(result.message)
        for src, dst in result.moves:
            print(f"  {src} -> {dst}")
    return 0


def add_undo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="the dataset folder (or its edited copy)")
    parser.add_argument("--workdir", default=None)


def run_undo(args: argparse.Namespace) -> int:
    """Undo the newest change in DATA's journal."""
    result = fixes.undo(args.data, workdir=args.workdir)
    print(f"undid {result.entry['undid']} #{result.entry['undoes']}: {len(result.moves)} file(s) moved back")
    return 0
