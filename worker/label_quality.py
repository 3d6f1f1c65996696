"""How noisy the given labels are, between which classes, and which samples are suspect, from a
model's predicted probabilities (Confident Learning: Northcutt, Jiang & Chuang, JAIR 2021).

    quality = assess_labels(probabilities, given, num_classes, clean=clean, losses=losses)
    quality.report      # label_report.json
    quality.flagged     # per sample: suspected of a wrong label

Plain numpy on arrays: no torch, no pydantic, so the API, a notebook or a bare GPU box can use it.

The confident joint (Sec. 2.1 of the paper). Class j's threshold t_j is the mean predicted
probability of j over the samples whose given label is j. A sample with given label i is counted
in C[i][j] for the class j that maximizes p_j among the classes whose p_j ≥ t_j; a sample above
no threshold is not counted. Each row of C is then scaled to the number of samples given label i
(calibration), and the whole divided by n: Q[i][j] ≈ P(given i, true j).

Orientation. Inside this module C and Q are indexed [given, true], as in the paper. Everything
the report shows is indexed [true, given]: `joint[i][j]` = P(true i, given j) and
`transition_matrix[i][j]` = P(given j | true i), each row summing to 1; a class the joint gives
no mass gets the identity row. The noise rate is the joint's off-diagonal mass; a class's noise
rate is 1 − transition_matrix[i][i], the share of the samples truly of class i that carry
another label (the same as result.json's noise_rate_realised_per_class); the share of the samples
*given* label i that are wrong is `given_label_noise_rate`.

Intervals are percentile bootstrap intervals: the samples are resampled with replacement
(`resamples` times, seeded) and everything, the thresholds included, is estimated again. They
cover the estimator's sampling spread, not its bias (a model that memorised its noisy labels
sees less noise than there is; docs/LABEL_QUALITY.md).

Suspects. Per sample: the self-confidence p_given, the normalized margin p_given − max_{j≠given} p_j,
and the flagged set. FLAGGING names the two ways to flag: `prune_by_noise_rate`, for each
off-diagonal cell (i, j) the round(n·Q[i][j]) samples given label i with the largest p_j − p_i,
and `confident_off_diagonal`, the samples whose confident class is not their given label.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_STREAM = 0xB0075  # keeps the resampling's draws apart from others seeded by the job's seed
CHUNK_CELLS = 4_000_000  # resamples × samples × classes compared at once (memory: 8 bytes each at worst)
TOP_PAIRS = 5
TINY = np.finfo(np.float64).tiny  # the smallest probability the loss fallback takes the log of

ORIENTATION = ("rows: true class, columns: given label; transition_matrix[i][j] = P(given j | true i), each row "
               "summing to 1; joint[i][j] = P(true i, given j), all entries summing to 1")


# ---------------------------------------------------------------------------------------
# The confident joint
# ---------------------------------------------------------------------------------------


def class_thresholds(probabilities: np.ndarray, given: np.ndarray, num_classes: int) -> np.ndarray:
    """t_j: the mean p_j over the samples given label j; +inf for a label no sample has."""
    counts = np.bincount(given, minlength=num_classes)
    sums = np.bincount(given, weights=probabilities[np.arange(len(given)), given], minlength=num_classes)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_classes(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per sample, the class with the largest p_j among those with p_j ≥ t_j; -1 when none."""
    above = probabilities >= thresholds
    best = np.where(above, probabilities, -1.0).argmax(-1)
    return np.where(above.any(-1), best, -1)


def confident_joint(probabilities: np.ndarray, given: np.ndarray, num_classes: int) -> np.ndarray:
    """C[given, true]: the counts of confidently predicted classes per given label."""
    confident = confident_classes(probabilities, class_thresholds(probabilities, given, num_classes))
    counted = confident >= 0
    cells = given[counted] * num_classes + confident[counted]
    return np.bincount(cells, minlength=num_classes**2).reshape(num_classes, num_classes)


def calibrated_joint(counts: np.ndarray, given_counts: np.ndarray) -> np.ndarray:
    """Q[..., given, true] from C[..., given, true]: row i scaled to the count of label i, then
    everything to sum 1. A label without confident samples is taken as clean (its diagonal)."""
    k = counts.shape[-1]
    rows = counts.sum(-1, keepdims=True)
    share = np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(k))
    calibrated = share * given_counts[..., :, None]
    return calibrated / calibrated.sum((-2, -1), keepdims=True)


def empirical_joint(true: np.ndarray, given: np.ndarray, num_classes: int) -> np.ndarray:
    """Q[given, true] of known labels: the share of samples in each cell."""
    cells = given * num_classes + true
    return np.bincount(cells, minlength=num_classes**2).reshape(num_classes, num_classes) / len(given)


def transition_matrix(joint: np.ndarray) -> np.ndarray:
    """T[..., true, given] = P(given | true) from Q[..., given, true]; identity rows where no mass."""
    by_true = np.swapaxes(joint, -1, -2)
    mass = by_true.sum(-1, keepdims=True)
    return np.where(mass > 0, by_true / np.where(mass > 0, mass, 1), np.eye(joint.shape[-1]))


@dataclass(frozen=True)
class NoiseRates:
    overall: np.ndarray  # [...]: the off-diagonal mass
    per_true_class: np.ndarray  # [..., K]: P(given ≠ i | true i); nan where no mass
    per_given_label: np.ndarray  # [..., K]: P(true ≠ i | given i); nan where no mass


def noise_rates(joint: np.ndarray) -> NoiseRates:
    """Noise rates of Q[..., given, true]."""
    diagonal = np.diagonal(joint, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return NoiseRates(
            overall=1.0 - diagonal.sum(-1),
            per_true_class=1.0 - diagonal / joint.sum(-2),
            per_given_label=1.0 - diagonal / joint.sum(-1),
        )


# ---------------------------------------------------------------------------------------
# Bootstrap: every resample's joint at once
# ---------------------------------------------------------------------------------------


def bootstrap_joints(
    probabilities: np.ndarray, given: np.ndarray, num_classes: int, resamples: int, seed: int
) -> np.ndarray:
    """Q[b, given, true] of `resamples` resamples of the samples (with replacement, seeded),
    the thresholds estimated again in each."""
    return resampled_joints(probabilities, given, num_classes, _resample_counts(len(given), resamples, seed))


def resampled_joints(probabilities: np.ndarray, given: np.ndarray, num_classes: int,
                     weights: np.ndarray) -> np.ndarray:
    """Q[b, given, true] of resamples given as counts: weights[b, s] copies of sample s.

    A sample whose every p_j lies on the same side of t_j in all resamples has one confident
    class in them all, so its weight goes to one cell of C; only the samples near a threshold
    (a few percent) are compared resample by resample."""
    k, resamples = num_classes, len(weights)
    given_counts, thresholds = _weighted_thresholds(probabilities, given, k, weights)
    low, high = thresholds.min(0), thresholds.max(0)
    settled = ((probabilities >= high) | (probabilities < low)).all(1)
    confident = confident_classes(probabilities, high)
    counts = np.zeros((resamples, k * k))
    fixed = np.flatnonzero(settled & (confident >= 0))
    cells = given[fixed] * k + confident[fixed]
    order = np.argsort(cells, kind="stable")
    present, starts = np.unique(cells[order], return_index=True)
    if len(fixed):
        counts[:, present] = np.add.reduceat(weights[:, fixed[order]], starts, axis=1)
    near = np.flatnonzero(~settled)
    chunk = max(1, CHUNK_CELLS // max(1, len(near) * k))
    for start in range(0, resamples, chunk if len(near) else resamples):
        rows = np.arange(start, min(start + chunk, resamples))
        picked = confident_classes(probabilities[near][None], thresholds[rows, None, :])  # [b, m]
        counted = picked >= 0
        flat = ((rows - start)[:, None] * k * k + given[near] * k + picked)[counted]
        counts[rows] += np.bincount(flat, weights=weights[rows][:, near][counted],
                                    minlength=len(rows) * k * k).reshape(len(rows), k * k)
    return calibrated_joint(counts.reshape(resamples, k, k), given_counts)


def _resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n]: how often each sample is drawn in each resample of n draws."""
    rng = np.random.default_rng([BOOTSTRAP_STREAM, seed])
    weights = np.empty((resamples, n), dtype=np.float32)  # counts, exact in float32 below 2**24
    chunk = max(1, min(resamples, 2**31 // max(1, n) - 1, CHUNK_CELLS // max(1, n)))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        draws = rng.integers(0, n, size=(b, n), dtype=np.int32) + n * np.arange(b, dtype=np.int32)[:, None]
        weights[start:start + b] = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n)
    return weights


def _weighted_thresholds(
    probabilities: np.ndarray, given: np.ndarray, k: int, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per resample: the count of each given label and the thresholds t_j, [resamples, K] each."""
    n = len(given)
    by_label = np.zeros((n, 2 * k))
    by_label[np.arange(n), given] = 1.0
    by_label[np.arange(n), k + given] = probabilities[np.arange(n), given]
    chunk = max(1, CHUNK_CELLS // max(1, n))
    totals = np.concatenate([weights[s:s + chunk].astype(np.float64) @ by_label for s in range(0, len(weights), chunk)])
    counts, sums = totals[:, :k], totals[:, k:]
    return counts, np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def percentile_interval(samples: np.ndarray, level: float = BOOTSTRAP_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The (1-level)/2 and (1+level)/2 percentiles over axis 0, ignoring nan."""
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class without mass in every resample: nan
        low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
    return low, high


# ---------------------------------------------------------------------------------------
# Per-sample scores and the flagged set
# ---------------------------------------------------------------------------------------


def self_confidence(probabilities: np.ndarray, given: np.ndarray) -> np.ndarray:
    """p_given: low means suspect."""
    return probabilities[np.arange(len(given)), given]


def normalized_margin(probabilities: np.ndarray, given: np.ndarray) -> np.ndarray:
    """p_given − max_{j≠given} p_j, in [-1, 1]: negative when another class is preferred."""
    rows = np.arange(len(given))
    others = probabilities.copy()
    others[rows, given] = -np.inf
    return probabilities[rows, given] - others.max(1)


def prune_by_noise_rate(probabilities: np.ndarray, given: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """For each off-diagonal cell (i, j) of Q[given, true], the round(n·Q[i][j]) samples given
    label i with the largest p_j − p_i."""
    n, k = probabilities.shape
    flagged = np.zeros(n, dtype=bool)
    for i in range(k):
        members = np.flatnonzero(given == i)
        for j in range(k):
            take = min(int(round(n * joint[i, j])), len(members)) if j != i else 0
            if take:
                lead = probabilities[members, j] - probabilities[members, i]
                flagged[members[np.argsort(-lead, kind="stable")[:take]]] = True
    return flagged


def confident_off_diagonal(probabilities: np.ndarray, given: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """The samples whose confident class (see confident_classes) is not their given label."""
    confident = confident_classes(probabilities, class_thresholds(probabilities, given, joint.shape[-1]))
    return (confident >= 0) & (confident != given)


Flagging = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
FLAGGING: dict[str, Flagging] = {
    "prune_by_noise_rate": prune_by_noise_rate,
    "confident_off_diagonal": confident_off_diagonal,
}
DEFAULT_FLAGGING = "prune_by_noise_rate"  # the better F1 on Fashion-MNIST: docs/LABEL_QUALITY.md


# ---------------------------------------------------------------------------------------
# Against known clean labels
# ---------------------------------------------------------------------------------------


def average_precision(suspicion: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the precision-recall curve of the ranking by `suspicion` (highest first):
    Σ_k (R_k − R_{k−1}) P_k over the distinct scores, tied samples taken together. None without
    positives."""
    total = int(positives.sum())
    if total == 0:
        return None
    order = np.argsort(-suspicion, kind="stable")
    scores, hits = suspicion[order], np.cumsum(positives[order])
    ends = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])  # the last index of each tie
    precision, recall = hits[ends] / (ends + 1), hits[ends] / total
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def detection(flagged: np.ndarray, corrupted: np.ndarray) -> dict[str, Any]:
    """Precision, recall and F1 of `flagged` as a guess of `corrupted`; None where undefined."""
    hits, count, total = int((flagged & corrupted).sum()), int(flagged.sum()), int(corrupted.sum())
    precision = hits / count if count else None
    recall = hits / total if total else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"count": count, "precision": precision, "recall": recall, "f1": f1}


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelQuality:
    """label_report.json (`report`) and the per-sample scores, in the order of the samples given."""

    report: dict[str, Any]
    self_confidence: np.ndarray
    margin: np.ndarray
    flagged: np.ndarray  # bool


def assess_labels(
    probabilities: np.ndarray,
    given: np.ndarray,
    num_classes: int,
    *,
    losses: np.ndarray | None = None,
    clean: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    source: str = "in_sample",
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
    flagging: str = DEFAULT_FLAGGING,
) -> LabelQuality:
    """The label-quality report of samples with `given` labels and predicted `probabilities`
    [n, K] (`source`: "in_sample" from the model trained on them, "cross_fitted" from models
    that did not see them). `losses` rank suspects (default −log p_given); `clean`, when known,
    adds `against_clean`; `classes` names the classes."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    given = np.asarray(given, dtype=np.int64)
    k = num_classes
    n = len(given)
    counts = confident_joint(probabilities, given, k)
    joint = calibrated_joint(counts.astype(np.float64), np.bincount(given, minlength=k).astype(np.float64))
    rates = noise_rates(joint)
    boot = noise_rates(bootstrap_joints(probabilities, given, k, resamples, seed))
    transition = transition_matrix(joint)
    confidence = self_confidence(probabilities, given)
    margin = normalized_margin(probabilities, given)
    flagged = FLAGGING[flagging](probabilities, given, joint)
    if losses is None:
        losses = -np.log(np.maximum(confidence, TINY))
    names = list(classes) if classes is not None else None

    report: dict[str, Any] = {
        "probabilities": source,
        "num_samples": n,
        "num_classes": k,
        "classes": names,
        "orientation": ORIENTATION,
        "noise_rate": _interval(rates.overall, boot.overall),
        "per_class_noise_rate": rates.per_true_class.tolist(),
        "per_class": _per_class(joint, rates, boot, np.bincount(given, minlength=k), names),
        "transition_matrix": transition.tolist(),
        "joint": joint.T.tolist(),
        "confident_joint": counts.T.tolist(),
        "thresholds": class_thresholds(probabilities, given, k).tolist(),
        "confused_pairs": confused_pairs(joint, transition, n, names),
        "flagged": {"method": flagging, "count": int(flagged.sum()), "share": float(flagged.mean()) if n else None},
        "bootstrap": {"resamples": resamples, "level": BOOTSTRAP_LEVEL, "seed": seed, "method": "percentile"},
        "against_clean": None,
    }
    if clean is not None:
        scores = {"loss": losses, "self_confidence": -confidence, "margin": -margin}
        report["against_clean"] = against_clean(
            np.asarray(clean, dtype=np.int64), given, k, report, flagged, scores,
            {name: flag(probabilities, given, joint) for name, flag in FLAGGING.items()},
        )
    return LabelQuality(report, confidence, margin, flagged)


def _interval(estimate: np.ndarray, resampled: np.ndarray) -> dict[str, float]:
    low, high = percentile_interval(resampled)
    return {"estimate": float(estimate), "low": float(low), "high": float(high)}


def _per_class(joint: np.ndarray, rates: NoiseRates, boot: NoiseRates, given_counts: np.ndarray,
               names: list[str] | None) -> list[dict[str, Any]]:
    true_low, true_high = percentile_interval(boot.per_true_class)
    given_low, given_high = percentile_interval(boot.per_given_label)
    n = int(given_counts.sum())
    return [
        {
            "class": i,
            "name": names[i] if names else None,
            "given_count": int(given_counts[i]),
            "estimated_true_count": float(n * joint[:, i].sum()),
            "noise_rate": {"estimate": float(rates.per_true_class[i]), "low": float(true_low[i]),
                           "high": float(true_high[i])},
            "given_label_noise_rate": {"estimate": float(rates.per_given_label[i]), "low": float(given_low[i]),
                                       "high": float(given_high[i])},
        }
        for i in range(joint.shape[0])
    ]


def confused_pairs(joint: np.ndarray, transition: np.ndarray, n: int, names: list[str] | None,
                   top: int = TOP_PAIRS) -> list[dict[str, Any]]:
    """The `top` off-diagonal cells of Q[given, true] with the most mass, largest first."""
    k = joint.shape[0]
    off = [(joint[g, t], t, g) for g in range(k) for t in range(k) if g != t and joint[g, t] > 0]
    off.sort(key=lambda cell: -cell[0])
    return [
        {
            "true": t, "given": g,
            "true_name": names[t] if names else None, "given_name": names[g] if names else None,
            "count": float(n * mass), "joint": float(mass), "share": float(transition[t, g]),
        }
        for mass, t, g in off[:top]
    ]


def against_clean(clean: np.ndarray, given: np.ndarray, k: int, report: dict[str, Any], flagged: np.ndarray,
                  scores: dict[str, np.ndarray], by_method: dict[str, np.ndarray]) -> dict[str, Any]:
    """The truth beside the estimate: noise rates, the transition matrix, and how well the
    flagged set and each ranking (`scores`, higher = more suspect) find the corrupted samples."""
    corrupted = clean != given
    truth = empirical_joint(clean, given, k)
    rates = noise_rates(truth)
    transition = transition_matrix(truth)
    estimated = np.array(report["transition_matrix"])
    estimate = report["noise_rate"]
    per_class_error = np.abs(np.array(report["per_class_noise_rate"]) - rates.per_true_class)
    ranking = {name: average_precision(score, corrupted) for name, score in scores.items()}
    return {
        "noise_rate": float(rates.overall),
        "noise_rate_error": abs(estimate["estimate"] - float(rates.overall)),
        "noise_rate_covered": bool(estimate["low"] <= rates.overall <= estimate["high"]),
        "per_class_noise_rate": rates.per_true_class.tolist(),
        "per_class_noise_rate_error": float(np.nanmean(per_class_error)) if k else None,
        "per_class_covered": int(sum(
            c["noise_rate"]["low"] <= r <= c["noise_rate"]["high"] for c, r in zip(report["per_class"], rates.per_true_class)
        )),
        "transition_matrix": transition.tolist(),
        "transition_matrix_error": float(np.abs(estimated - transition).mean()),
        "transition_matrix_max_error": float(np.abs(estimated - transition).max()),
        "num_corrupted": int(corrupted.sum()),
        **{key: value for key, value in detection(flagged, corrupted).items() if key != "count"},
        "average_precision": ranking["loss"],
        "average_precision_by_score": ranking,
        "flagged_by_method": {name: detection(mask, corrupted) for name, mask in by_method.items()},
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What result.json and the job record carry of the report."""
    clean = report["against_clean"] or {}
    return {
        "probabilities": report["probabilities"],
        "noise_rate": report["noise_rate"],
        "noise_rate_true": clean.get("noise_rate"),
        "flagged": report["flagged"]["count"],
        "precision": clean.get("precision"),
        "recall": clean.get("recall"),
        "f1": clean.get("f1"),
    }
