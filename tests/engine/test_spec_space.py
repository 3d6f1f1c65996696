"""One source of truth for the job spec, as a property over the whole spec space:

- every spec the API's resolution accepts, the engine builds (loss, label noise, model, data)
  and trains one step with, its loss finite;
- every spec it refuses raises a SpecError naming the field, and the engine's library calls
  (make_loss, corrupt_labels) refuse the same loss and noise settings.

Data are synthetic images of each data set's shape (the real files exist here for
Fashion-MNIST only); everything else is the real code of both halves.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.catalog import DATASETS, LOSSES, MODELS, NOISE_KINDS, SCHEDULES
from shared.errors import SpecError
from shared.spec import JobSpec, ResolvedSpec, resolve_spec
from worker.datasets import LoadedData
from worker.losses import loss_for, make_loss
from worker.noise import corrupt_labels
from worker.runner import make_labels, prepare_data
from worker.trainer import Callback, new_state, train_epoch

TERMS = sorted(LOSSES)
PARAMS = sorted({p for info in LOSSES.values() for p in info.params})
SYNTHETIC_PER_CLASS = 12


def loss_names() -> st.SearchStrategy[str]:
    term = st.sampled_from(TERMS)
    return st.one_of(term, st.builds(lambda a, b: f"{a}+{b}", term, term), st.sampled_from(["", "nce+rce+mae", "xyz"]))


def param_values() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from([-1.0, 0.0, 0.1, 0.5, 1.0, 1.5, 6.0, -4.0, -9.21, 150.0, 1e6, 2e6]),
        st.floats(-200, 200, allow_nan=False),
    )


def matrices(k: int) -> st.SearchStrategy[list[list[float]]]:
    def row(i: int, stay: float) -> list[float]:
        rest = (1 - stay) / (k - 1)
        return [stay if j == i else rest for j in range(k)]

    good = st.floats(0.0, 1.0).map(lambda stay: [row(i, stay) for i in range(k)])
    return st.one_of(good, st.just([[1.0, 0.0], [0.0, 1.0]]))


@st.composite
def raw_specs(draw) -> dict:
    dataset = draw(st.sampled_from(["fashion-mnist", "cifar10", "cifar100"]))
    k = DATASETS[dataset].num_classes
    noise_type = draw(st.sampled_from(sorted(NOISE_KINDS)))
    noise: dict = {"type": noise_type, "rate": draw(st.sampled_from([0.0, 0.1, 0.3, 0.49, 0.5, 0.6, 0.89, 0.95]))}
    if noise_type == "transition" or draw(st.integers(0, 9)) == 0:
        noise["matrix"] = draw(matrices(k))
    spec = {"dataset": dataset, "noise": noise, "loss": draw(loss_names()), "seed": draw(st.integers(0, 3))}
    optional = {
        "alpha": st.sampled_from([0.1, 1.0, 10.0, 1000.0]),
        "beta": st.sampled_from([0.1, 1.0, 100.0]),
        "loss_params": st.dictionaries(
            st.one_of(st.sampled_from(PARAMS), st.builds(lambda t, p: f"{t}.{p}", st.sampled_from(TERMS),
                                                         st.sampled_from(PARAMS))),
            param_values(), max_size=3,
        ),
        "model": st.sampled_from(["cnn4", "cnn8"]),
        "train_size": st.integers(5 * k, 14 * k),
        "validation_split": st.sampled_from([0.0, 0.1, 0.5]),
        "batch_size": st.integers(2, 40),
        "lr": st.sampled_from([0.001, 0.1]),
        "lr_min": st.sampled_from([0.0, 0.01, 0.5]),
        "momentum": st.sampled_from([0.0, 0.9]),
        "nesterov": st.booleans(),
        "schedule": st.sampled_from(sorted(SCHEDULES)),
        "augment": st.sampled_from(["none", "crop-flip", "crop-flip-rotate"]),
        "l1": st.sampled_from([0.0, 1e-4]),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            spec[name] = draw(values)
    return spec


def synthetic(dataset: str) -> LoadedData:
    info = DATASETS[dataset]
    k, c, s = info.num_classes, info.channels, info.size
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(np.repeat(np.arange(k), SYNTHETIC_PER_CLASS))
    images = torch.from_numpy(rng.integers(0, 256, (len(labels), c, s, s), dtype=np.uint8))
    return LoadedData(
        name=dataset, x_train=images, y_train=labels, x_test=images[:k], y_test=labels[:k], num_classes=k,
        mean=(0.5,) * c, std=(0.25,) * c, classes=[str(i) for i in range(k)],
        coarse_train=labels // 5 if dataset == "cifar100" else None,
    )


class OneStep(Callback):
    log_every = 1

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step(self, state, metrics) -> None:
        self.losses.append(metrics["loss"])

    def should_stop(self) -> bool:
        return bool(self.losses)


def library_refuses(raw: dict, spec_error: SpecError) -> bool:
    """Whether the engine's own library call refuses what resolution refused (loss and noise)."""
    k = DATASETS[raw["dataset"]].num_classes
    try:
        if spec_error.field.startswith(("loss", "alpha", "beta")):
            make_loss(raw["loss"], k, alpha=raw.get("alpha", 1.0), beta=raw.get("beta"), **raw.get("loss_params", {}))
        elif spec_error.field.startswith("noise"):
            noise = raw["noise"]
            labels = np.repeat(np.arange(k), 2)
            corrupt_labels(labels, noise["type"], num_classes=k, rate=noise["rate"], matrix=noise.get("matrix"),
                           dataset=raw["dataset"], coarse_labels=labels // 5 if raw["dataset"] == "cifar100" else None)
        else:
            return True  # a field the library has no call for (sizes, schedule bounds)
    except SpecError:
        return True
    return False


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_specs())
def test_what_resolution_accepts_the_engine_trains_and_what_it_refuses_the_engine_refuses(raw):
    try:
        spec = resolve_spec(JobSpec.parse(raw))
    except SpecError as refused:
        assert refused.field and refused.message
        assert library_refuses(raw, refused), (raw, refused.field, refused.message)
        return
    assert isinstance(spec, ResolvedSpec)
    dataset = synthetic(spec.dataset)
    spec = spec.model_copy(update={"train_size": min(spec.train_size, len(dataset.y_train))})
    data = prepare_data(dataset, make_labels(spec, dataset))
    state = new_state(spec, data, torch.device("cpu"))
    step = OneStep()
    train_epoch(state, data, loss_for(spec), [step], epoch=1)
    assert state.step == 1 and math.isfinite(step.losses[0]), raw
    make_loss(raw["loss"], spec.num_classes, alpha=raw.get("alpha", 1.0), beta=raw.get("beta"),
              **raw.get("loss_params", {}))  # the library takes what the API took


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_trains_one_step_on_each_data_set_shape(model):
    for dataset in ("fashion-mnist", "cifar10"):
        spec = resolve_spec(JobSpec(dataset=dataset, model=model, batch_size=4, train_size=100))
        data = synthetic(dataset)
        prepared = prepare_data(data, make_labels(spec, data))
        state = new_state(spec, prepared, torch.device("cpu"))
        step = OneStep()
        train_epoch(state, prepared, loss_for(spec), [step], epoch=1)
        assert state.step == 1 and math.isfinite(step.losses[0])
