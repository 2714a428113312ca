"""Predict, webcam, live and the demo page for multilabel and regression runs: every label's probability
with its threshold marked (the labels at or above it are the answer), or the value in the run's units;
Grad-CAM for the most probable label (or a chosen one) or for the regression output."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

VALUE_FORMAT = ".4g"


def answers(model, images: list) -> list[dict[str, Any]]:
    """Per image: {"outputs": probabilities / values, "text": the label set or the value(s), "top": the most
    probable label's index (multilabel) or 0}."""
    outputs = model.outputs(images).double().numpy()
    names = model.classes
    out = []
    if model.kind == "multilabel":
        cuts = model.thresholds()
        for row in outputs:
            chosen = [n for n, p, t in zip(names, row, cuts) if p >= t]
            out.append({"outputs": row, "text": ";".join(chosen) or "(no label)", "top": int(row.argmax()),
                        "thresholds": cuts})
        return out
    for row in outputs:
        out.append({"outputs": row, "top": 0,
                    "text": ", ".join(f"{n} = {v:{VALUE_FORMAT}}" if len(names) > 1 else f"{v:{VALUE_FORMAT}}"
                                      for n, v in zip(names, row))})
    return out


def label_update(model, answer: dict[str, Any]) -> Any:
    """The Top predictions box: every label's probability (multilabel), or the value as its heading."""
    if model.kind == "multilabel":
        return gr.update(value={n: float(p) for n, p in zip(model.classes, answer["outputs"])},
                         label="Each label's probability (a label is in the answer at or above its threshold)",
                         show_heading=False)
    return gr.update(value=answer["text"], label=f"Predicted {', '.join(model.classes)}", show_heading=True)


def verdict_markdown(model, answer: dict[str, Any], explained: str) -> str:
    """The answer in words and, for multilabel, a table of every label with its probability and threshold."""
    if model.kind == "regression":
        units = ", ".join(model.classes)
        return (f"**Predicted {html.escape(units)}: {html.escape(answer['text'])}** (in the units of the "
                f"training CSV's column{'s' if len(model.classes) > 1 else ''}).\n\n{explained}")
    rows = "\n".join(
        f"| {'✓' if p >= t else ''} | {html.escape(n)} | {p:.0%} | {t:.2f} |"
        for n, p, t in sorted(zip(model.classes, answer["outputs"], answer["thresholds"]), key=lambda r: -r[1]))
    return (f"**Labels: {html.escape(answer['text'].replace(';', ', '))}** (each label at or above its "
            f"threshold, chosen on the val images)\n\n| in answer | label | probability | threshold |\n"
            f"|---|---|---|---|\n{rows}\n\n{explained}")


def explain_task(model, image, answer: dict[str, Any], label: int | None = None, size: int = 256) -> tuple[str, Any]:
    """(a sentence, the Grad-CAM overlay) for the most probable label, `label`, or the regression output."""
    from ftui.results.explain import ExplainError, explain

    index = answer["top"] if label is None else int(label)
    try:
        picture = explain(model, image, class_index=index, size=size).overlay
    except ExplainError as exc:
        return f"_{exc}_", None
    if model.kind == "regression":
        words = f"The heat map shows the parts of the image that pushed the predicted {model.classes[index]} up."
        return words + " (red = most)", picture
    return f"The heat map shows where the model saw **{model.classes[index]}** (red = most).", picture


def task_single(model, image, label: int | None = None) -> tuple[Any, str, Any]:
    """(label box, verdict, overlay) for one image of a multilabel or regression run."""
    (answer,) = answers(model, [image])
    words, picture = explain_task(model, image, answer, label)
    return label_update(model, answer), verdict_markdown(model, answer, words), picture


def example_answers(model, paths: list[str]) -> list[tuple[str, None]]:
    """(the predicted label set or value, no probability) per example image."""
    return [(a["text"], None) for a in answers(model, paths)]


def example_caption(row: dict[str, Any], kind: str) -> str:
    """'✓ true: red;green, predicted: red;green' (multilabel: ✓ for an exact match) or 'true: 42, predicted:
    40.3' (regression: no mark, a value is never exactly right)."""
    if kind == "regression":
        return f"true: {row['true']}, predicted: {row['predicted']}"
    mark = "✓" if row["true"] == row["predicted"] else "✗"
    return f"{mark} true: {row['true']}, predicted: {row['predicted']}"


def truth_line(kind: str, true: str, predicted: str) -> str:
    """The line above a clicked example's answer."""
    if kind == "regression":
        return f"**True value: {html.escape(true)}** · predicted **{html.escape(predicted)}**"
    mark = "✓ every label right" if true == predicted else f"✗ predicted **{html.escape(predicted)}**"
    return f"**True labels: {html.escape(true)}** · {mark}"
