"""The job spec: what a user may send (`JobSpec`) and what a job runs with (`ResolvedSpec`).

`JobSpec` validates one request: strict types (`"epochs": true` or `"1"` is refused), unknown
fields refused, so a typo never goes unnoticed. `resolve_spec` fills every missing value from
the recipe of the data set's family and the loss's preset, applies the rules of
shared/rules.py (the same the engine applies), and returns a `ResolvedSpec`: typed, immutable,
without optional fields. The job record stores it, so any run can be repeated exactly, and the
worker reads it as attributes.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.catalog import AUGMENTATIONS, DATASETS, LOSS_PRESETS, MODELS, NOISE_KINDS, PRECISIONS, RECIPES, SCHEDULES
from shared.errors import SpecError
from shared.rules import MAX_WEIGHT, check_noise, check_weights, loss_params, parse_loss

MAX_EPOCHS = 1000
MAX_BATCH = 8192
MAX_CLASSES = 1000
MAX_CROSS_FIT_FOLDS = 10

NoiseType = Literal["none", "symmetric", "asymmetric", "pairflip", "transition"]
LossParams = dict[Annotated[str, Field(max_length=32)], float]


def _one_of(names: Any) -> str:
    return ", ".join(sorted(names))


@dataclass(frozen=True)
class DataInfo:
    """What resolution needs to know of a data set (built-in, uploaded, or a version of either).

    A version of a built-in data set resolves as the built-in (its family, class maps and
    augmentation) with its own number of samples; `root` names the built-in, whose files a
    worker must hold to train on it."""

    num_classes: int
    channels: int
    size: int
    train_samples: int
    family: str
    builtin: bool
    root: str | None = None

    @classmethod
    def builtin_named(cls, name: str) -> "DataInfo":
        if name not in DATASETS:
            raise SpecError(
                f"unknown dataset {name!r}; choose one of: {_one_of(DATASETS)}, "
                "or the id of a data set you uploaded (GET /v1/datasets)", "dataset",
            )
        info = DATASETS[name]
        return cls(info.num_classes, info.channels, info.size, info.train_samples, info.family, builtin=True)


class NoiseSettings(BaseModel):
    """Synthetic label noise added to the training labels, as a user writes it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: NoiseType = Field("none", description="kind of noise: " + "; ".join(
        f"{name}: {kind.description}" for name, kind in NOISE_KINDS.items()))
    rate: float = Field(0.0, ge=0.0, lt=1.0, allow_inf_nan=False,
                        description="share of labels changed (fraction); symmetric < (K-1)/K, asymmetric "
                                    "and pairflip < 0.5, none and transition take 0")
    matrix: list[list[float]] | None = Field(
        None, max_length=MAX_CLASSES,
        description="transition noise only: K×K, row i = P(noisy label | true class i), diagonal largest")


def _field(default: Any, description: str, **bounds: Any) -> Any:
    return Field(default, description=description, **bounds)


class JobSpec(BaseModel):
    """A training job as the user writes it; a missing (null) value takes the paper's preset."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: str = Field(..., min_length=1, max_length=64,
                         description=f"{_one_of(DATASETS)}, or the id of a data set you uploaded")
    noise: NoiseSettings = _field(NoiseSettings(), "label noise added to the training labels")
    loss: str = _field("ce", "a loss (ce, nce, ...) or two robust terms written active+passive (nce+rce); "
                             "GET /v1/catalog lists them", min_length=1, max_length=64)
    alpha: float | None = _field(None, "weight of the first (active) term, or the scale of a single one",
                                 gt=0.0, le=MAX_WEIGHT, allow_inf_nan=False)
    beta: float | None = _field(None, "weight of the second (passive) term; two-term losses and sce only",
                                gt=0.0, le=MAX_WEIGHT, allow_inf_nan=False)
    loss_params: LossParams = _field({}, "loss parameters (gamma, q, A, a); 'term.param' (agce.q) sets one "
                                         "term's only", max_length=16)
    model: str | None = _field(None, f"network: {_one_of(MODELS)}")
    epochs: int | None = _field(None, "training epochs", ge=1, le=MAX_EPOCHS)
    seed: int = _field(0, "seeds the noise, the subset, the initialisation and the data order", ge=0, le=2**31 - 1)
    train_size: int | None = _field(None, "a seeded, class-balanced subset of the training set (all when null)",
                                    ge=1)
    validation_split: float = _field(0.0, "share of the (noisy) training subset held out to choose by (fraction)",
                                     ge=0.0, le=0.5, allow_inf_nan=False)
    batch_size: int | None = _field(None, "training batch size", ge=2, le=MAX_BATCH)
    eval_batch_size: int | None = _field(None, "evaluation batch size", ge=1, le=4 * MAX_BATCH)
    lr: float | None = _field(None, "initial learning rate", gt=0.0, le=10.0, allow_inf_nan=False)
    lr_min: float | None = _field(None, "final learning rate of the cosine schedule", ge=0.0, le=10.0,
                                  allow_inf_nan=False)
    momentum: float | None = _field(None, "SGD momentum", ge=0.0, lt=1.0, allow_inf_nan=False)
    nesterov: bool | None = _field(None, "Nesterov momentum")
    weight_decay: float | None = _field(None, "L2 weight decay", ge=0.0, le=1.0, allow_inf_nan=False)
    l1: float | None = _field(None, "L1 penalty on the weights (Active Negative Loss)", ge=0.0, le=1.0,
                              allow_inf_nan=False)
    schedule: str | None = _field(None, f"learning-rate schedule: {_one_of(SCHEDULES)}")
    grad_clip: float | None = _field(None, "gradient-norm clipping (0: none)", ge=0.0, le=1e4, allow_inf_nan=False)
    augment: str | None = _field(None, f"augmentation: {_one_of(AUGMENTATIONS)}")
    precision: str = _field("fp32", f"arithmetic: {_one_of(PRECISIONS)}")
    deterministic: bool = _field(
        False, "CUDA only: cuDNN's deterministic kernels and torch's deterministic algorithms, so that the same "
               "spec gives the same weights on a GPU as it always does on a CPU; slower by an amount not yet "
               "measured (docs/DIFFERENCES.md)")
    checkpoint_every: int = _field(1, "epochs between resume checkpoints", ge=1, le=MAX_EPOCHS)
    time_limit_s: int | None = _field(None, "seconds the job may run, from its first start, before it is stopped "
                                            "and failed (null: the service's maximum, NOISYFIT_MAX_JOB_SECONDS)", ge=1)
    cross_fit_folds: int = _field(0, f"0: the label-quality report uses the trained model's own probabilities; "
                                     f"K in 2..{MAX_CROSS_FIT_FOLDS}: also train K models, each on K-1 of K folds of "
                                     "the training samples, for probabilities of each sample from a model that did not "
                                     "see it (costs about K-1 more trainings)", ge=0, le=MAX_CROSS_FIT_FOLDS)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str | None) -> str | None:
        return _known(name, MODELS, "model")

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, name: str | None) -> str | None:
        return _known(name, SCHEDULES, "schedule")

    @field_validator("augment")
    @classmethod
    def _known_augment(cls, name: str | None) -> str | None:
        return _known(name, AUGMENTATIONS, "augment")

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, name: str) -> str:
        return _known(name, PRECISIONS, "precision")

    @field_validator("cross_fit_folds", mode="before")
    @classmethod
    def _folds(cls, folds: Any) -> Any:
        if isinstance(folds, int) and not isinstance(folds, bool) and not (folds == 0 or 2 <= folds <= MAX_CROSS_FIT_FOLDS):
            raise ValueError(f"cross_fit_folds is 0 (off) or a number of folds from 2 to {MAX_CROSS_FIT_FOLDS}; "
                             f"got {folds}")
        return folds

    @classmethod
    def parse(cls, raw: Any) -> "JobSpec":
        """A JobSpec from JSON-like data (a file, a sweep cell); the first problem as a SpecError."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "spec"
            message = f"unknown field {where!r}" if first["type"] == "extra_forbidden" else first["msg"]
            raise SpecError(message, where) from exc


def _known(name: Any, names: Any, what: str) -> Any:
    if name is not None and name not in names:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {_one_of(names)}")
    return name


class ResolvedNoise(BaseModel):
    """The noise a job runs with; `matrix` is empty unless the type is transition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: NoiseType
    rate: float
    matrix: tuple[tuple[float, ...], ...]


class ResolvedSpec(BaseModel):
    """Everything a run depends on, each value decided: the job record, result.json and
    checkpoints store it, and the worker reads it as attributes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    num_classes: int
    noise: ResolvedNoise
    loss: str  # canonical: "nce+rce"
    loss_terms: tuple[str, ...]  # the terms alpha and beta weigh: "sce" -> ("ce", "rce")
    alpha: float
    beta: float  # 0 for a single term, which has nothing for beta to weigh
    loss_params: dict[str, float]
    model: str
    epochs: int
    seed: int
    train_size: int  # samples drawn for training and validation together
    validation_split: float
    batch_size: int
    eval_batch_size: int
    lr: float
    lr_min: float
    momentum: float
    nesterov: bool
    weight_decay: float
    l1: float
    schedule: str
    grad_clip: float
    augment: str
    precision: str
    deterministic: bool = False  # CUDA: deterministic kernels and algorithms (CPU runs are reproducible anyway)
    checkpoint_every: int
    time_limit_s: int = 0  # 0: the service's maximum (settings.max_job_seconds), which also caps any other value
    cross_fit_folds: int = 0  # 0: the label-quality report uses in-sample probabilities

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples): what the database and checkpoints hold."""
        return self.model_dump(mode="json")

    @property
    def validation_samples(self) -> int:
        """Of the train_size samples drawn, how many are held out to validate on."""
        return round(self.validation_split * self.train_size)

    @property
    def training_samples(self) -> int:
        """Of the train_size samples drawn, how many are trained on."""
        return self.train_size - self.validation_samples


def resolve_spec(spec: JobSpec, data: DataInfo | None = None) -> ResolvedSpec:
    """Fill every missing value from the paper's presets; check what depends on the data set.

    `data` describes an uploaded data set; built-in names are looked up in the catalog.
    """
    data = data or DataInfo.builtin_named(spec.dataset)
    noise = spec.noise
    check_noise(noise.type, noise.rate, data.num_classes, matrix=noise.matrix, has_class_map=data.builtin)
    form = parse_loss(spec.loss)
    check_weights(form, spec.alpha if spec.alpha is not None else 1.0, spec.beta)
    recipe = dict(RECIPES[data.family])
    if not data.builtin:
        recipe["augment"] = "none"  # flips and crops are not safe to assume for someone's own images
    preset = dict(LOSS_PRESETS[data.family].get(form.name, {}))
    asymmetric = preset.pop("asym", {})
    if noise.type == "asymmetric":
        preset.update(asymmetric)
    given = spec.model_dump(exclude_none=True)
    resolved = {**recipe, **{k: v for k, v in preset.items() if k in recipe}, **given}
    resolved.update(
        loss=form.name,
        loss_terms=form.terms,
        alpha=spec.alpha if spec.alpha is not None else preset.get("alpha", 1.0),
        beta=(spec.beta if spec.beta is not None else preset.get("beta", 1.0)) if form.takes_beta else 0.0,
        l1=spec.l1 if spec.l1 is not None else preset.get("l1", 0.0),
        loss_params=loss_params(form, spec.loss_params, preset.get("params", {})),
        noise=ResolvedNoise(type=noise.type, rate=noise.rate, matrix=noise.matrix or ()),
        num_classes=data.num_classes,
        train_size=_train_size(spec.train_size, data),
        time_limit_s=spec.time_limit_s or 0,
    )
    if resolved["lr_min"] > resolved["lr"]:
        raise SpecError(f"lr_min {resolved['lr_min']} must not exceed lr {resolved['lr']}", "lr_min")
    if resolved["nesterov"] and resolved["momentum"] == 0:
        raise SpecError("Nesterov momentum needs momentum > 0; set momentum or nesterov false", "nesterov")
    return ResolvedSpec(**resolved)


def _train_size(train_size: int | None, data: DataInfo) -> int:
    if train_size is None:
        return data.train_samples
    if train_size > data.train_samples:
        raise SpecError(f"train_size {train_size} exceeds the {data.train_samples} training samples", "train_size")
    if train_size < 10 * data.num_classes:
        raise SpecError(f"use a train_size of at least {10 * data.num_classes} (10 per class)", "train_size")
    return train_size


def paper_preset(resolved: ResolvedSpec, data: DataInfo | None = None) -> ResolvedSpec:
    """The spec the paper's preset gives for a run's data set, loss and noise, with nothing else
    asked: what a dashboard marks the run's own choices against."""
    noise = NoiseSettings(type=resolved.noise.type, rate=resolved.noise.rate,
                          matrix=[list(row) for row in resolved.noise.matrix] or None)
    return resolve_spec(JobSpec(dataset=resolved.dataset, loss=resolved.loss, noise=noise), data)


def flat_spec(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A spec's values under dotted names, as a sweep's grid names them (`noise.rate`, `loss_params.q`)."""
    flat: dict[str, Any] = {}
    for name, value in spec.items():
        if isinstance(value, dict):
            flat.update(flat_spec(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = value
    return flat
