"""Which runs may train together as one wide model (worker/fused.py), and why others may not.

Runs fuse when every training step has the same shape for all of them: the same data set
(so the same image shape and classes), network, batch size, number of training samples (so
the same batches per epoch), augmentation, precision and `deterministic` (a process-wide
setting of torch's). Everything else may differ run by
run, as each run keeps its own parameters, optimizer and scheduler: the loss, α/β and loss
parameters, noise, seed, epochs, lr, lr_min, momentum, Nesterov, weight decay, l1, schedule,
gradient clipping, evaluation batch size, validation split (at one training size),
checkpoint interval and time limit. A run that cross-fits (cross_fit_folds > 0) trains alone:
its K cross-fitting models train after it in its process, which would hold up the rest of a
group's results and time limits. Pure data, no torch: the worker's long-lived process
decides with it which queued jobs to take together.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from shared.spec import ResolvedSpec

FUSED_MODELS = frozenset({"cnn4", "cnn8", "resnet34", "resnet50", "imagenet-resnet50"})
"""The networks worker/fused.py has a wide form of (a test checks that it does); a network
registered later trains alone until it has one."""

SHARED_FIELDS = ("dataset", "model", "batch_size", "training_samples", "augment", "precision", "deterministic")
"""What every run of a group has in common."""


@dataclass(frozen=True)
class FusionGroup:
    """Runs to train together (indices into the specs asked about), and why no more join them."""

    members: tuple[int, ...]
    reason: str


def refusal(spec: ResolvedSpec) -> str | None:
    """Why this run can fuse with no other, or None when it can."""
    if spec.model not in FUSED_MODELS:
        return f"model {spec.model} has no wide form (those that do: {', '.join(sorted(FUSED_MODELS))})"
    if spec.cross_fit_folds > 0:
        return (f"cross_fit_folds is {spec.cross_fit_folds}: its cross-fitting models train after it, alone "
                "(set cross_fit_folds to 0 to train with the sweep's other runs)")
    return None


def mismatch(a: ResolvedSpec, b: ResolvedSpec) -> str | None:
    """Why runs `a` and `b` cannot train together, or None when they can."""
    for spec in (a, b):
        reason = refusal(spec)
        if reason is not None:
            return reason
    for name in SHARED_FIELDS:
        if getattr(a, name) != getattr(b, name):
            return f"{name} differs ({getattr(a, name)} and {getattr(b, name)})"
    return None


def fusable(specs: Sequence[ResolvedSpec], max_runs: int) -> list[FusionGroup]:
    """The specs in groups of at most `max_runs` that may train together, in order of first
    appearance; each group says why it is alone or why it is not larger."""
    if max_runs < 1:
        raise ValueError(f"max_runs must be at least 1; got {max_runs}")
    groups: list[list[int]] = []
    reasons: list[str] = []
    for i, spec in enumerate(specs):
        reason = refusal(spec)
        if reason is not None:
            groups.append([i])
            reasons.append(reason)
            continue
        home = next((g for g in groups if len(g) < max_runs and mismatch(specs[g[0]], spec) is None), None)
        if home is None:
            groups.append([i])
            reasons.append("")
        else:
            home.append(i)
    out = []
    for members, reason in zip(groups, reasons):
        if not reason:
            reason = _why_no_more(specs, members, max_runs)
        out.append(FusionGroup(tuple(members), reason))
    return out


def _why_no_more(specs: Sequence[ResolvedSpec], members: list[int], max_runs: int) -> str:
    first = specs[members[0]]
    others = [i for i in range(len(specs)) if i not in members]
    if any(mismatch(first, specs[i]) is None for i in others):
        return f"at most {max_runs} runs train together"
    if len(members) == 1 and others:
        return f"trains alone: it differs from run {others[0]}: {mismatch(first, specs[others[0]])}"
    shared = ", ".join(f"{name} {getattr(first, name)}" for name in SHARED_FIELDS)
    return f"every run with {shared}"


def check_fusable(specs: Sequence[ResolvedSpec]) -> None:
    """ValueError naming the first run that cannot train with the first, and why."""
    if not specs:
        raise ValueError("no runs to train")
    for i, spec in enumerate(specs[1:], start=1):
        reason = mismatch(specs[0], spec)
        if reason is not None:
            raise ValueError(f"run {i} cannot train with run 0: {reason}")
