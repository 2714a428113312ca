"""`python app.py`: the ftui web app (Gradio). Opens with a built-in demo dataset, so Train works at once."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description="Fine-tune a pretrained image classifier in the browser.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for the network)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also publish a temporary public Gradio link")
    parser.add_argument("--runs-dir", default="runs", help="where runs (checkpoints, metrics) are saved")
    parser.add_argument("--data-root", default=None,
                        help="allow loading datasets and weights from folders under this path on the server")
    parser.add_argument("--workdir", default=None,
                        help="uploads and the demo dataset (default: ~/.cache/ftui)")
    parser.add_argument("--auth", default=None, metavar="USER:PASS",
                        help="require this login (shared demos); 10 failed logins a minute from one address get 429")
    parser.add_argument("--max-upload", default="1gb", metavar="SIZE",
                        help="largest single uploaded file (e.g. 500mb, 2gb; default 1gb)")
    parser.add_argument("--work-quota", default="20gb", metavar="SIZE",
                        help="most disk uploads and extracted zips may take under the work dir (default 20gb)")
    parser.add_argument("--trusted-proxy", default="", metavar="ADDR[,ADDR]",
                        help="a reverse proxy whose X-Forwarded-For is believed (default: none; the login "
                             "throttle then counts each TCP peer, so behind a proxy all clients share one count)")
    parser.add_argument("--allow-data-root-edits", action="store_true",
                        help="let the app's fixes (relabel/remove/merge) change datasets under --data-root in place "
                             "(default: each session's fixes go to its own copy, within --work-quota)")
    parser.add_argument("--max-jobs-per-address", type=int, default=3, metavar="N",
                        help="unfinished training jobs one client address may have (default 3)")
    parser.add_argument("--max-jobs-per-session", type=int, default=2, metavar="N",
                        help="unfinished training jobs one browser session may have (default 2)")
    parser.add_argument("--max-job-images", type=int, default=1_000_000, metavar="N",
                        help="most epochs x training images one job from the app may train (default 1000000)")
    parser.add_argument("--gpus", default="1", metavar="N|all",
                        help="GPUs each training job gets: N, or all visible ones (DistributedDataParallel)")
    parser.add_argument("--demo", default=None, metavar="RUN_DIR",
                        help="serve only a locked predict page (upload, webcam, Grad-CAM, model card) for this run")
    parser.add_argument("--title", default=None,
                        help="with --demo: the model's name on the page and its card (kept in the run's card.json)")
    parser.add_argument("--description", default=None,
                        help="with --demo: a sentence or two on what the model is for (kept in card.json)")
    return parser.parse_args(argv)


def gpu_count(value: str) -> int:
    """--gpus N | all: the number of GPUs a job gets (at least 1)."""
    if value == "all":
        import torch

        return max(1, torch.cuda.device_count())
    try:
        count = int(value)
    except ValueError:
        raise SystemExit(f"--gpus must be a number or 'all', got {value!r}") from None
    if count < 1:
        raise SystemExit("--gpus must be >= 1")
    return count


def job_limits(args: argparse.Namespace) -> dict[str, int]:
    """The per-client job limits (AppSettings fields), each at least 1."""
    limits = {"max_jobs_per_address": args.max_jobs_per_address, "max_jobs_per_session": args.max_jobs_per_session,
              "max_job_images": args.max_job_images}
    for name, value in limits.items():
        if value < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return limits


def main(argv: list[str] | None = None) -> None:
    """Build and launch the app."""
    from ftui.errors import configure_logging

    args = parse_args(argv)
    configure_logging()  # ftui's log lines on stderr; each run's also in its log.txt
    auth = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise SystemExit("--auth must look like user:password")
        auth = (user, password)
    data_root = Path(args.data_root).expanduser().resolve() if args.data_root else None
    if data_root is not None and not data_root.is_dir():
        raise SystemExit(f"--data-root {args.data_root} is not a folder")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ftui"
    workdir = Path(args.workdir).expanduser().resolve() if args.workdir else cache
    if args.demo:
        from ftui.runs import RunError
        from ftui.ui.demo_page import build_demo_page
        from ftui.ui.layout import demo_launch_options

        try:
            if args.title is not None or args.description is not None:
                from ftui.results.modelcard import write_card_text

                write_card_text(Path(args.demo).expanduser(), args.title, args.description)
            page, page_ctx = build_demo_page(Path(args.demo).expanduser(), workdir)
        except RunError as exc:
            raise SystemExit(f"--demo: {exc}") from None
        page.queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, share=args.share, auth=auth,
            **demo_launch_options(page_ctx.settings))
        return
    from ftui.ui import AppSettings, build_app, launch_options
    from ftui.ui.guard import parse_size

    try:
        max_upload, work_quota = parse_size(args.max_upload), parse_size(args.work_quota)
    except ValueError as exc:
        raise SystemExit(f"--max-upload / --work-quota: {exc}") from None
    settings = AppSettings(runs_dir=Path(args.runs_dir).expanduser().resolve(),
                           workdir=workdir,
                           data_root=data_root, max_upload_bytes=max_upload, work_quota_bytes=work_quota,
                           gpus=gpu_count(args.gpus), trusted_proxy=args.trusted_proxy,
                           allow_data_root_edits=args.allow_data_root_edits, **job_limits(args))
    demo, _ = build_app(settings)
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, share=args.share, auth=auth, **launch_options(settings))


if __name__ == "__main__":
    main()
