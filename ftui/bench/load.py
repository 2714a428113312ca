"""`python -m ftui.bench.load --users 20 --minutes 10`: many simulated users against one app while a job trains.

Starts `python app.py` on 127.0.0.1 (a free port, its own temp runs/work folders, the demo textures under
--data-root), trains a short run to predict with, starts one long training job, measures its epoch time alone,
then lets N users loop (poll, evaluate, predict, live webcam frames, uploads) until the time is up, and stops
everything. Every prediction and evaluation is compared with the answer a single user got before the load, so
a mixed or lost result counts as a failure. Prints a table: calls, errors, wrong answers, p50/p95/max latency
per endpoint, the training epoch time alone and under load, and the machine's load average.

Bounded and self-stopping: the users stop at --minutes, the job is stopped and the app killed at the end (or on
Ctrl-C). It talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_CONFIG = {"backbone": "mobilenet_v3_small", "weights": "none", "train_groups": "all", "recipe": "plain",
              "bn_mode": "train", "image_size": 32, "batch_size": 16, "feature_cache": False}


@dataclass
class Tally:
    """Per-endpoint latencies and failures, shared by every user thread."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    wrong: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, endpoint: str, seconds: float, error: str = "", wrong: bool = False) -> None:
        with self.lock:
            self.latencies[endpoint].append(seconds)
            if error:
                self.errors[endpoint].append(error[:200])
            if wrong:
                self.wrong[endpoint] += 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(work: Path, data_root: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    log = open(work / "app.log", "w")  # noqa: SIM115 - closed when the process ends
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                             "--runs-dir", str(work / "runs"), "--workdir", str(work / "work"),
                             "--data-root", str(data_root)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited: {(work / 'app.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return url, proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the app did not start in 3 minutes")


def new_token(client) -> str:
    """A server-issued owner token when the app offers one, else a 128-bit one made here."""
    try:
        return client.predict(api_name="/new_token")
    except Exception:  # noqa: BLE001 - an app without /new_token
        return secrets.token_urlsafe(16)


def wait_job(client, job: str, token: str, until, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = client.predict(job=job, token=token, api_name="/poll")[0]
        if until(snap):
            return snap
        time.sleep(1)
    raise SystemExit(f"job {job} did not get there in {timeout:.0f} s: {snap}")


def epoch_seconds(run_dir: Path) -> list[tuple[float, float]]:
    """(finish time, seconds) of each epoch in metrics.csv, by the file's rows (finish time ~ when seen)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    rows = path.read_text().splitlines()[1:]
    return [(i, float(r.split(",")[7])) for i, r in enumerate(rows) if r.split(",")[7]]


def upload_zip(data: Path, work: Path) -> str:
    """A small zip of the dataset (6 images per class) for the upload users."""
    target = work / "upload.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for folder in sorted(p for p in data.iterdir() if p.is_dir()):
            for image in sorted(folder.glob("*.jpg"))[:6]:
                archive.write(image, f"{folder.name}/{image.name}")
    return str(target)


class User:
    """One simulated person: a loop of actions with a short think time, every answer checked."""

    def __init__(self, url: str, plan: dict, tally: Tally, stop_at: float, seed: int, think: float) -> None:
        import gradio_client

        from ftui.bench.gradio_http import GradioHTTP

        self.gc = gradio_client
        self.client = gradio_client.Client(url, verbose=False)
        self.http = GradioHTTP(url)
        self.plan, self.tally, self.stop_at, self.think = plan, tally, stop_at, think
        self.rng = random.Random(seed)

    def timed(self, endpoint: str, call, check) -> None:
        t0 = time.perf_counter()
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the user
            self.tally.record(endpoint, time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
            return
        try:
            problem = check(result)
        except (KeyError, IndexError, TypeError) as exc:  # an answer of the wrong shape is an error too
            problem = f"error: unexpected answer ({type(exc).__name__}: {exc})"
        self.tally.record(endpoint, time.perf_counter() - t0, error=problem if problem.startswith("error") else "",
                          wrong=problem == "wrong")

    def predict(self) -> None:
        image = self.rng.choice(self.plan["images"])
        want = self.plan["answers"][image]

        def check(out) -> str:
            if out[0]:
                return f"error: {out[0]}"
            got = labels(out[1])
            return "" if got[0][0] == want[0][0] and abs(got[0][1] - want[0][1]) < 1e-4 else "wrong"
        self.timed("predict_image", lambda: self.client.predict(
            run_id=self.plan["run"], image=self.gc.handle_file(image), k=3, api_name="/predict_image"), check)

    def live(self) -> None:
        frames = [self.rng.choice(self.plan["images"]) for _ in range(4)]

        def call():
            return self.http.stream("predict_live", [[self.plan["run"], self.http.upload(f), 3] for f in frames])

        def check(answers) -> str:
            for frame, out in zip(frames, answers):
                if out[0]:
                    return f"error: {out[0]}"
                if labels(out[1])[0][0] != self.plan["answers"][frame][0][0]:
                    return "wrong"
            return "" if len(answers) == len(frames) else "wrong"
        self.timed("live_webcam (4 frames)", call, check)

    def evaluate(self) -> None:
        def check(out) -> str:
            if out[0]:
                return f"error: {out[0]}"
            return "" if out[1] == self.plan["evaluation"] else "wrong"
        self.timed("evaluate", lambda: self.client.predict(self.plan["run"], "val", api_name="/evaluate"), check)

    def poll(self) -> None:
        def check(out) -> str:
            snap = out[0]
            return "" if snap and snap.get("status") in ("running", "queued") else f"error: poll said {snap}"
        self.timed("poll", lambda: self.client.predict(job=self.plan["job"], token="someone-else",
                                                       api_name="/poll"), check)

    def upload(self) -> None:
        def check(out) -> str:
            if out[-1]:
                return f"error: {out[-1]}"
            return "" if "4 classes" in out[0] else "wrong"
        self.timed("upload_data", lambda: self.client.predict(
            files=[self.gc.handle_file(self.plan["zip"])], val_fraction=0.25, api_name="/upload_data"), check)

    def loop(self) -> None:
        actions = [self.poll] * 4 + [self.predict] * 3 + [self.live] * 2 + [self.evaluate] + [self.upload]
        while time.monotonic() < self.stop_at:
            self.rng.choice(actions)()
            time.sleep(self.rng.uniform(0.5, 1.5) * self.think)
        self.http.close()


def prepare(url: str, data: Path, work: Path) -> dict:
    """Train the run users predict with, take single-user answers, start the long job; returns the plan."""
    import gradio_client

    client = gradio_client.Client(url, verbose=False)
    token = new_token(client)
    client.predict(source_path=data.name, val_fraction=0.25, api_name="/load_data")
    job, error = client.predict(config=json.dumps({**RUN_CONFIG, "epochs": 2}), owner_token=token,
                                api_name="/start_training")
    if error:
        raise SystemExit(f"could not start the predict run: {error}")
    run = wait_job(client, job, token, lambda s: s["status"] in ("done", "failed", "stopped"))["run_id"]
    images = sorted(str(p) for p in data.rglob("*.jpg"))[::25][:12]
    answers = {}
    for image in images:
        out = client.predict(run_id=run, image=gradio_client.handle_file(image), k=3, api_name="/predict_image")
        answers[image] = labels(out[1])
    evaluation = client.predict(run, "val", api_name="/evaluate")[1]
    long_job, error = client.predict(config=json.dumps({**RUN_CONFIG, "epochs": 5000, "early_stopping_patience": 0}),
                                     owner_token=token,
                                     api_name="/start_training")
    if error:
        raise SystemExit(f"could not start the long job: {error}")
    snap = wait_job(client, long_job, token, lambda s: s["status"] == "running" and s.get("run_id"))
    return {"run": run, "images": images, "answers": answers, "evaluation": evaluation, "job": long_job,
            "token": token, "client": client, "train_dir": work / "runs" / snap["run_id"],
            "zip": upload_zip(data, work)}


def labels(label_output) -> list[tuple[str, float]]:
    """(label, probability) pairs, most likely first, from a gr.Label output (plain, or inside an update)."""
    value = label_output.get("value", label_output) if isinstance(label_output, dict) else label_output
    return [(c["label"], float(c["confidence"])) for c in value["confidences"]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def report(tally: Tally, alone: list[float], loaded: list[float], args, load: tuple) -> str:
    lines = [(f"{args.users} users x {args.minutes:g} min on 127.0.0.1, think time ~{args.think:g} s; "
              f"{os.cpu_count()} CPU cores, load average at start {load[0]:.1f}, at end {load[1]:.1f}"), "",
             "| endpoint | calls | errors | wrong answers | p50 s | p95 s | max s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for endpoint in sorted(tally.latencies):
        lat = tally.latencies[endpoint]
        lines.append(f"| {endpoint} | {len(lat)} | {len(tally.errors[endpoint])} | {tally.wrong[endpoint]} | "
                     f"{percentile(lat, 0.5):.2f} | {percentile(lat, 0.95):.2f} | {max(lat):.2f} |")
    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")
    lines += ["", (f"training epoch alone: {mean(alone):.1f} s ({len(alone)} epochs); under load: "
                   f"{mean(loaded):.1f} s ({len(loaded)} epochs): {mean(loaded) / mean(alone):.1f}x slower")]
    for endpoint, errors in tally.errors.items():
        for error in sorted(set(errors))[:3]:
            lines.append(f"- {endpoint}: {error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--think", type=float, default=1.0, help="mean pause between a user's actions (s)")
    parser.add_argument("--baseline-epochs", type=int, default=2, help="epochs timed alone before the load")
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 200 or not 0 < args.minutes <= 60:
        raise SystemExit("--users in [1, 200] and --minutes in (0, 60]")
    from ftui.data.demo import ensure_demo_dataset

    work = Path(tempfile.mkdtemp(prefix="ftui-load-"))
    data = Path(ensure_demo_dataset(work / "data" / "textures", per_class=40))
    url, proc = start_app(work, data.parent)
    try:
        plan = prepare(url, data, work)
        alone_start = len(epoch_seconds(plan["train_dir"]))
        while len(epoch_seconds(plan["train_dir"])) < alone_start + args.baseline_epochs:
            time.sleep(1)
        alone = [s for _, s in epoch_seconds(plan["train_dir"])[alone_start:]]
        before = len(epoch_seconds(plan["train_dir"]))
        load_start = os.getloadavg()[0]
        tally = Tally()
        stop_at = time.monotonic() + args.minutes * 60
        users = [User(url, plan, tally, stop_at, seed, args.think) for seed in range(args.users)]
        threads = [threading.Thread(target=u.loop, name=f"user-{i}") for i, u in enumerate(users)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=args.minutes * 60 + 600)
        loaded = [s for _, s in epoch_seconds(plan["train_dir"])[before:]]
        alive = proc.poll() is None
        plan["client"].predict(job=plan["job"], owner_token=plan["token"], api_name="/stop")
        print(report(tally, alone, loaded, args, (load_start, os.getloadavg()[0])))
        print(f"\napp still serving at the end: {alive}")
    finally:
        proc.kill()
        proc.wait(30)
        kept = Path(tempfile.gettempdir()) / "ftui-load-app.log"
        shutil.copyfile(work / "app.log", kept)  # the server's tracebacks, for any error counted above
        print(f"app log: {kept}")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
