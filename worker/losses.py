"""The losses of "Normalized Loss Functions for Deep Learning with Noisy Labels" (Ma et al.,
ICML 2020) and the robust losses built on it, composed by name.

    loss_fn = make_loss("nce+rce", num_classes=10, alpha=1.0, beta=1.0)
    loss = loss_fn(logits, labels)

The catalog (shared/catalog.py) names every loss, its role and its parameters; the rules of
shared/rules.py parse names and check parameters. Here each term's code is registered under its
catalog name as its per-class loss matrix L[b, j] = L(f(x_b), j): the loss sample b
would get if its label were j. The plain loss reads column y; Eq. 1 divides by the row sum, so
NCE, NFL, NGCE, NMAE and NRCE are one operation (`normalize`) applied to CE, FL, GCE, MAE and RCE,
and any base loss registered later gets its normalized form the same way. A name "X+Y" is
α·X + β·Y: an Active Passive Loss (Eq. 6), or the paper's AAL / PPL ablations.
Formulas, defaults and where we differ from the reference code: docs/LOSSES.md.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from shared.catalog import LOSSES, LossInfo
from shared.errors import SpecError
from shared.rules import LossForm, check_weights, loss_params, parse_loss, term_params
from shared.spec import ResolvedSpec

# Everything is computed in fp32 (fp64 stays fp64) from log p (`log_probabilities`), and p^q is
# written exp(q·log p), so values and gradients stay finite for logits up to ±1e4, where p is
# exactly 0 or 1. 1 - p is -expm1(log p) (`one_minus_p`), accurate where p is close to 1.
EPS = 1e-7
"""Floor of 1 - p in the focal factor (1 - p)^γ: for γ < 1 its derivative is infinite at p = 1,
and ∞·0 would make the gradient NaN. It changes the loss by less than EPS^γ·EPS."""

NNCE_MIN_PROB = 1e-7
"""p̃ = clamp(p, NNCE_MIN_PROB, 1) of Active Negative Loss (Ye et al., 2023); A = -ln of it."""

Reduction = Literal["mean", "sum", "none"]
PerClass = Callable[..., Tensor]
"""per_class(log_p, **params) -> L[b, j] = L(f(x_b), j): the loss sample b gets if its label were j."""

IMPLEMENTATIONS: dict[str, PerClass] = {}
"""Loss term name -> its per-class loss matrix. The names, roles and parameters are the catalog's."""


def register_loss(name: str, per_class: PerClass, info: LossInfo | None = None) -> PerClass:
    """Make `per_class` the implementation of the catalog's loss `name`. A loss the catalog does
    not know yet comes with its `info` (role, robustness, parameters), which joins the catalog."""
    if info is not None:
        LOSSES[name] = info
    if name not in LOSSES:
        raise SpecError(f"the catalog has no loss {name!r}; pass its LossInfo to register it", "loss")
    IMPLEMENTATIONS[name] = per_class
    return per_class


def implements(name: str) -> Callable[[PerClass], PerClass]:
    """Decorator: register a per-class loss function as the catalog's loss `name`."""
    return lambda per_class: register_loss(name, per_class)


def normalize(base: PerClass) -> PerClass:
    """The normalized form of any base loss (Eq. 1): robust whatever the base.

    The base's row sum Σ_j L(f(x), j) must be positive, as it is for every loss here.
    """

    def per_class(log_p: Tensor, **params: float) -> Tensor:
        L = base(log_p, **params)
        return L / L.sum(dim=1, keepdim=True)  # L_norm(f(x), y) = L(f(x), y) / Σ_j L(f(x), j)  (Eq. 1)

    return per_class


def register_normalized(name: str, info: LossInfo | None = None) -> PerClass:
    """Register the catalog's normalized loss `name` (its `normalizes` names the base) by Eq. 1."""
    base = (info or LOSSES[name]).normalizes
    return register_loss(name, normalize(IMPLEMENTATIONS[base]), info)


def log_probabilities(logits: Tensor) -> Tensor:
    """log softmax(z), with log p of each row's top class accurate in relative terms as p → 1.

    log_softmax adds 1 (the top class) to the other classes' e^(z_j - z_max) before taking the
    log, and in fp32 that sum drops whatever is below 6e-8: log p_top is exactly 0 from
    p_top = 1 - 6e-8 on, and 1 - p_top is off by 5% at 1 - 3e-7. Here the log of the sum is
    log1p(Σ_{j≠top} e^(z_j - z_top)): the same function and gradient, without that rounding.
    """
    top_logit, top = logits.max(dim=1, keepdim=True)
    shifted = logits - top_logit
    others = shifted.exp().scatter(1, top, 0.0).sum(dim=1, keepdim=True)
    return shifted - torch.log1p(others)


def one_minus_p(log_p: Tensor) -> Tensor:
    """1 - p as -expm1(log p), which keeps the digits that 1 - exp(log p) cancels as p → 1."""
    return -torch.expm1(log_p)


@implements("ce")
def cross_entropy(log_p: Tensor) -> Tensor:
    return -log_p  # CE = -log p_y  (Sec. 3.1)


@implements("fl")
def focal(log_p: Tensor, gamma: float, detach_focal: float) -> Tensor:
    focal_factor = one_minus_p(log_p).clamp_min(EPS) ** gamma
    if detach_focal:  # a constant to the gradient, as in the reference code; the value is the same
        focal_factor = focal_factor.detach()
    return -focal_factor * log_p  # FL = -(1 - p_y)^γ log p_y  (Sec. 3.1)


@implements("gce")
def generalized_cross_entropy(log_p: Tensor, q: float) -> Tensor:
    return -torch.expm1(q * log_p) / q  # GCE = (1 - p_y^q) / q  (Sec. 5.3)


@implements("mae")
def mean_absolute_error(log_p: Tensor) -> Tensor:
    return one_minus_p(log_p)  # MAE = 1 - p_y, half the paper's Σ_k |p_k - q_k| = 2(1 - p_y)  (Sec. 3.1)


@implements("rce")
def reverse_cross_entropy(log_p: Tensor, A: float) -> Tensor:
    return -A * one_minus_p(log_p)  # RCE = -Σ_k p_k log q_k with log 0 := A, = -A(1 - p_y)  (Sec. 3.1)


register_normalized("nce")  # NCE = log p_y / log Π_k p_k  (Eq. 2)
register_normalized("nmae")  # NMAE = (1 - p_y) / (K - 1)  (Eq. 3)
register_normalized("nrce")  # NRCE = (1 - p_y) / (K - 1)  (Eq. 4)
register_normalized("nfl")  # NFL = (1 - p_y)^γ log p_y / Σ_k (1 - p_k)^γ log p_k  (Eq. 5)
register_normalized("ngce")  # NGCE = (1 - p_y^q) / (K - Σ_k p_k^q)  (Sec. 5.3)


@implements("nnce")
def normalized_negative_cross_entropy(log_p: Tensor) -> Tensor:
    log_min = math.log(NNCE_MIN_PROB)
    ell = log_p.clamp_min(log_min) - log_min  # ℓ_k = A + ln p̃_k, A = -ln NNCE_MIN_PROB  (Ye et al., 2023)
    return 1 - ell / ell.sum(dim=1, keepdim=True)  # NNCE = 1 - ℓ_y / Σ_k ℓ_k


@implements("agce")
def asymmetric_generalized_cross_entropy(log_p: Tensor, a: float, q: float) -> Tensor:
    return ((a + 1) ** q - (a + log_p.exp()) ** q) / q  # AGCE = ((a+1)^q - (a+p_y)^q) / q  (Zhou et al.)


@implements("aul")
def asymmetric_unhinged_loss(log_p: Tensor, a: float, q: float) -> Tensor:
    return ((a - log_p.exp()) ** q - (a - 1) ** q) / q  # AUL = ((a-p_y)^q - (a-1)^q) / q  (Zhou et al.)


@implements("ael")
def asymmetric_exponential_loss(log_p: Tensor, a: float) -> Tensor:
    return torch.exp(-log_p.exp() / a)  # AEL = exp(-p_y / a)  (Zhou et al., ICML 2021)




class Loss(nn.Module):
    """α·term (one term) or α·term₁ + β·term₂, per sample, then reduced over the batch.

    bf16/fp16 logits are computed in fp32 (fp64 stays fp64), so the loss is safe under autocast.
    """

    def __init__(
        self, name: str, num_classes: int, parts: list[tuple[float, str, dict[str, float]]], reduction: Reduction
    ) -> None:
        super().__init__()
        self.name = name
        self.num_classes = num_classes
        self.parts = parts  # (weight, term name, the term's parameters)
        self.reduction = reduction

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"{self.name} expects logits [B, {self.num_classes}]; got {list(logits.shape)}")
        if labels.shape != logits.shape[:1]:
            raise ValueError(f"{self.name} expects labels [{logits.shape[0]}]; got {list(labels.shape)}")
        log_p = log_probabilities(logits.to(torch.promote_types(logits.dtype, torch.float32)))
        column = labels.long()[:, None]
        per_sample = sum(
            weight * IMPLEMENTATIONS[term](log_p, **params).gather(1, column).squeeze(1)
            for weight, term, params in self.parts
        )
        if self.reduction == "none":
            return per_sample
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()

    def extra_repr(self) -> str:
        parts = " + ".join(f"{weight:g}*{term}{params or ''}" for weight, term, params in self.parts)
        return f"{self.name!r}: {parts}, num_classes={self.num_classes}, reduction={self.reduction!r}"


def _build(form: LossForm, num_classes: int, weights: list[float], params: dict[str, float], reduction: Reduction) -> Loss:
    parts = [(float(w), term, values) for w, term, values in zip(weights, form.terms, term_params(form, params))]
    return Loss(form.name, num_classes, parts, reduction)


def loss_for(spec: ResolvedSpec, reduction: Reduction = "mean") -> Loss:
    """The loss of a resolved spec, whose name, terms and parameters were checked at resolution."""
    weights = [spec.alpha, spec.beta][: len(spec.loss_terms)]
    return _build(LossForm(spec.loss, spec.loss_terms), spec.num_classes, weights, spec.loss_params, reduction)


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
    The name, weights and parameters follow the same rules as a job spec (shared/rules.py).
    """
    form = parse_loss(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise SpecError(f"num_classes must be an integer >= 2; got {num_classes!r}", "num_classes")
    if reduction not in ("mean", "sum", "none"):
        raise SpecError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}", "reduction")
    check_weights(form, alpha, beta)
    weights = [alpha] if len(form.terms) == 1 else [alpha, 1.0 if beta is None else beta]
    return _build(form, int(num_classes), weights, loss_params(form, params), reduction)
