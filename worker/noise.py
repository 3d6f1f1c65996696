"""Synthetic label noise: symmetric, asymmetric (the paper's class maps), pair-flip, transition.

Every kind is a pair of functions registered in `NOISE_KINDS`: `matrix` gives the expected
K×K transition matrix T (T[i, j] = P(noisy = j | clean = i)) and validates the settings;
`corrupt` draws the noisy labels. Counted kinds flip an exact number of samples per class,
always chosen among the *clean* labels, so the realised rate equals the asked one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ROW_SUM_TOL = 1e-6
# rate * n is computed in floating point: 0.29 * 100 = 28.999999999999996 must count as 29.
COUNT_TOL = 1e-9


class NoiseError(ValueError):
    """A noise setting that cannot be applied; the message says what to change."""


@dataclass(frozen=True)
class NoiseSpec:
    rate: float
    num_classes: int
    dataset: str | None = None
    coarse_of_class: np.ndarray | None = None  # fine class -> super-class, length K
    matrix: np.ndarray | None = None
    cifar100_blocks: bool = False


Corrupt = Callable[[np.ndarray, NoiseSpec, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class NoiseKind:
    matrix: Callable[[NoiseSpec], np.ndarray]
    corrupt: Corrupt


NOISE_KINDS: dict[str, NoiseKind] = {}


def register_noise(name: str, matrix: Callable[[NoiseSpec], np.ndarray]) -> Callable[[Corrupt], Corrupt]:
    def register(corrupt: Corrupt) -> Corrupt:
        NOISE_KINDS[name] = NoiseKind(matrix=matrix, corrupt=corrupt)
        return corrupt

    return register


# ---------------------------------------------------------------------------------------
# Class maps for asymmetric noise (source class -> target class), one per data set.
# ---------------------------------------------------------------------------------------

ClassMap = dict[int, int]

# The paper names no MNIST map; this is its reference code's (which flips each sample
# independently; here, as for every map, the count per class is exact).
MNIST_MAP: ClassMap = {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}
# TRUCK->AUTOMOBILE, BIRD->AIRPLANE, DEER->HORSE, CAT<->DOG (paper, Section 5.2).
CIFAR10_MAP: ClassMap = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
# Zhang & Sabuncu, "Generalized Cross Entropy Loss ...", NeurIPS 2018, Section 4:
# BOOT->SNEAKER, SNEAKER->SANDAL, PULLOVER->SHIRT, COAT<->DRESS.
FASHION_MNIST_MAP: ClassMap = {9: 7, 7: 5, 2: 6, 4: 3, 3: 4}


def _fixed_map(mapping: ClassMap) -> Callable[[NoiseSpec], ClassMap]:
    return lambda spec: dict(mapping)


def _cifar100_map(spec: NoiseSpec) -> ClassMap:
    """Each class -> the next class of its super-class, circularly (paper, Section 5.2)."""
    if spec.cifar100_blocks:
        # The reference code's version: blocks of 5 consecutive (alphabetical) indices.
        return {c: 5 * (c // 5) + (c + 1) % 5 for c in range(spec.num_classes)}
    if spec.coarse_of_class is None:
        raise NoiseError(
            "asymmetric noise on cifar100 needs the super-class labels: pass "
            "coarse_labels=dataset.coarse_train (or cifar100_blocks=True for the reference "
            "code's blocks of 5 consecutive class indices)"
        )
    mapping: ClassMap = {}
    for group in np.unique(spec.coarse_of_class):
        members = np.flatnonzero(spec.coarse_of_class == group).tolist()
        for i, c in enumerate(members):
            if len(members) > 1:
                mapping[c] = members[(i + 1) % len(members)]
    return mapping


CLASS_MAPS: dict[str, Callable[[NoiseSpec], ClassMap]] = {
    "mnist": _fixed_map(MNIST_MAP),
    "fashion-mnist": _fixed_map(FASHION_MNIST_MAP),
    "cifar10": _fixed_map(CIFAR10_MAP),
    "cifar100": _cifar100_map,
}


# ---------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + COUNT_TOL))


def _check_rate_below(rate: float, limit: float, kind: str, why: str) -> None:
    if rate >= limit:
        raise NoiseError(
            f"{kind} noise needs rate < {limit:.4g} ({why}); got {rate}. "
            f"Use a rate below {limit:.4g}."
        )


def _map_matrix(mapping: ClassMap, spec: NoiseSpec) -> np.ndarray:
    T = np.eye(spec.num_classes)
    for source, target in mapping.items():
        T[source, source] = 1.0 - spec.rate
        T[source, target] += spec.rate
    return T


def _flip_exact(labels: np.ndarray, mapping: ClassMap, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Flip exactly round(rate * n_c) clean samples of each source class c to its target."""
    noisy = labels.copy()
    for source in sorted(mapping):
        members = np.flatnonzero(labels == source)
        count = _round_half_up(rate * members.size)
        noisy[rng.choice(members, size=count, replace=False)] = mapping[source]
    return noisy


# ---------------------------------------------------------------------------------------
# The kinds
# ---------------------------------------------------------------------------------------


def _none_matrix(spec: NoiseSpec) -> np.ndarray:
    if spec.rate != 0:
        raise NoiseError(f"noise kind 'none' takes no rate; got rate={spec.rate}. Set rate to 0.")
    return np.eye(spec.num_classes)


@register_noise("none", _none_matrix)
def _none(labels: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> np.ndarray:
    return labels.copy()


def _symmetric_matrix(spec: NoiseSpec) -> np.ndarray:
    K = spec.num_classes
    _check_rate_below(
        spec.rate, (K - 1) / K, "symmetric",
        f"at (K-1)/K the wrong labels are as frequent as the true one for K={K} classes",
    )
    T = np.full((K, K), spec.rate / (K - 1))
    np.fill_diagonal(T, 1.0 - spec.rate)
    return T


def _symmetric_counts(class_sizes: np.ndarray, rate: float) -> np.ndarray:
    """int(rate * N) flips shared over the classes in proportion to their sizes (largest remainder)."""
    total = int(math.floor(rate * class_sizes.sum() + COUNT_TOL))
    ideal = rate * class_sizes
    counts = np.floor(ideal + COUNT_TOL).astype(np.int64)
    order = np.argsort(-(ideal - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


@register_noise("symmetric", _symmetric_matrix)
def _symmetric(labels: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> np.ndarray:
    K = spec.num_classes
    noisy = labels.copy()
    counts = _symmetric_counts(np.bincount(labels, minlength=K), spec.rate)
    for c in range(K):
        chosen = rng.choice(np.flatnonzero(labels == c), size=counts[c], replace=False)
        noisy[chosen] = (c + rng.integers(1, K, size=counts[c])) % K  # uniform over the others
    return noisy


def _asymmetric_map(spec: NoiseSpec) -> ClassMap:
    if spec.dataset not in CLASS_MAPS:
        raise NoiseError(
            f"asymmetric noise has class maps for {sorted(CLASS_MAPS)}; got dataset="
            f"{spec.dataset!r}. Pass one of these, or use kind 'pairflip' or 'transition'."
        )
    mapping = CLASS_MAPS[spec.dataset](spec)
    highest = max([*mapping, *mapping.values()], default=-1)
    if highest >= spec.num_classes:
        raise NoiseError(
            f"the {spec.dataset} class map uses class {highest}, but num_classes={spec.num_classes}"
        )
    return mapping


def _asymmetric_matrix(spec: NoiseSpec) -> np.ndarray:
    _check_rate_below(spec.rate, 0.5, "asymmetric", "at 0.5 the flipped class outnumbers the true one")
    return _map_matrix(_asymmetric_map(spec), spec)


@register_noise("asymmetric", _asymmetric_matrix)
def _asymmetric(labels: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> np.ndarray:
    return _flip_exact(labels, _asymmetric_map(spec), spec.rate, rng)


def _pairflip_map(spec: NoiseSpec) -> ClassMap:
    return {c: (c + 1) % spec.num_classes for c in range(spec.num_classes)}


def _pairflip_matrix(spec: NoiseSpec) -> np.ndarray:
    _check_rate_below(spec.rate, 0.5, "pairflip", "at 0.5 the flipped class outnumbers the true one")
    return _map_matrix(_pairflip_map(spec), spec)


@register_noise("pairflip", _pairflip_matrix)
def _pairflip(labels: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> np.ndarray:
    return _flip_exact(labels, _pairflip_map(spec), spec.rate, rng)


def _transition_matrix(spec: NoiseSpec) -> np.ndarray:
    if spec.rate != 0:
        raise NoiseError(
            f"noise kind 'transition' takes its rates from the matrix; got rate={spec.rate}. "
            "Set rate to 0."
        )
    if spec.matrix is None:
        raise NoiseError("noise kind 'transition' needs matrix=[[...], ...] (K rows of K probabilities)")
    return _validated_matrix(spec.matrix, spec.num_classes)


def _validated_matrix(matrix: Any, K: int) -> np.ndarray:
    try:
        T = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise NoiseError(f"the transition matrix must be {K} rows of {K} numbers: {err}") from err
    if T.shape != (K, K):
        raise NoiseError(f"the transition matrix must be {K}x{K} (num_classes={K}); got shape {T.shape}")
    for i, row in enumerate(T):
        if not np.all((row >= 0) & (row <= 1)):
            raise NoiseError(f"transition matrix row {i} has entries outside [0, 1]: {row.tolist()}")
        if abs(row.sum() - 1.0) > ROW_SUM_TOL:
            raise NoiseError(
                f"transition matrix row {i} sums to {row.sum():.6g}; each row is P(noisy=j | clean={i}) "
                "and must sum to 1"
            )
        if np.any(np.delete(row, i) >= row[i]):
            raise NoiseError(
                f"transition matrix row {i}: T[{i}][{i}]={row[i]:.6g} must exceed every other entry "
                f"of the row, else class {i} cannot be learned from the noisy labels"
            )
    return T


@register_noise("transition", _transition_matrix)
def _transition(labels: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> np.ndarray:
    T = _validated_matrix(spec.matrix, spec.num_classes)
    noisy = labels.copy()
    for c in range(spec.num_classes):
        members = np.flatnonzero(labels == c)
        noisy[members] = rng.choice(spec.num_classes, size=members.size, p=T[c] / T[c].sum())
    return noisy


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def coarse_of_class(labels: Any, coarse_labels: Any, num_classes: int) -> np.ndarray:
    """The super-class of each fine class (length K), from per-sample fine and coarse labels."""
    fine = _as_numpy(labels).astype(np.int64)
    coarse = _as_numpy(coarse_labels).astype(np.int64)
    mapping = np.full(num_classes, -1, dtype=np.int64)
    mapping[fine] = coarse
    if np.any(mapping[fine] != coarse):
        raise NoiseError("coarse_labels put one fine class into two super-classes; pass the data set's own coarse labels")
    missing = np.flatnonzero(mapping < 0)
    if missing.size:
        raise NoiseError(
            f"classes {missing.tolist()[:10]} have no sample, so their super-class is unknown; pass "
            "coarse_labels as the per-class map coarse_of_class(full_labels, full_coarse, K)"
        )
    return mapping


def _coarse_map(coarse_labels: Any, labels: np.ndarray | None, num_classes: int) -> np.ndarray | None:
    """Per-sample coarse labels (aligned with labels) or a per-class map of length K."""
    if coarse_labels is None:
        return None
    coarse = _as_numpy(coarse_labels).astype(np.int64)
    if labels is not None and coarse.shape == labels.shape:
        return coarse_of_class(labels, coarse, num_classes)
    if coarse.shape == (num_classes,):
        return coarse
    raise NoiseError(
        f"coarse_labels must hold one super-class per sample ({0 if labels is None else labels.size}) "
        f"or one per class ({num_classes}); got shape {coarse.shape}"
    )


def _spec(
    kind: str, rate: float, num_classes: int, dataset: str | None, coarse: np.ndarray | None,
    matrix: Any, cifar100_blocks: bool,
) -> NoiseSpec:
    if kind not in NOISE_KINDS:
        raise NoiseError(f"unknown noise kind {kind!r}; choose one of {sorted(NOISE_KINDS)}")
    if not 0 <= rate < 1:  # also refuses NaN
        raise NoiseError(f"noise rate must be in [0, 1); got {rate}")
    if num_classes < 2:
        raise NoiseError(f"num_classes must be at least 2; got {num_classes}")
    return NoiseSpec(rate, num_classes, dataset, coarse, matrix, cifar100_blocks)


def transition_matrix(
    kind: str,
    rate: float,
    num_classes: int,
    dataset: str | None = None,
    coarse_labels: Sequence[int] | np.ndarray | None = None,
    *,
    matrix: Any = None,
    cifar100_blocks: bool = False,
) -> np.ndarray:
    """The expected K×K matrix T[i, j] = P(noisy = j | clean = i); coarse_labels is per class here."""
    coarse = _coarse_map(coarse_labels, None, num_classes)
    spec = _spec(kind, rate, num_classes, dataset, coarse, matrix, cifar100_blocks)
    return NOISE_KINDS[kind].matrix(spec)


def _check_labels(labels: np.ndarray, num_classes: int) -> None:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise NoiseError(f"labels must be a 1-D integer array; got shape {labels.shape}, dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise NoiseError(f"labels must lie in [0, {num_classes}); got [{labels.min()}, {labels.max()}]")


def corrupt_labels(
    labels: Any,
    kind: str,
    *,
    num_classes: int,
    rate: float = 0.0,
    seed: int = 0,
    dataset: str | None = None,
    coarse_labels: Any = None,
    matrix: Any = None,
    cifar100_blocks: bool = False,
) -> tuple[Any, Any]:
    """Noisy labels and the mask of changed ones, as numpy arrays or torch tensors like `labels`.

    coarse_labels: per-sample super-classes aligned with labels, or a per-class map of length K.
    """
    clean = _as_numpy(labels)
    _check_labels(clean, num_classes)
    coarse = _coarse_map(coarse_labels, clean, num_classes)
    spec = _spec(kind, rate, num_classes, dataset, coarse, matrix, cifar100_blocks)
    NOISE_KINDS[kind].matrix(spec)  # validates the settings before drawing
    rng = np.random.Generator(np.random.PCG64(seed))
    noisy = NOISE_KINDS[kind].corrupt(clean, spec, rng).astype(clean.dtype)
    corrupted = noisy != clean
    if isinstance(labels, torch.Tensor):
        return torch.from_numpy(noisy).to(labels.device), torch.from_numpy(corrupted).to(labels.device)
    return noisy, corrupted


def noise_report(labels: Any, noisy: Any, num_classes: int) -> dict[str, Any]:
    """Realised noise: overall and per clean class (None for a class without samples)."""
    clean, noisy = _as_numpy(labels), _as_numpy(noisy)
    wrong = clean != noisy
    sizes = np.bincount(clean, minlength=num_classes)
    wrong_per_class = np.bincount(clean, weights=wrong, minlength=num_classes)
    return {
        "rate": float(wrong.mean()) if clean.size else 0.0,
        "num_samples": int(clean.size),
        "num_corrupted": int(wrong.sum()),
        "per_class_rate": [float(w / n) if n else None for w, n in zip(wrong_per_class, sizes)],
    }
