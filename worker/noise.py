"""Synthetic label noise: symmetric, asymmetric (the paper's class maps), pair-flip, transition.

The kinds, their rate bounds and the matrix rules are the catalog's (shared/catalog.py) and are
checked by shared/rules.py, as for a job spec. Each kind's code is a pair of functions registered
in `IMPLEMENTATIONS` under the catalog's name: `matrix` gives the expected K×K transition matrix
T (T[i, j] = P(noisy = j | clean = i)); `corrupt` draws the noisy labels. Counted kinds flip an exact number of samples per class,
always chosen among the *clean* labels, so the realised rate equals the asked one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shared.catalog import NOISE_KINDS
from shared.errors import SpecError
from shared.rules import check_noise

# rate * n is computed in floating point: 0.29 * 100 = 28.999999999999996 must count as 29.
COUNT_TOL = 1e-9


@dataclass(frozen=True)
class Corruption:
    """One noise kind's settings, checked, as its implementation reads them."""

    rate: float
    num_classes: int
    dataset: str | None = None
    coarse_of_class: np.ndarray | None = None  # fine class -> super-class, length K
    matrix: np.ndarray | None = None
    cifar100_blocks: bool = False


Corrupt = Callable[[np.ndarray, Corruption, np.random.Generator], np.ndarray]
Matrix = Callable[[Corruption], np.ndarray]


@dataclass(frozen=True)
class NoiseImplementation:
    matrix: Matrix
    corrupt: Corrupt


IMPLEMENTATIONS: dict[str, NoiseImplementation] = {}
"""The catalog's noise kind name -> its code."""


def implements(name: str, matrix: Matrix) -> Callable[[Corrupt], Corrupt]:
    """Decorator: register `corrupt` (and its expected `matrix`) as the catalog's noise kind `name`."""
    if name not in NOISE_KINDS:
        raise SpecError(f"the catalog has no noise kind {name!r}", "noise.type")

    def register(corrupt: Corrupt) -> Corrupt:
        IMPLEMENTATIONS[name] = NoiseImplementation(matrix=matrix, corrupt=corrupt)
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


def _fixed_map(mapping: ClassMap) -> Callable[[Corruption], ClassMap]:
    return lambda spec: dict(mapping)


def _cifar100_map(spec: Corruption) -> ClassMap:
    """Each class -> the next class of its super-class, circularly (paper, Section 5.2)."""
    if spec.cifar100_blocks:
        # The reference code's version: blocks of 5 consecutive (alphabetical) indices.
        return {c: 5 * (c // 5) + (c + 1) % 5 for c in range(spec.num_classes)}
    if spec.coarse_of_class is None:
        raise SpecError(
            "asymmetric noise on cifar100 needs the super-class labels: pass "
            "coarse_labels=dataset.coarse_train (or cifar100_blocks=True for the reference "
            "code's blocks of 5 consecutive class indices)", "noise.type",
        )
    mapping: ClassMap = {}
    for group in np.unique(spec.coarse_of_class):
        members = np.flatnonzero(spec.coarse_of_class == group).tolist()
        for i, c in enumerate(members):
            if len(members) > 1:
                mapping[c] = members[(i + 1) % len(members)]
    return mapping


CLASS_MAPS: dict[str, Callable[[Corruption], ClassMap]] = {
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


def _map_matrix(mapping: ClassMap, spec: Corruption) -> np.ndarray:
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


def _identity(spec: Corruption) -> np.ndarray:
    return np.eye(spec.num_classes)


@implements("none", _identity)
def _none(labels: np.ndarray, spec: Corruption, rng: np.random.Generator) -> np.ndarray:
    return labels.copy()


def _symmetric_matrix(spec: Corruption) -> np.ndarray:
    K = spec.num_classes
    T = np.full((K, K), spec.rate / (K - 1))
    np.fill_diagonal(T, 1.0 - spec.rate)
    return T


def _symmetric_counts(class_sizes: np.ndarray, rate: float) -> np.ndarray:
    """int(rate * N) flips shared over the classes in proportion to their sizes (largest remainder),
    in integers, so the shares add up to the total exactly."""
    n = int(class_sizes.sum())
    total = int(math.floor(rate * n + COUNT_TOL))
    shares = total * class_sizes.astype(np.int64)
    counts, remainders = shares // max(n, 1), shares % max(n, 1)
    order = np.argsort(-remainders, kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


@implements("symmetric", _symmetric_matrix)
def _symmetric(labels: np.ndarray, spec: Corruption, rng: np.random.Generator) -> np.ndarray:
    K = spec.num_classes
    noisy = labels.copy()
    counts = _symmetric_counts(np.bincount(labels, minlength=K), spec.rate)
    for c in range(K):
        chosen = rng.choice(np.flatnonzero(labels == c), size=counts[c], replace=False)
        noisy[chosen] = (c + rng.integers(1, K, size=counts[c])) % K  # uniform over the others
    return noisy


def _asymmetric_map(spec: Corruption) -> ClassMap:
    if spec.dataset not in CLASS_MAPS:
        raise SpecError(
            f"asymmetric noise has class maps for {sorted(CLASS_MAPS)}; got dataset="
            f"{spec.dataset!r}. Pass one of these, or use kind 'pairflip' or 'transition'.", "noise.type",
        )
    mapping = CLASS_MAPS[spec.dataset](spec)
    highest = max([*mapping, *mapping.values()], default=-1)
    if highest >= spec.num_classes:
        raise SpecError(
            f"the {spec.dataset} class map uses class {highest}, but num_classes={spec.num_classes}", "num_classes",
        )
    return mapping


def _asymmetric_matrix(spec: Corruption) -> np.ndarray:
    return _map_matrix(_asymmetric_map(spec), spec)


@implements("asymmetric", _asymmetric_matrix)
def _asymmetric(labels: np.ndarray, spec: Corruption, rng: np.random.Generator) -> np.ndarray:
    return _flip_exact(labels, _asymmetric_map(spec), spec.rate, rng)


def _pairflip_map(spec: Corruption) -> ClassMap:
    return {c: (c + 1) % spec.num_classes for c in range(spec.num_classes)}


def _pairflip_matrix(spec: Corruption) -> np.ndarray:
    return _map_matrix(_pairflip_map(spec), spec)


@implements("pairflip", _pairflip_matrix)
def _pairflip(labels: np.ndarray, spec: Corruption, rng: np.random.Generator) -> np.ndarray:
    return _flip_exact(labels, _pairflip_map(spec), spec.rate, rng)


def _transition_matrix(spec: Corruption) -> np.ndarray:
    return np.asarray(spec.matrix, dtype=np.float64)


@implements("transition", _transition_matrix)
def _transition(labels: np.ndarray, spec: Corruption, rng: np.random.Generator) -> np.ndarray:
    T = _transition_matrix(spec)
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
        raise SpecError("coarse_labels put one fine class into two super-classes; pass the data set's own coarse labels")
    missing = np.flatnonzero(mapping < 0)
    if missing.size:
        raise SpecError(
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
    raise SpecError(
        f"coarse_labels must hold one super-class per sample ({0 if labels is None else labels.size}) "
        f"or one per class ({num_classes}); got shape {coarse.shape}"
    )


def _corruption(
    kind: str, rate: float, num_classes: int, dataset: str | None, coarse: np.ndarray | None,
    matrix: Any, cifar100_blocks: bool,
) -> Corruption:
    """The settings, checked by the same rules as a job spec's noise (shared/rules.py)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise SpecError(f"num_classes must be an integer >= 2; got {num_classes!r}", "num_classes")
    check_noise(kind, rate, num_classes, matrix=matrix, has_class_map=dataset in CLASS_MAPS)
    corruption = Corruption(float(rate), num_classes, dataset, coarse, matrix, cifar100_blocks)
    if kind == "asymmetric":
        _asymmetric_map(corruption)  # the data set's own map must fit its classes
    return corruption


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
    return IMPLEMENTATIONS[kind].matrix(_corruption(kind, rate, num_classes, dataset, coarse, matrix, cifar100_blocks))


def _check_labels(labels: np.ndarray, num_classes: int) -> None:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise SpecError(f"labels must be a 1-D integer array; got shape {labels.shape}, dtype {labels.dtype}", "labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise SpecError(f"labels must lie in [0, {num_classes}); got [{labels.min()}, {labels.max()}]", "labels")


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
    corruption = _corruption(kind, rate, num_classes, dataset, coarse, matrix, cifar100_blocks)
    rng = np.random.Generator(np.random.PCG64(seed))
    noisy = IMPLEMENTATIONS[kind].corrupt(clean, corruption, rng).astype(clean.dtype)
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
