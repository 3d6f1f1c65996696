"""The rules of a spec, applied: loss names, loss parameters, weights and label noise.

The rules themselves are data in shared/catalog.py. These functions are their only readers:
the API resolves a job spec with them (shared/spec.py), and the engine builds a loss
(worker/losses.py) and corrupts labels (worker/noise.py) with them, so what one accepts the
other accepts, and a refusal names the field and what to change (SpecError).
"""

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.catalog import COMBINATIONS, DATASETS, LOSSES, NOISE_KINDS, ParamRule
from shared.errors import SpecError

MAX_WEIGHT = 1000.0  # α and β
ROW_SUM_TOL = 1e-6  # a transition matrix row sums to 1 within this


@dataclass(frozen=True)
class LossForm:
    """A parsed loss name: its canonical spelling and the terms it weighs α, β.

    "nce" -> terms ("nce",); "sce" -> ("ce", "rce"); "NCE + RCE" -> "nce+rce", ("nce", "rce")."""

    name: str
    terms: tuple[str, ...]

    @property
    def takes_beta(self) -> bool:
        return len(self.terms) == 2


def _choices(names: Sequence[str]) -> str:
    return ", ".join(sorted(names))


def parse_loss(name: object) -> LossForm:
    """Split a loss name into its terms, refusing what the APL framework does not define."""
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"a loss is a name such as 'nce' or 'nce+rce'; got {name!r}", "loss")
    parts = tuple(part.strip() for part in name.strip().lower().split("+"))
    for part in parts:
        if part not in LOSSES:
            raise SpecError(
                f"unknown loss {part!r}; known losses: {_choices(LOSSES)}, "
                "or two of them written active+passive, e.g. nce+rce", "loss",
            )
    canonical = "+".join(parts)
    if len(parts) == 1:
        return LossForm(canonical, LOSSES[canonical].terms or parts)
    if len(parts) > 2:
        raise SpecError(f"{name!r} has {len(parts)} terms; a combination has two: active+passive, e.g. nce+rce", "loss")
    first, second = parts
    for part in parts:
        if LOSSES[part].terms is not None:
            raise SpecError(
                f"{part} is already the combination {'+'.join(LOSSES[part].terms)}; use it alone, or "
                f"combine two single terms, e.g. nce+rce", "loss",
            )
    if first == second:
        raise SpecError(f"{name!r} names {first} twice; to scale one term, use it alone with alpha", "loss")
    for part in parts:
        if not LOSSES[part].robust:
            normalized = f"n{part}"
            hint = f"its normalized form {normalized}, e.g. {normalized}+rce" if normalized in LOSSES else "a robust term"
            if part == "ce":
                hint += ", or sce for alpha*ce + beta*rce"
            raise SpecError(f"{part} is not robust to label noise, so a combination cannot use it; use {hint}", "loss")
    roles = (LOSSES[first].role, LOSSES[second].role)
    if roles not in {c.roles for c in COMBINATIONS.values()}:
        if roles[::-1] in {c.roles for c in COMBINATIONS.values()}:
            raise SpecError(f"write the {roles[1]} term first: {second}+{first} (alpha weighs the first term)", "loss")
        raise SpecError(f"{canonical} combines {roles[0]} with {roles[1]}, which no combination defines", "loss")
    return LossForm(canonical, parts)


def finite_number(value: object, field: str) -> float:
    """A real, finite number (not a bool); else a SpecError naming the field."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise SpecError(f"{field} must be a finite number; got {value!r}", field)
    return float(value)


def check_weights(form: LossForm, alpha: float, beta: float | None) -> None:
    """α > 0 weighs the first term; β > 0 the second, and only a two-term loss takes it."""
    if beta is not None and not form.takes_beta:
        raise SpecError(
            f"{form.name} is a single term: beta has nothing to weigh; drop beta and scale it with alpha, "
            "or name an active+passive pair, e.g. nce+rce", "beta",
        )
    for field, weight in (("alpha", alpha), ("beta", beta)):
        if weight is None:
            continue
        if not 0 < finite_number(weight, field) <= MAX_WEIGHT:
            raise SpecError(f"{field} must be in (0, {MAX_WEIGHT:g}] (the paper's α, β > 0); got {weight!r}", field)


def _owners(form: LossForm) -> dict[str, list[str]]:
    """Parameter name -> the terms that take it."""
    owners: dict[str, list[str]] = {}
    for term in form.terms:
        for param in LOSSES[term].params:
            owners.setdefault(param, []).append(term)
    return owners


def _rule(term: str, param: str) -> ParamRule:
    return LOSSES[term].params[param]


def loss_params(form: LossForm, given: Mapping[str, object], preset: Mapping[str, float] = {}) -> dict[str, float]:
    """Every parameter of the loss's terms, resolved: given > preset > the term's default.

    A plain name ("q") sets every term that takes it; "term.param" ("agce.q") one term only and
    wins over the plain name. The answer names each value once: plainly when one term takes the
    parameter or all its terms share one value, else "term.param" for each term.
    """
    owners = _owners(form)
    accepted = sorted(owners) + sorted(f"{t}.{p}" for p, ts in owners.items() for t in ts if form.takes_beta)
    values: dict[tuple[str, str], float] = {}
    for source in (preset, given):
        for key in sorted(source, key=lambda k: "." in k):
            term, _, param = key.rpartition(".")
            targets = [t for t in owners.get(param, []) if term in ("", form.name, t)]
            if not targets:
                if source is preset:
                    continue  # a preset of the family may name a parameter this loss lacks
                taken = f"it takes: {', '.join(accepted)}" if accepted else "it takes none"
                raise SpecError(f"{form.name} takes no parameter {key!r}; {taken}", f"loss_params.{key}")
            value = finite_number(source[key], f"loss_params.{key}")
            for target in targets:
                rule = _rule(target, param)
                if not rule.allows(value):
                    raise SpecError(f"{target} needs {rule.rule(param)}; got {param}={value:g}", f"loss_params.{key}")
                values[target, param] = value
    resolved: dict[str, float] = {}
    for param, terms in owners.items():
        chosen = [values.get((t, param), _rule(t, param).default) for t in terms]
        if len(set(chosen)) == 1:
            resolved[param] = chosen[0]
        else:
            resolved.update({f"{t}.{param}": v for t, v in zip(terms, chosen)})
    return resolved


def term_params(form: LossForm, params: Mapping[str, float]) -> list[dict[str, float]]:
    """Each term's own parameters from a resolved `loss_params` (see loss_params)."""
    return [
        {p: params.get(f"{t}.{p}", params.get(p, rule.default)) for p, rule in LOSSES[t].params.items()}
        for t in form.terms
    ]


def max_noise_rate(kind: str, num_classes: int) -> float | None:
    """The exclusive upper bound of a kind's rate, None when it takes no rate."""
    return {"(K-1)/K": (num_classes - 1) / num_classes, "1/2": 0.5}.get(NOISE_KINDS[kind].rate_below)


def check_noise(
    kind: object, rate: object, num_classes: int, *, matrix: object = None, has_class_map: bool = True
) -> None:
    """Refuse a noise setting that cannot be applied to `num_classes` classes."""
    if kind not in NOISE_KINDS:
        raise SpecError(f"unknown noise type {kind!r}; choose one of: {_choices(NOISE_KINDS)}", "noise.type")
    info = NOISE_KINDS[kind]
    rate = finite_number(rate, "noise.rate")
    limit = max_noise_rate(kind, num_classes)
    if limit is None and rate != 0:
        raise SpecError(
            f"noise type {kind!r} takes no rate" + ("; its rates come from the matrix" if info.needs_matrix else "")
            + "; leave rate at 0" + ("" if info.needs_matrix else ", or choose a type such as symmetric"),
            "noise.rate",
        )
    if limit is not None and not 0 <= rate < limit:
        raise SpecError(
            f"{kind} noise needs 0 <= rate < {limit:.4g} on {num_classes} classes ({info.rate_reason}); "
            f"got {rate:g}. Use a rate below {limit:.4g}", "noise.rate",
        )
    if info.needs_class_map and not has_class_map:
        raise SpecError(
            f"asymmetric noise uses the paper's class maps, which exist only for the built-in data sets "
            f"({_choices(DATASETS)}); use pairflip, or transition with your own matrix", "noise.type",
        )
    if info.needs_matrix:
        check_matrix(matrix, num_classes)
    elif matrix is not None:
        raise SpecError("a matrix is used only with noise type 'transition'; drop it or set that type", "noise.matrix")


def check_matrix(matrix: object, k: int) -> None:
    """A K×K row-stochastic matrix whose diagonal leads every row (each class stays learnable)."""
    if matrix is None:
        raise SpecError(f"transition noise needs a {k}×{k} matrix: row i is P(noisy label | true i)", "noise.matrix")
    rows = matrix.tolist() if hasattr(matrix, "tolist") else matrix
    if not isinstance(rows, Sequence) or len(rows) != k or any(not isinstance(r, Sequence) or len(r) != k for r in rows):
        raise SpecError(f"the matrix must be {k}×{k}, one row and one column per class", "noise.matrix")
    for i, row in enumerate(rows):
        values = [finite_number(v, f"noise.matrix[{i}]") for v in row]
        if any(not 0.0 <= v <= 1.0 for v in values):
            raise SpecError(f"row {i} has entries outside [0, 1]: {values}; each is a probability", "noise.matrix")
        if abs(sum(values) - 1.0) > ROW_SUM_TOL:
            raise SpecError(
                f"row {i} sums to {sum(values):.6g}; row i is P(noisy label | true class i) and must sum to 1",
                "noise.matrix",
            )
        if any(values[j] >= values[i] for j in range(k) if j != i):
            raise SpecError(
                f"row {i}: the true class must stay the most likely label (matrix[{i}][{i}] largest), "
                f"else class {i} cannot be learned", "noise.matrix",
            )

