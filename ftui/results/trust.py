"""Answers you can trust: a temperature that calibrates the probabilities, an out-of-distribution score with
an abstain threshold ("none of these"), and the words a prediction is shown with.

- Calibration (Guo et al. 2017): one temperature T fitted on the val logits by LBFGS on the negative log
  likelihood; every probability ftui shows is softmax(logits / T). ECE uses 15 equal-width confidence bins.
- "None of these": the energy score (Liu et al. 2020), logsumexp of the raw logits: high for images like the
  training classes, low for images unlike all of them. It beats the maximum softmax probability (MSP) on
  far-OOD images in the paper and here (docs/trust.md); MSP is reported beside it. The threshold keeps 95% of
  the val images, so about 5% of in-distribution images are answered "unknown" by design.
- "Unsure between A and B": the runner-up's calibrated probability is at least half the top one, i.e. odds of
  2:1 or less. With calibrated probabilities the top answer is then wrong at least a third of the time (the
  runner-up alone takes >= 1/3 of the pair's mass), too often to state one class.

Everything here is single-label classification only; other tasks have no temperature (T = 1) and no verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F

ECE_BINS = 15
KEEP_VAL = 0.95  # share of val images the abstain threshold keeps
UNSURE_ODDS = 2.0  # top / runner-up probability below this: "unsure between A and B"
MIN_FIT_IMAGES = 10  # fewer val images than this: no temperature (T = 1), the threshold still set
UNKNOWN_WORDS = "unknown: not like any class it was trained on"
# "auto": a config whose task was never resolved (a job records the detected task in config.json before it
# trains), e.g. a run folder written by hand: classification, as before tasks existed.
SINGLE_LABEL_TASKS = ("single_label", "single-label", "classification", "multiclass", "auto")


def single_label(config) -> bool:
    """True for the single-label classification runs calibration and "none of these" apply to."""
    return getattr(config, "task", "single_label") in SINGLE_LABEL_TASKS


@dataclass
class Trust:
    """What a run stores with its model (best.pt's "trust" entry, exports' metadata)."""

    temperature: float = 1.0
    energy_threshold: float | None = None  # abstain below this energy score; None: never abstain
    msp_threshold: float | None = None  # the same 95%-keep rule on MSP, for comparison only
    ece_before: float | None = None
    ece_after: float | None = None  # with T fitted on the other half of val (2-fold), so not optimistic
    abstain_rate_val: float | None = None
    num_val: int = 0
    # The score "unknown" is decided on: "mahalanobis" (feature space, ftui/results/oodscore.py) when the
    # run stores its statistics, else "energy" (runs calibrated before it existed keep working).
    ood_method: str = "energy"
    ood_threshold: float | None = None  # abstain below this score of `ood_method`
    # The feature statistics (tensors: class means, whitening matrix); not compared, not in to_meta's floats.
    features: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_meta(self) -> dict[str, Any]:
        """Plain floats, ints, strings and tensors (a weights_only checkpoint holds them)."""
        return {k: (None if v is None else float(v) if isinstance(v, float) else v)
                for k, v in vars(self).items()}

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> Trust:
        """From a checkpoint's "trust" entry; an old run without one gets T = 1 and no threshold."""
        if not isinstance(meta, dict):
            return cls()
        from ftui.results.oodscore import from_meta as score_from_meta

        known = {f.name: meta[f.name] for f in fields(cls) if f.name in meta}
        trust = cls(**known)
        if not (isinstance(trust.temperature, (int, float)) and 0.01 <= trust.temperature <= 100):
            trust.temperature = 1.0  # a hand-edited or broken value never divides the logits by nonsense
        if trust.ood_method != "energy" and (score_from_meta(trust.features) is None
                                             or not isinstance(trust.ood_threshold, (int, float))):
            # Statistics missing or damaged: the energy score and its threshold, which every run has.
            trust.ood_method, trust.ood_threshold, trust.features = "energy", None, None
        return trust

    def feature_score(self):
        """The stored feature-space score (an `ftui.results.oodscore.Mahalanobis`), None for energy."""
        from ftui.results.oodscore import from_meta

        return from_meta(self.features) if self.ood_method != "energy" else None

    @property
    def threshold(self) -> float | None:
        """Abstain below this value of the `ood_method` score; None: never abstain."""
        return self.ood_threshold if self.ood_method != "energy" else self.energy_threshold


def calibrated(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T), one row per image."""
    return torch.softmax(logits.float() / float(temperature), dim=1)


def energy_score(logits: torch.Tensor) -> torch.Tensor:
    """logsumexp of the raw logits, one per image: higher = more like the classes trained on."""
    return torch.logsumexp(logits.float(), dim=1)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The T that minimises val NLL of softmax(logits / T) (LBFGS on log T, so T stays positive)."""
    # clone(): logits from inference_mode cannot take part in autograd.
    logits, targets = logits.detach().float().clone(), targets.detach().long().clone()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def reliability(probs: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per confidence bin (equal width): lo, hi, count, mean confidence, accuracy; empty bins left out."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == targets).double()
    edges = torch.linspace(0, 1, bins + 1)
    rows = []
    for b in range(bins):
        # (lo, hi], with the first bin closed at 0.
        inside = (confidence > edges[b]) & (confidence <= edges[b + 1]) if b else confidence <= edges[1]
        n = int(inside.sum())
        if n:
            rows.append({"lo": round(float(edges[b]), 4), "hi": round(float(edges[b + 1]), 4), "count": n,
                         "confidence": float(confidence[inside].double().mean()),
                         "accuracy": float(correct[inside].mean())})
    return rows


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over the bins."""
    total = len(targets)
    if total == 0:
        return 0.0
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in reliability(probs, targets, bins))
                 / total)


def ece_floor(probs: torch.Tensor, draws: int = 200, seed: int = 0) -> float:
    """The mean ECE a PERFECTLY calibrated model with these confidences shows on this many images (each image
    right with probability = its confidence): below it, a measured ECE is sampling noise, not miscalibration."""
    conf, pred = probs.double().max(dim=1)
    wrong = (pred + 1) % probs.shape[1]
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(draws):
        right = torch.rand(len(conf), generator=g, dtype=torch.float64) < conf
        total += expected_calibration_error(probs, torch.where(right, pred, wrong))
    return total / draws


def keep_threshold(scores: torch.Tensor, keep: float = KEEP_VAL) -> float:
    """The score that keeps `keep` of these (in-distribution) images at or above it."""
    return float(torch.quantile(scores.double(), 1.0 - keep))


def _crossfit_ece(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """ECE of val when each half is scaled by the T fitted on the other half (seeded split)."""
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
    halves = order[: len(order) // 2], order[len(order) // 2:]
    probs = torch.empty(len(targets), logits.shape[1])
    for fit_on, apply_to in (halves, halves[::-1]):
        probs[apply_to] = calibrated(logits[apply_to], fit_temperature(logits[fit_on], targets[fit_on]))
    return expected_calibration_error(probs, targets)


def fit_trust(logits: torch.Tensor, targets: torch.Tensor, fit_t: bool = True) -> Trust:
    """Temperature, ECE before/after and the abstain thresholds from one run's val logits; fit_t=False keeps
    T = 1 (an ensemble, whose members are calibrated already)."""
    logits, targets = logits.detach().float(), targets.detach().long()
    n = len(targets)
    trust = Trust(num_val=n, ece_before=expected_calibration_error(calibrated(logits, 1.0), targets))
    if n >= MIN_FIT_IMAGES and fit_t:
        trust.temperature = fit_temperature(logits, targets)
        trust.ece_after = _crossfit_ece(logits, targets)
    else:
        trust.ece_after = trust.ece_before
    if n:
        scores = energy_score(logits)
        trust.energy_threshold = keep_threshold(scores)
        trust.msp_threshold = keep_threshold(calibrated(logits, trust.temperature).max(dim=1).values)
        trust.abstain_rate_val = float((scores < trust.energy_threshold).double().mean())
    return trust


def auroc(inside: torch.Tensor, outside: torch.Tensor) -> float:
    """P(score of an in-distribution image > score of an OOD one), ties counted half (Mann-Whitney U)."""
    inside, outside = inside.double().flatten(), outside.double().flatten()
    if not len(inside) or not len(outside):
        raise ValueError("AUROC needs in-distribution and out-of-distribution scores")
    scores = torch.cat([inside, outside])
    # Average ranks (ties share their mean rank) without scipy.
    order = torch.argsort(scores, stable=True)
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique():
        same = scores == value
        if int(same.sum()) > 1:
            ranks[same] = ranks[same].mean()
    u = ranks[: len(inside)].sum() - len(inside) * (len(inside) + 1) / 2
    return float(u / (len(inside) * len(outside)))


def fpr_at_95_tpr(inside: torch.Tensor, outside: torch.Tensor) -> float:
    """Share of OOD images still accepted when the threshold keeps 95% of the in-distribution ones."""
    threshold = keep_threshold(inside, 0.95)
    return float((outside.double() >= threshold).double().mean())


def ood_report(inside_logits: torch.Tensor, outside_logits: torch.Tensor, temperature: float = 1.0,
               scores: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None, method: str = "energy") -> dict:
    """AUROC and FPR at 95% TPR for energy and MSP, plus `scores` (name -> (inside, outside) scores, e.g. the
    run's feature-space score), in evaluation.json's "ood" shape; the top-level numbers are `method`'s, the
    score the run answers "unknown" with."""
    pairs = {"energy": (energy_score(inside_logits), energy_score(outside_logits)),
             "msp": (calibrated(inside_logits, temperature).max(dim=1).values,
                     calibrated(outside_logits, temperature).max(dim=1).values), **(scores or {})}
    report: dict[str, Any] = {"method": method, "num_in": len(inside_logits), "num_out": len(outside_logits)}
    for name, (a, b) in pairs.items():
        report[name] = {"auroc": round(auroc(a, b), 4), "fpr95": round(fpr_at_95_tpr(a, b), 4)}
    report["auroc"], report["fpr95"] = report[method]["auroc"], report[method]["fpr95"]
    return report


def add_feature_score(trust: Trust, scorer, val_features: torch.Tensor) -> None:
    """Make `scorer` (fitted on train features, ftui/results/oodscore.py) the run's "none of these" score:
    its threshold keeps KEEP_VAL of these val images; energy's threshold stays for comparison."""
    scores = scorer(val_features)
    trust.ood_method, trust.features = scorer.method, scorer.to_meta()
    trust.ood_threshold = keep_threshold(scores)
    trust.abstain_rate_val = float((scores < trust.ood_threshold).double().mean())


@dataclass
class Verdict:
    """One image's answer: the top-k (label, calibrated probability), the top two, its "none of these" score
    (the run's `Trust.ood_method`) and what to say."""

    top: list[tuple[str, float]]
    pair: list[tuple[str, float]]  # the two most likely classes whatever k was asked for
    score: float
    kind: str  # "class", "unsure" or "unknown"

    @property
    def label(self) -> str:
        """What a CSV or an API states: the class, "unknown", or "unsure: A | B"."""
        if self.kind == "unknown":
            return "unknown"
        if self.kind == "unsure":
            return f"unsure: {self.pair[0][0]} | {self.pair[1][0]}"
        return self.top[0][0]

    def words(self) -> str:
        """The sentence shown above the bars ("" for a plain class: the confidence words say it)."""
        if self.kind == "unknown":
            return (f"**{UNKNOWN_WORDS}** (score {self.score:.2f} is below the threshold this model keeps 95% "
                    f"of its validation images above). Closest class: {self.pair[0][0]} ({self.pair[0][1]:.0%}).")
        if self.kind == "unsure":
            (a, pa), (b, pb) = self.pair
            return f"**unsure between {a} and {b}** ({pa:.0%} vs {pb:.0%}): too close to call."
        return ""


def judge(probs: torch.Tensor, classes: list[str], k: int, score: float, trust: Trust) -> Verdict:
    """The verdict for one image from its calibrated probabilities and its "none of these" score: unknown
    below the stored threshold, unsure when the top two are within UNSURE_ODDS, else the top class."""
    values, indices = probs.topk(min(max(k, 2), len(classes)))
    ranked = [(classes[int(i)], float(v)) for v, i in zip(values, indices)]
    top, pair = ranked[:k], ranked[:2]
    if trust.threshold is not None and score < trust.threshold:
        kind = "unknown"
    elif len(pair) == 2 and pair[0][1] < UNSURE_ODDS * pair[1][1]:
        kind = "unsure"
    else:
        kind = "class"
    return Verdict(top, pair, score, kind)
