"""The model card of a multilabel or regression run: its numbers with their 95% bootstrap intervals (from the
run's evaluation.json), the per-label (per-output) table and sample predictions on its val images. No
calibration block: temperature scaling and the abstain threshold belong to single-label softmax outputs."""

from __future__ import annotations

import html
from typing import Any

MULTILABEL_LINES = (("map", "mAP (macro average precision)", ".3f"),
                    ("f1_at_val_thresholds", "F1 at the per-label thresholds chosen on val", ".3f"),
                    ("f1_at_0.5", "F1 at 0.5", ".3f"),
                    ("exact_match", "exact match (every label right)", ".3f"))
REGRESSION_LINES = (("mae", "MAE", ".4g"), ("rmse", "RMSE", ".4g"), ("r2", "R²", ".3f"),
                    ("mae_mean_baseline", "MAE of predicting the train mean (the baseline to beat)", ".4g"))


def metric_lines(task: str, result: dict[str, Any]) -> list[str]:
    """'mAP (macro average precision): 0.912 (95% interval 0.871 to 0.944)', one per headline metric."""
    lines = []
    for key, name, fmt in MULTILABEL_LINES if task == "multilabel" else REGRESSION_LINES:
        value = result.get(key)
        if value is None:
            continue
        low, high = (result.get(f"{key}_ci95") or [None, None])[:2]
        interval = f" (95% interval {low:{fmt}} to {high:{fmt}})" if low is not None and high is not None else ""
        lines.append(f"{name}: {value:{fmt}}{interval}")
    return lines


def label_rows(task: str, result: dict[str, Any]) -> list[list[str]]:
    """The per-label (AP, threshold, F1, images) or per-output (MAE, RMSE, R², baseline) table's rows."""
    if task == "multilabel":
        return [[str(r["label"]), "–" if r["ap"] is None else f"{r['ap']:.3f}", f"{r['threshold']:.2f}",
                 f"{r['f1_at_val_threshold']:.3f}", str(r["support"])] for r in result.get("per_label") or []]
    return [[str(r["output"]), f"{r['mae']:.4g}", f"{r['rmse']:.4g}", f"{r['r2']:.3f}", f"{r['mae_mean_baseline']:.4g}"]
            for r in result.get("per_output") or []]


TABLE_HEADS = {"multilabel": ("label", "AP", "threshold", "F1", "val images with it"),
               "regression": ("output", "MAE", "RMSE", "R²", "mean-baseline MAE")}


def task_samples(task: str, result: dict[str, Any], limit: int) -> list[dict]:
    """Sample val predictions (path, true, predicted, probability=None) spread over the error range: for
    regression the true and predicted values, for multilabel the label sets."""
    rows = result.get("predictions") or []
    if not rows:
        return []
    step = max(1, len(rows) // limit)
    picked = rows[::step][:limit]
    if task == "multilabel":
        return [{"path": r["path"], "true": r["true"] or "(no label)", "predicted": r["predicted"] or "(no label)"}
                for r in picked]
    names = [k.removeprefix("true_") for k in picked[0] if k.startswith("true_")]
    return [{"path": r["path"], "true": ", ".join(f"{r[f'true_{n}']:.4g}" for n in names),
             "predicted": ", ".join(f"{r[f'predicted_{n}']:.4g}" for n in names)} for r in picked]


def task_default_title(task: str, classes: list[str]) -> str:
    """'Tags images with red, green and blue' / 'Estimates value from an image'."""
    if task == "multilabel":
        shown = classes[:4]
        rest = f" and {len(classes) - 4} more" if len(classes) > 4 else ""
        listed = ", ".join(shown[:-1]) + f" and {shown[-1]}" if len(shown) > 1 and not rest else ", ".join(shown)
        return f"Tags images with {listed}{rest}"
    return f"Estimates {', '.join(classes)} from an image"


def task_card_body(card, result: dict[str, Any] | None, data_uri) -> str:
    """A task run's card as an HTML fragment (ftui/results/modelcard.py's card_body hands such cards here)."""
    e = html.escape
    word = "labels" if card.task == "multilabel" else "outputs"
    if result:
        lines = "".join(f"<li>{e(line)}</li>" for line in metric_lines(card.task, result))
        numbers = f"<p>On {result.get('num_items', 0)} val images:</p><ul>{lines}</ul>"
    else:
        numbers = "<p>Not measured (the run's val images could not be read).</p>"
    head = "".join(f"<th>{e(h)}</th>" for h in TABLE_HEADS[card.task])
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                   for row in label_rows(card.task, result or {}))
    samples = "".join(
        f"<figure><img src='{data_uri(s['path'])}' alt='{e(s['true'])}'><figcaption>"
        f"{e('true: ' + s['true'])}<br>{e('predicted: ' + s['predicted'])}</figcaption></figure>"
        for s in card.samples)
    description, note = card.description_html, card.training_note_html
    return (
        f"<div class='ftui-modelcard'><h2>{e(card.heading)}</h2>{description}"
        f"<p>{e(card.task)}: {e(card.backbone)} at {card.image_size} px, {len(card.classes)} {word}: "
        f"{e(', '.join(card.classes))}. <small>Run {e(card.run_id)}.</small></p>{numbers}{note}"
        f"<table class='ftui-task-table'><tr>{head}</tr>{body}</table>"
        f"<h3>Sample predictions (val images)</h3><div class='ftui-samples'>{samples or 'none'}</div>"
        "<p class='ftui-note'>Intervals: 95% bootstrap over the val images. Val images were held out from "
        "training but come from the same collection; expect worse numbers on images unlike them.</p></div>")
