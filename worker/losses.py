"""The losses of "Normalized Loss Functions for Deep Learning with Noisy Labels" (Ma et al.,
ICML 2020) and the robust losses built on it, composed by name.

    loss_fn = make_loss("nce+rce", num_classes=10, alpha=1.0, beta=1.0)
    loss = loss_fn(logits, labels)

Every term is registered as its per-class loss matrix L[b, j] = L(f(x_b), j): the loss sample b
would get if its label were j. The plain loss reads column y; Eq. 1 divides by the row sum, so
NCE, NFL, NGCE, NMAE and NRCE are one operation (`normalize`) applied to CE, FL, GCE, MAE and RCE,
and any base loss registered later gets its normalized form the same way. A name "X+Y" is
α·X + β·Y: an Active Passive Loss (Eq. 6), or the paper's AAL / PPL ablations.
Formulas, defaults and where we differ from the reference code: docs/LOSSES.md.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

# Everything is computed in fp32 (fp64 stays fp64) from log p = log_softmax(z), and p^q is written
# exp(q·log p), so values and gradients stay finite for logits up to ±1e4, where p is exactly 0 or 1.
EPS = 1e-7
"""Floor of 1 - p in the focal factor (1 - p)^γ: for γ < 1 its derivative is infinite at p = 1,
and ∞·0 would make the gradient NaN. It changes the loss by less than EPS^γ·EPS."""

NNCE_MIN_PROB = 1e-7
"""p̃ = clamp(p, NNCE_MIN_PROB, 1) of Active Negative Loss (Ye et al., 2023); A = -ln of it."""

Role = Literal["active", "passive"]
Reduction = Literal["mean", "sum", "none"]


class LossSpecError(ValueError):
    """A loss request that cannot be built; the message says what to write instead."""


@dataclass(frozen=True)
class Param:
    """A loss parameter: its default and the values it may take."""

    default: float
    rule: str
    allows: Callable[[float], bool]


@dataclass(frozen=True)
class Term:
    """A registered loss: `per_class(log_p, **params)` gives L[b, j] for every candidate label j."""

    name: str
    per_class: Callable[..., Tensor]
    role: Role
    robust: bool
    params: Mapping[str, Param] = field(default_factory=dict)

    def __call__(self, log_p: Tensor, labels: Tensor, **params: float) -> Tensor:
        """The per-sample loss L(f(x_b), y_b)."""
        return self.per_class(log_p, **params).gather(1, labels[:, None]).squeeze(1)


@dataclass(frozen=True)
class Composite:
    """A named pair of terms weighed α, β that need not be robust: SCE = α·CE + β·RCE."""

    name: str
    terms: tuple[str, str]


LOSSES: dict[str, Term | Composite] = {}


def register(entry: Term | Composite) -> Term | Composite:
    """Make `entry` available to make_loss under its name."""
    LOSSES[entry.name] = entry
    return entry


def loss_term(name: str, *, role: Role, robust: bool, **params: Param) -> Callable[[Callable], Callable]:
    """Decorator: register a per-class loss function under `name`."""

    def decorate(per_class: Callable[..., Tensor]) -> Callable[..., Tensor]:
        register(Term(name, per_class, role, robust, params))
        return per_class

    return decorate


def normalize(base: Term | str) -> Term:
    """The normalized form "n<base>" of any registered base loss (Eq. 1): robust whatever the base.

    The base's row sum Σ_j L(f(x), j) must be positive, as it is for every loss here.
    """
    if isinstance(base, str):
        if base not in LOSSES:
            raise LossSpecError(f"register the base loss {base!r} before normalizing it")
        base = LOSSES[base]
    if not isinstance(base, Term):
        raise LossSpecError(f"only a single term can be normalized; {base.name} is a combination")

    def per_class(log_p: Tensor, **params: float) -> Tensor:
        L = base.per_class(log_p, **params)
        return L / L.sum(dim=1, keepdim=True)  # L_norm(f(x), y) = L(f(x), y) / Σ_j L(f(x), j)  (Eq. 1)

    return Term("n" + base.name, per_class, base.role, robust=True, params=base.params)


def _above(name: str, bound: float, default: float) -> Param:
    return Param(default, f"{name} > {bound:g}", lambda v: v > bound)


GAMMA = Param(0.5, "gamma >= 0", lambda v: v >= 0)
RCE_A = Param(math.log(1e-4), "A < 0 (A is the log of the value that stands in for log 0)", lambda v: v < 0)


@loss_term("ce", role="active", robust=False)
def cross_entropy(log_p: Tensor) -> Tensor:
    return -log_p  # CE = -log p_y  (Sec. 3.1)


@loss_term("fl", role="active", robust=False, gamma=GAMMA)
def focal(log_p: Tensor, gamma: float) -> Tensor:
    focal_factor = (1 - log_p.exp()).clamp_min(EPS) ** gamma  # kept in the graph: the true gradient
    return -focal_factor * log_p  # FL = -(1 - p_y)^γ log p_y  (Sec. 3.1)


@loss_term("gce", role="active", robust=False, q=_above("q", 0, 0.7))
def generalized_cross_entropy(log_p: Tensor, q: float) -> Tensor:
    return (1 - torch.exp(q * log_p)) / q  # GCE = (1 - p_y^q) / q  (Sec. 5.3)


@loss_term("mae", role="passive", robust=True)
def mean_absolute_error(log_p: Tensor) -> Tensor:
    return 1 - log_p.exp()  # MAE = 1 - p_y, half the paper's Σ_k |p_k - q_k| = 2(1 - p_y)  (Sec. 3.1)


@loss_term("rce", role="passive", robust=True, A=RCE_A)
def reverse_cross_entropy(log_p: Tensor, A: float) -> Tensor:
    return -A * (1 - log_p.exp())  # RCE = -Σ_k p_k log q_k with log 0 := A, = -A(1 - p_y)  (Sec. 3.1)


register(normalize("ce"))  # NCE = log p_y / log Π_k p_k  (Eq. 2)
register(normalize("mae"))  # NMAE = (1 - p_y) / (K - 1)  (Eq. 3)
register(normalize("rce"))  # NRCE = (1 - p_y) / (K - 1)  (Eq. 4)
register(normalize("fl"))  # NFL = (1 - p_y)^γ log p_y / Σ_k (1 - p_k)^γ log p_k  (Eq. 5)
register(normalize("gce"))  # NGCE = (1 - p_y^q) / (K - Σ_k p_k^q)  (Sec. 5.3)


@loss_term("nnce", role="passive", robust=True)
def normalized_negative_cross_entropy(log_p: Tensor) -> Tensor:
    log_min = math.log(NNCE_MIN_PROB)
    ell = log_p.clamp_min(log_min) - log_min  # ℓ_k = A + ln p̃_k, A = -ln NNCE_MIN_PROB  (Ye et al., 2023)
    return 1 - ell / ell.sum(dim=1, keepdim=True)  # NNCE = 1 - ℓ_y / Σ_k ℓ_k


@loss_term("agce", role="passive", robust=True, a=_above("a", 0, 6.0), q=_above("q", 0, 1.5))
def asymmetric_generalized_cross_entropy(log_p: Tensor, a: float, q: float) -> Tensor:
    return ((a + 1) ** q - (a + log_p.exp()) ** q) / q  # AGCE = ((a+1)^q - (a+p_y)^q) / q  (Zhou et al.)


@loss_term("aul", role="passive", robust=True, a=_above("a", 1, 6.3), q=_above("q", 0, 1.5))
def asymmetric_unhinged_loss(log_p: Tensor, a: float, q: float) -> Tensor:
    return ((a - log_p.exp()) ** q - (a - 1) ** q) / q  # AUL = ((a-p_y)^q - (a-1)^q) / q  (Zhou et al.)


@loss_term("ael", role="passive", robust=True, a=_above("a", 0, 5.0))
def asymmetric_exponential_loss(log_p: Tensor, a: float) -> Tensor:
    return torch.exp(-log_p.exp() / a)  # AEL = exp(-p_y / a)  (Zhou et al., ICML 2021)


register(Composite("sce", ("ce", "rce")))  # SCE = α·CE + β·RCE  (Wang et al., 2019)


def _terms() -> list[str]:
    return sorted(name for name, entry in LOSSES.items() if isinstance(entry, Term))


def parse_loss_name(name: str) -> tuple[str, ...]:
    """Split a loss name into registered names, refusing combinations the paper does not define.

    "nce" -> ("nce",); "sce" -> ("sce",); "nce+rce" -> ("nce", "rce"), active term first.
    """
    if not isinstance(name, str) or not name.strip():
        raise LossSpecError(f"a loss name is a string such as 'nce' or 'nce+rce'; got {name!r}")
    names = tuple(part.strip() for part in name.strip().lower().split("+"))
    for part in names:
        if part not in LOSSES:
            raise LossSpecError(
                f"unknown loss {part!r} in {name!r}; known losses: {', '.join(sorted(LOSSES))}, "
                "or two of them written active+passive, e.g. nce+rce"
            )
    if len(names) == 1:
        return names
    if len(names) > 2:
        raise LossSpecError(
            f"{name!r} has {len(names)} terms; a combination has two: active+passive, e.g. nce+rce"
        )
    first, second = (LOSSES[part] for part in names)
    for entry in (first, second):
        if isinstance(entry, Composite):
            raise LossSpecError(
                f"{entry.name} is already the combination {'+'.join(entry.terms)} and cannot be combined "
                f"further; use {entry.name} alone, or combine terms from: {', '.join(_terms())}"
            )
    if first.name == second.name:
        raise LossSpecError(f"{name!r} names {first.name} twice; combine two different terms, e.g. nce+rce")
    for term in (first, second):
        if not term.robust:
            normalized = f"n{term.name}"
            hint = (
                f"use its normalized form {normalized}, e.g. {normalized}+rce"
                if normalized in LOSSES
                else f"register its normalized form with register(normalize({term.name!r})) and use {normalized}"
            )
            if term.name == "ce":
                hint += ", or sce for alpha*ce + beta*rce"
            raise LossSpecError(f"{term.name} is not robust to label noise, so APL cannot use it; {hint}")
    if first.role == "passive" and second.role == "active":
        raise LossSpecError(f"write the active term first: {second.name}+{first.name}")
    return names


class Loss(nn.Module):
    """α·term (one term) or α·term₁ + β·term₂, per sample, then reduced over the batch.

    bf16/fp16 logits are computed in fp32 (fp64 stays fp64), so the loss is safe under autocast.
    """

    def __init__(
        self,
        name: str,
        num_classes: int,
        parts: list[tuple[float, Term, dict[str, float]]],
        reduction: Reduction,
    ) -> None:
        super().__init__()
        self.name = name
        self.num_classes = num_classes
        self.parts = parts
        self.reduction = reduction

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"{self.name} expects logits [B, {self.num_classes}]; got {list(logits.shape)}")
        if labels.shape != logits.shape[:1]:
            raise ValueError(f"{self.name} expects labels [{logits.shape[0]}]; got {list(labels.shape)}")
        log_p = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(dim=1)
        labels = labels.long()
        per_sample = sum(weight * term(log_p, labels, **params) for weight, term, params in self.parts)
        if self.reduction == "none":
            return per_sample
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()

    def extra_repr(self) -> str:
        parts = " + ".join(f"{weight:g}*{term.name}{params or ''}" for weight, term, params in self.parts)
        return f"{self.name!r}: {parts}, num_classes={self.num_classes}, reduction={self.reduction!r}"


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise LossSpecError(f"{key} must be a finite number; got {value!r}")
    return float(value)


def _resolve_params(name: str, terms: list[Term], given: Mapping[str, object]) -> list[dict[str, float]]:
    """Each term's parameters: defaults, then plain names (to every term that takes them), then
    "term.param" names (to that term only; "sce.A" names the whole loss, like a plain name)."""
    resolved = [{key: param.default for key, param in term.params.items()} for term in terms]
    accepted = sorted({key for term in terms for key in term.params})
    if len(terms) > 1:
        accepted += sorted(f"{term.name}.{key}" for term in terms for key in term.params)
    for key in sorted(given, key=lambda k: "." in k):
        owner, _, param = key.rpartition(".")
        targets = [i for i, term in enumerate(terms) if param in term.params and owner in ("", name, term.name)]
        if not targets:
            raise LossSpecError(
                f"{name} does not take the parameter {key!r}; "
                + (f"it accepts: {', '.join(accepted)}" if accepted else "it takes no parameters")
            )
        value = _number(key, given[key])
        for i in targets:
            param_spec = terms[i].params[param]
            if not param_spec.allows(value):
                raise LossSpecError(f"{terms[i].name} needs {param_spec.rule}; got {param}={value:g}")
            resolved[i][param] = value
    return resolved


def make_loss(
    name: str,
    num_classes: int,
    *,
    alpha: float = 1.0,
    beta: float | None = None,
    reduction: Reduction = "mean",
    **params: float,
) -> Loss:
    """Build the loss `name` ("nce", "nce+rce", "sce", ...) as an nn.Module(logits, labels).

    `alpha` weighs the first (active) term, `beta` the second; a single term is alpha·term.
    Loss parameters (gamma, q, A, a) are keywords; "term.param" (e.g. "agce.q") sets one term's.
    """
    names = parse_loss_name(name)
    entry = LOSSES[names[0]]
    term_names = entry.terms if isinstance(entry, Composite) else names
    terms = [LOSSES[term_name] for term_name in term_names]
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise LossSpecError(f"num_classes must be an integer >= 2; got {num_classes!r}")
    if reduction not in ("mean", "sum", "none"):
        raise LossSpecError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
    if len(terms) == 1 and beta is not None:
        raise LossSpecError(
            f"{name} is a single loss, weighed by alpha alone; drop beta, "
            "or name an active+passive pair, e.g. nce+rce"
        )
    weights = [alpha] if len(terms) == 1 else [alpha, 1.0 if beta is None else beta]
    for key, weight in zip(("alpha", "beta"), weights):
        if _number(key, weight) <= 0:
            raise LossSpecError(f"{key} must be > 0 (the paper's α, β > 0); got {weight!r}")
    canonical = "+".join(names)
    resolved = _resolve_params(canonical, terms, params)
    parts = [(float(weight), term, term_params) for weight, term, term_params in zip(weights, terms, resolved)]
    return Loss(canonical, int(num_classes), parts, reduction)
