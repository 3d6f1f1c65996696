"""The job spec: what a user may send, its bounds, and its resolution against the paper's presets.

`JobSpec` validates one request (pydantic; unknown fields are refused, so a typo never goes
unnoticed). `resolve_spec` fills every missing value from the recipe of the data set's
family and the loss's preset, and returns the fully resolved spec that the job record
stores, so that any run can be repeated exactly.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.catalog import (
    ACTIVE_ROBUST,
    AUGMENTATIONS,
    DATASETS,
    LOSS_PRESETS,
    LOSSES,
    MODELS,
    PASSIVE_ROBUST,
    PRECISIONS,
    RECIPES,
    SCHEDULES,
)

MAX_EPOCHS = 1000
MAX_BATCH = 8192
MAX_WEIGHT = 1000.0  # α and β
MAX_LOSS_PARAM = 1e6  # |q|, |gamma|, |A|, ...: finite and bounded, so a spec always stores as JSON
LossParam = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_LOSS_PARAM, le=MAX_LOSS_PARAM)]


class SpecError(ValueError):
    """A spec that cannot run as asked; `field` names the part to change."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class DataInfo:
    """What resolution needs to know of a data set (built-in or uploaded)."""

    num_classes: int
    channels: int
    size: int
    train_samples: int
    family: str
    builtin: bool


def _allowed(names) -> str:
    return ", ".join(sorted(names))


class NoiseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["none", "symmetric", "asymmetric", "pairflip", "transition"] = "none"
    rate: float = Field(0.0, ge=0.0, lt=1.0)
    matrix: list[list[float]] | None = Field(None, max_length=1000)


class JobSpec(BaseModel):
    """A training job as the user writes it; None means 'take the preset'."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(..., min_length=1, max_length=64)
    noise: NoiseSpec = NoiseSpec()
    loss: str = Field("ce", min_length=1, max_length=64)
    alpha: float | None = Field(None, gt=0.0, le=MAX_WEIGHT)
    beta: float | None = Field(None, gt=0.0, le=MAX_WEIGHT)
    loss_params: dict[Annotated[str, Field(max_length=32)], LossParam] = Field(default_factory=dict, max_length=16)
    model: str | None = None
    epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    train_size: int | None = Field(None, ge=1)
    validation_split: float = Field(0.0, ge=0.0, le=0.5)
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH)
    eval_batch_size: int | None = Field(None, ge=1, le=4 * MAX_BATCH)
    lr: float | None = Field(None, gt=0.0, le=10.0)
    lr_min: float | None = Field(None, ge=0.0, le=10.0)
    momentum: float | None = Field(None, ge=0.0, lt=1.0)
    nesterov: bool | None = None
    weight_decay: float | None = Field(None, ge=0.0, le=1.0)
    l1: float | None = Field(None, ge=0.0, le=1.0)
    schedule: str | None = None
    grad_clip: float | None = Field(None, ge=0.0, le=1e4)
    augment: str | None = None
    precision: str = "fp32"
    checkpoint_every: int = Field(1, ge=1, le=MAX_EPOCHS)

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        return "+".join(parse_loss(name.strip().lower()))

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str | None) -> str | None:
        if name is not None and name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose one of: {_allowed(MODELS)}")
        return name

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, name: str | None) -> str | None:
        if name is not None and name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; choose one of: {_allowed(SCHEDULES)}")
        return name

    @field_validator("augment")
    @classmethod
    def _known_augment(cls, name: str | None) -> str | None:
        if name is not None and name not in AUGMENTATIONS:
            raise ValueError(f"unknown augment {name!r}; choose one of: {_allowed(AUGMENTATIONS)}")
        return name

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, name: str) -> str:
        if name not in PRECISIONS:
            raise ValueError(f"unknown precision {name!r}; choose one of: {_allowed(PRECISIONS)}")
        return name


def parse_loss(name: str) -> tuple[str, ...]:
    """Split `active+passive` into its terms and refuse what the APL framework does not define."""
    terms = tuple(t.strip() for t in name.split("+"))
    for term in terms:
        if term not in LOSSES:
            raise ValueError(f"unknown loss term {term!r}; known terms: {_allowed(LOSSES)}")
    if len(terms) == 1:
        return terms
    if len(terms) > 2:
        raise ValueError(f"{name!r} has {len(terms)} terms; an Active Passive Loss has two: active+passive")
    first, second = terms
    if first == second:
        raise ValueError(f"{name!r} repeats {first!r}; to scale one term, use it alone with alpha")
    for term in terms:
        if not LOSSES[term].robust:
            hint = f"its normalized form n{term}" if f"n{term}" in LOSSES else "a robust term"
            raise ValueError(
                f"{term!r} is not robust to label noise, so an Active Passive Loss cannot use it; "
                f"use {hint} (e.g. nce+rce), or 'sce' for CE+RCE"
            )
    if LOSSES[first].role == "passive" and LOSSES[second].role == "active":
        raise ValueError(f"write the active term first: {second}+{first} (alpha weighs the active term)")
    return terms


def loss_param_names(terms: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """Accepted `loss_params` keys → (term, parameter). A name two terms share must be prefixed."""
    owners: dict[str, list[str]] = {}
    for term in terms:
        for param in LOSSES[term].params:
            owners.setdefault(param, []).append(term)
    keys: dict[str, tuple[str, str]] = {}
    for param, holders in owners.items():
        for term in holders:
            keys[f"{term}.{param}"] = (term, param)
        if len(holders) == 1:
            keys[param] = (holders[0], param)
    return keys


def builtin_data_info(name: str) -> DataInfo:
    info = DATASETS[name]
    return DataInfo(info.num_classes, info.channels, info.size, info.train_samples, info.family, True)


def resolve_spec(spec: JobSpec, data: DataInfo | None = None) -> dict[str, Any]:
    """Fill every missing value from the paper's presets; check what depends on the data set.

    `data` describes an uploaded data set; built-in names are looked up in the catalog.
    """
    if data is None:
        if spec.dataset not in DATASETS:
            raise SpecError(
                "dataset",
                f"unknown dataset {spec.dataset!r}; choose one of: {_allowed(DATASETS)}, "
                "or the id of a data set you uploaded (GET /v1/datasets)",
            )
        data = builtin_data_info(spec.dataset)
    _check_noise(spec.noise, data)
    terms = parse_loss(spec.loss)
    recipe = dict(RECIPES[data.family])
    if not data.builtin:
        recipe["augment"] = "none"  # flips and crops are not safe to assume for someone's own images
    preset = dict(LOSS_PRESETS[data.family].get(spec.loss, {}))
    if spec.noise.type == "asymmetric":
        preset.update(preset.pop("asym", {}))
    preset.pop("asym", None)
    given = spec.model_dump(exclude_unset=True)

    resolved = spec.model_dump()
    for key, value in recipe.items():
        if given.get(key) is None:
            resolved[key] = preset.get(key, value)
    resolved["alpha"] = spec.alpha if spec.alpha is not None else preset.get("alpha", 1.0)
    resolved["beta"] = _resolve_beta(spec, terms, preset)
    resolved["l1"] = spec.l1 if spec.l1 is not None else preset.get("l1", 0.0)
    resolved["loss_params"] = _resolve_loss_params(spec, terms, preset.get("params", {}))
    resolved["noise"] = spec.noise.model_dump()
    resolved["num_classes"] = data.num_classes
    _check_sizes(resolved, data)
    return resolved


def _resolve_beta(spec: JobSpec, terms: tuple[str, ...], preset: dict) -> float | None:
    takes_beta = len(terms) == 2 or terms[0] == "sce"
    if not takes_beta:
        if spec.beta is not None:
            raise SpecError("beta", f"{spec.loss!r} is a single term: beta has nothing to weigh; use alpha to scale it")
        return None
    return spec.beta if spec.beta is not None else preset.get("beta", 1.0)


def _resolve_loss_params(spec: JobSpec, terms: tuple[str, ...], preset: dict[str, float]) -> dict[str, float]:
    accepted = loss_param_names(terms)
    for key in spec.loss_params:
        if key not in accepted:
            raise SpecError(
                "loss_params",
                f"{spec.loss!r} takes no parameter {key!r}; it takes: {_allowed(accepted) or 'none'}",
            )
    params: dict[str, float] = {}
    for key, (term, param) in accepted.items():
        if "." in key and param in accepted:
            continue  # the plain name covers it
        value = spec.loss_params.get(key, spec.loss_params.get(f"{term}.{param}"))
        if value is None:
            value = preset.get(key, preset.get(param, LOSSES[term].params[param]))
        params[key] = float(value)
    return params


def _check_noise(noise: NoiseSpec, data: DataInfo) -> None:
    k = data.num_classes
    if noise.type == "none" and noise.rate != 0:
        raise SpecError("noise.rate", "noise type 'none' takes no rate; set a type (e.g. symmetric) or rate 0")
    if noise.type == "symmetric" and noise.rate >= (k - 1) / k:
        raise SpecError(
            "noise.rate",
            f"symmetric noise at rate {noise.rate} leaves the true class no more likely than any other "
            f"of the {k} classes; use a rate below {(k - 1) / k:.3f}",
        )
    if noise.type in ("asymmetric", "pairflip") and noise.rate >= 0.5:
        raise SpecError(
            "noise.rate",
            f"{noise.type} noise at rate {noise.rate} makes the flipped class outnumber the true one; "
            "use a rate below 0.5",
        )
    if noise.type == "asymmetric" and not data.builtin:
        raise SpecError(
            "noise.type",
            "asymmetric noise uses the paper's class maps, which exist only for the built-in data sets; "
            "use pairflip or transition with your own matrix",
        )
    if noise.type == "transition":
        if noise.rate != 0:
            raise SpecError("noise.rate", "transition noise takes its rates from the matrix; leave rate at 0")
        _check_matrix(noise.matrix, k)
    elif noise.matrix is not None:
        raise SpecError("noise.matrix", "a matrix is used only with noise type 'transition'")


def _check_matrix(matrix: list[list[float]] | None, k: int) -> None:
    if matrix is None:
        raise SpecError("noise.matrix", f"transition noise needs a {k}×{k} matrix: row i is P(noisy label | true i)")
    if len(matrix) != k or any(len(row) != k for row in matrix):
        raise SpecError("noise.matrix", f"the matrix must be {k}×{k}, one row and column per class")
    for i, row in enumerate(matrix):
        if any(not 0.0 <= v <= 1.0 for v in row) or abs(sum(row) - 1.0) > 1e-6:
            raise SpecError("noise.matrix", f"row {i} must hold probabilities in [0, 1] that sum to 1")
        if any(row[j] >= row[i] for j in range(k) if j != i):
            raise SpecError(
                "noise.matrix",
                f"row {i}: the true class must stay the most likely label (matrix[{i}][{i}] largest), "
                f"else class {i} cannot be learned",
            )


def _check_sizes(resolved: dict[str, Any], data: DataInfo) -> None:
    train_size = resolved["train_size"]
    if train_size is not None:
        if train_size > data.train_samples:
            raise SpecError("train_size", f"train_size {train_size} exceeds the {data.train_samples} training samples")
        if train_size < 10 * data.num_classes:
            raise SpecError("train_size", f"use a train_size of at least {10 * data.num_classes} (10 per class)")
    if resolved["lr_min"] > resolved["lr"]:
        raise SpecError("lr_min", f"lr_min {resolved['lr_min']} must not exceed lr {resolved['lr']}")
    if resolved["nesterov"] and resolved["momentum"] == 0:
        raise SpecError("nesterov", "Nesterov momentum needs momentum > 0")
