"""A model card for a run: what it tells apart, how well (with an interval), where it gets confused, and
sample predictions on its own val images. Written as a standalone `model_card.html` (images inlined) and
shown on the demo page (`python app.py --demo RUN_DIR`)."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from ftui.results.loading import LoadedRun, load_run
from ftui.stats import wilson_interval

SAMPLES = 8
CALIBRATION_KEYS = ("temperature", "ece_before", "ece_after", "reliability", "reliability_before", "abstain_rate",
                    "ood")
CONFUSIONS = 3
# The owner's name and description of the model, beside the run's other files (`app.py --demo RUN --title
# ... --description ...` writes it).
CARD_FILE = "card.json"
MAX_TITLE, MAX_DESCRIPTION = 120, 2000


@dataclass
class ModelCard:
    """Everything the card shows, as plain values."""

    run_id: str
    backbone: str
    classes: list[str]
    image_size: int
    accuracy: float | None
    num_items: int
    interval: tuple[float, float] | None
    confusions: list[tuple[str, str, int, int]] = field(default_factory=list)  # true, predicted, count, of
    samples: list[dict] = field(default_factory=list)  # path, true, predicted, probability
    title: str = ""
    description: str = ""
    # How training ended when that is worth saying ("stopped early at epoch 5: ...; kept epoch 2").
    training_note: str = ""
    # The val evaluation's calibration keys (temperature, ece_before/after, reliability, abstain_rate, ood).
    calibration: dict = field(default_factory=dict)
    members: list[str] = field(default_factory=list)  # an ensemble's member runs (backbone of each)
    task: str = "classification"
    # Multilabel / regression: the run's val evaluation.json (numbers with intervals, per-label table).
    task_result: dict | None = None

    @property
    def description_html(self) -> str:
        """The owner's description as a paragraph, or nothing."""
        return f"<p class='ftui-description'>{html.escape(self.description)}</p>" if self.description else ""

    @property
    def training_note_html(self) -> str:
        """How training ended, as a paragraph, or nothing."""
        return f"<p>Training {html.escape(self.training_note)}.</p>" if self.training_note else ""

    @property
    def heading(self) -> str:
        """The owner's name for the model, else what it tells apart (never the run id or "5-class")."""
        if not self.title and self.task != "classification":
            from ftui.results.taskcard import task_default_title

            return task_default_title(self.task, self.classes)
        return self.title or default_title(self.classes)


def default_title(classes: list[str]) -> str:
    """'Tells apart ants and bees' / 'Tells apart daisy, rose, tulip and 2 more'."""
    if len(classes) <= 1:
        return f"Recognises {classes[0]}" if classes else "Image classifier"
    shown = classes[:4] if len(classes) <= 4 else classes[:3]
    rest = f" and {len(classes) - len(shown)} more" if len(classes) > len(shown) else ""
    listed = ", ".join(shown[:-1]) + f" and {shown[-1]}" if not rest else ", ".join(shown) + rest
    return f"Tells apart {listed}"


def read_card_text(run_dir: Path) -> tuple[str, str]:
    """(title, description) the owner gave, or ('', '')."""
    try:
        data = json.loads((Path(run_dir) / CARD_FILE).read_text())
    except (OSError, ValueError):
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    return str(data.get("title") or "")[:MAX_TITLE], str(data.get("description") or "")[:MAX_DESCRIPTION]


def write_card_text(run_dir: Path, title: str | None, description: str | None) -> None:
    """Save the owner's name and description (kept where not given; bounded, stored as plain text)."""
    from ftui.runs import RunError, write_json_atomic

    if not (Path(run_dir) / "config.json").is_file():
        raise RunError(f"{run_dir} is not a run folder (no config.json)")
    old_title, old_description = read_card_text(run_dir)
    write_json_atomic(Path(run_dir) / CARD_FILE, {
        "title": (old_title if title is None else title.strip())[:MAX_TITLE],
        "description": (old_description if description is None else description.strip())[:MAX_DESCRIPTION]})


def representative_samples(predictions: list[dict], accuracy: float, limit: int = SAMPLES) -> list[dict]:
    """`limit` val predictions whose share right is the val accuracy (a 67% model shows about 5 right of 8,
    not whatever the first images happened to be), the classes taken in turn."""
    right = [p for p in predictions if p["true"] == p["predicted"]]
    wrong = [p for p in predictions if p["true"] != p["predicted"]]
    n = min(limit, len(predictions))
    n_right = min(len(right), max(n - len(wrong), round(accuracy * n)))
    return _by_class_in_turn(right, n_right) + _by_class_in_turn(wrong, n - n_right)


def _by_class_in_turn(rows: list[dict], n: int) -> list[dict]:
    by_class: dict[str, list[dict]] = {}
    for row in rows:
        by_class.setdefault(row["true"], []).append(row)
    picked: list[dict] = []
    for rank in range(max((len(v) for v in by_class.values()), default=0)):
        for name in sorted(by_class):
            if rank < len(by_class[name]) and len(picked) < n:
                picked.append(by_class[name][rank])
    return picked


def _evaluation(run: LoadedRun) -> dict | None:
    """The val evaluation the job saved, or a fresh one; None when the run's data cannot be read."""
    from ftui.results.evaluate import evaluate

    saved = run.path / "evaluation.json"
    if saved.is_file():
        try:
            return json.loads(saved.read_text())
        except ValueError:
            pass
    try:
        return evaluate(run, split="val").to_dict()
    except (ValueError, OSError):
        return None


def build_card(run: LoadedRun | str | Path) -> ModelCard:
    """Collect the card's numbers for a run folder."""
    from ftui.results.predict import Predictor, val_examples

    run = run if isinstance(run, LoadedRun) else load_run(run)
    card = ModelCard(run_id=run.id, backbone=run.config.backbone, classes=list(run.classes),
                     image_size=int(run.transform["image_size"]), accuracy=None, num_items=0, interval=None)
    card.title, card.description = read_card_text(run.path)
    message = str(run.status.get("message") or "")
    card.training_note = message if message.startswith("stopped early") else ""
    result = _evaluation(run)
    if run.kind != "classification":
        from ftui.results.taskcard import task_samples

        card.task, card.task_result = run.kind, result
        card.samples = task_samples(run.kind, result or {}, SAMPLES)
        return card
    if result:
        matrix = result["confusion"]
        correct = sum(matrix[i][i] for i in range(len(matrix)))
        card.accuracy, card.num_items = result["accuracy"], result["num_items"]
        card.interval = wilson_interval(correct, result["num_items"])
        pairs = [(result["classes"][t], result["classes"][p], n, sum(row))
                 for t, row in enumerate(matrix) for p, n in enumerate(row) if t != p and n > 0]
        card.confusions = sorted(pairs, key=lambda x: -x[2])[:CONFUSIONS]
        card.calibration = {k: result[k] for k in CALIBRATION_KEYS if k in result}
        rows = [{"path": p["path"], "true": p["true"], "predicted": p["predicted"], "probability": p["confidence"]}
                for p in result.get("predictions") or []]
        card.samples = representative_samples(rows, result["accuracy"])
    card.members = [f"{m['run']} ({m['backbone']})" for m in run.members]
    if card.samples:
        return card
    picked = val_examples(run, SAMPLES)
    if picked:
        top = Predictor(run).predict([p for p, _ in picked], top_k=1)
        card.samples = [{"path": p, "true": c, "predicted": t[0][0], "probability": t[0][1]}
                        for (p, c), t in zip(picked, top)]
    return card


def truth_caption(sample: dict) -> str:
    """'✓ true: daisy, predicted: daisy' or '✗ true: daisy, predicted: rose' (HTML-escaped)."""
    mark = "✓" if sample["true"] == sample["predicted"] else "✗"
    return html.escape(f"{mark} true: {sample['true']}, predicted: {sample['predicted']}")


def _data_uri(path: str, size: int = 96) -> str:
    from ftui.data.images import ImageError, open_rgb

    try:
        image = open_rgb(path, draft_size=size)
    except ImageError:
        return ""
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def card_body(card: ModelCard) -> str:
    """The card as an HTML fragment (the demo page embeds it; `card_html` wraps it in a page)."""
    e = html.escape
    if card.task != "classification":
        from ftui.results.taskcard import task_card_body

        return task_card_body(card, card.task_result, _data_uri)
    if card.accuracy is not None and card.interval:
        low, high = card.interval
        acc = (f"<b>{card.accuracy:.1%}</b> on {card.num_items} val images "
               f"(95% interval {low:.1%} to {high:.1%})")
    else:
        acc = "not measured (the run's val images could not be read)"
    from ftui.results.reliability import reliability_html

    members = (f"<p>An ensemble averaging the calibrated probabilities of: {e(', '.join(card.members))}.</p>"
               if card.members else "")
    confusions = "".join(f"<li>{e(t)} taken for {e(p)}: {n} of {of}</li>" for t, p, n, of in card.confusions)
    samples = "".join(
        f"<figure class='{'ftui-right' if s['true'] == s['predicted'] else 'ftui-wrong'}'>"
        f"<img src='{_data_uri(s['path'])}' alt='{e(s['true'])}'><figcaption>{truth_caption(s)}"
        f" ({s['probability']:.0%})</figcaption></figure>" for s in card.samples)
    right = sum(s["true"] == s["predicted"] for s in card.samples)
    description, note = card.description_html, card.training_note_html
    return (
        f"<div class='ftui-modelcard'><h2>{e(card.heading)}</h2>{description}"
        f"<p>{e(card.backbone)} at {card.image_size} px, {len(card.classes)} classes: "
        f"{e(', '.join(card.classes))}. <small>Run {e(card.run_id)}.</small></p>"
        f"<p>Validation accuracy: {acc}.</p>{note}{members}{reliability_html(card.calibration)}"
        f"<h3>Main confusions</h3><ul>{confusions or '<li>none on the val images</li>'}</ul>"
        f"<h3>Sample predictions (val images, {right} of {len(card.samples)} right, as the accuracy)</h3>"
        f"<div class='ftui-samples'>{samples or 'none'}</div>"
        "<p class='ftui-note'>Val images were held out from training but come from the same collection; "
        "expect lower accuracy on images unlike them.</p></div>"
    )


CARD_CSS = """body{font-family:system-ui,sans-serif;max-width:860px;margin:24px auto;padding:0 16px;color:#1f2937}
.ftui-samples{display:flex;flex-wrap:wrap;gap:10px}.ftui-samples figure{margin:0;width:104px;font-size:13px}
.ftui-samples img{width:96px;height:96px;object-fit:cover;border-radius:6px}.ftui-note{color:#6b7280}
.ftui-samples figure.ftui-wrong figcaption{color:#b91c1c}.ftui-samples figure.ftui-right figcaption{color:#166534}
.ftui-task-table{border-collapse:collapse}.ftui-task-table td,.ftui-task-table th{padding:2px 10px;text-align:left}"""


def card_html(card: ModelCard) -> str:
    """A standalone page (images inlined, no outside requests)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Model card: {html.escape(card.heading)}"
            f"</title><style>{CARD_CSS}</style></head><body>{card_body(card)}</body></html>\n")


def write_model_card(run: LoadedRun | str | Path) -> Path:
    """`<run>/model_card.html`; returns its path."""
    from ftui.runs import write_text_atomic

    run = run if isinstance(run, LoadedRun) else load_run(run)
    path = run.path / "model_card.html"
    write_text_atomic(path, card_html(build_card(run)))
    return path
