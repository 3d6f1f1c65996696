"""A job spec is validated, and resolved against the paper's presets, without torch."""

import pytest
from pydantic import ValidationError

from shared.catalog import A_REFERENCE
from shared.errors import SpecError
from shared.rules import parse_loss
from shared.spec import DataInfo, JobSpec, flat_spec, paper_preset, resolve_spec


def resolve(**fields):
    return resolve_spec(JobSpec(**fields))


def test_missing_values_come_from_the_mnist_family_recipe_and_the_loss_preset():
    spec = resolve(dataset="fashion-mnist", loss="nce+rce", noise={"type": "symmetric", "rate": 0.6})
    assert spec.model == "cnn4" and spec.epochs == 50 and spec.batch_size == 128
    assert spec.lr == 0.01 and spec.nesterov is True and spec.schedule == "cosine"
    assert (spec.alpha, spec.beta) == (1.0, 10.0)
    assert spec.loss_params == {"A": A_REFERENCE}
    assert spec.num_classes == 10


def test_given_values_win_over_the_preset():
    spec = resolve(dataset="cifar10", loss="nce+rce", alpha=2.0, beta=0.5, lr=0.05, epochs=3, augment="none")
    assert (spec.alpha, spec.beta, spec.lr, spec.epochs, spec.augment) == (2.0, 0.5, 0.05, 3, "none")
    assert spec.model == "cnn8" and spec.weight_decay == 1e-4


def test_asymmetric_noise_takes_the_asymmetric_preset():
    sym = resolve(dataset="cifar10", loss="nfl", noise={"type": "symmetric", "rate": 0.4})
    asym = resolve(dataset="cifar10", loss="nfl", noise={"type": "asymmetric", "rate": 0.4})
    assert (sym.alpha, asym.alpha) == (10.0, 1.0)


def test_deterministic_is_off_unless_asked_and_the_resolved_spec_keeps_it():
    assert resolve(dataset="mnist").deterministic is False
    spec = resolve(dataset="mnist", deterministic=True)
    assert spec.deterministic is True and spec.to_json()["deterministic"] is True


def test_detach_focal_is_a_focal_loss_parameter_off_by_default():
    assert resolve(dataset="cifar10", loss="nfl+rce").loss_params == {"gamma": 0.5, "detach_focal": 0.0, "A": A_REFERENCE}
    assert resolve(dataset="cifar10", loss="nfl", loss_params={"detach_focal": 1.0}).loss_params["detach_focal"] == 1.0
    with pytest.raises(SpecError, match="nfl needs detach_focal = 0 or 1") as refused:
        resolve(dataset="cifar10", loss="nfl+mae", loss_params={"detach_focal": 0.5})
    assert refused.value.field == "loss_params.detach_focal"


def test_anl_preset_turns_weight_decay_into_an_l1_penalty():
    spec = resolve(dataset="cifar10", loss="nce+nnce")
    assert (spec.alpha, spec.beta, spec.l1, spec.weight_decay) == (5.0, 5.0, 5e-5, 0.0)


def test_a_plain_parameter_sets_every_term_that_takes_it_and_a_prefixed_one_a_single_term():
    spec = resolve(dataset="cifar10", loss="ngce+agce", loss_params={"ngce.q": 0.1, "a": 6.0})
    assert spec.loss_params == {"ngce.q": 0.1, "agce.q": 1.5, "a": 6.0}
    both = resolve(dataset="cifar10", loss="ngce+agce", loss_params={"q": 0.5})
    assert both.loss_params == {"q": 0.5, "a": 6.0}
    with pytest.raises(SpecError, match="agce needs q > 0"):
        resolve(dataset="cifar10", loss="ngce+agce", loss_params={"agce.q": -1.0})


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("ce+mae", "not robust"),
        ("rce+nce", "active term first"),
        ("nce+nce", "twice"),
        ("nce+rce+mae", "two"),
        ("nce+xyz", "unknown loss 'xyz'"),
    ],
)
def test_combinations_the_framework_does_not_define_are_refused_with_the_reason(name, why):
    with pytest.raises(ValueError, match=why):
        parse_loss(name)


@pytest.mark.parametrize("name", ["nce+rce", "nfl+mae", "ngce+nnce", "nce+agce", "nfl+nce", "mae+rce", "sce"])
def test_apl_and_the_ablations_are_accepted(name):
    assert parse_loss(name).name == name


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"dataset": "svhn"}, "dataset"),
        ({"dataset": "mnist", "noise": {"type": "symmetric", "rate": 0.9}}, "noise.rate"),
        ({"dataset": "mnist", "noise": {"type": "asymmetric", "rate": 0.5}}, "noise.rate"),
        ({"dataset": "mnist", "noise": {"type": "none", "rate": 0.2}}, "noise.rate"),
        ({"dataset": "mnist", "noise": {"type": "transition"}}, "noise.matrix"),
        ({"dataset": "mnist", "loss": "nce", "beta": 1.0}, "beta"),
        ({"dataset": "mnist", "loss": "nfl", "loss_params": {"q": 0.5}}, "loss_params.q"),
        ({"dataset": "mnist", "loss": "gce", "loss_params": {"q": -1.0}}, "loss_params.q"),
        ({"dataset": "mnist", "loss": "rce", "loss_params": {"A": 4.0}}, "loss_params.A"),
        ({"dataset": "mnist", "train_size": 70_000}, "train_size"),
        ({"dataset": "mnist", "lr": 0.01, "lr_min": 0.1}, "lr_min"),
    ],
)
def test_specs_that_cannot_run_name_the_field_to_change(fields, field):
    with pytest.raises(SpecError) as err:
        resolve(**fields)
    assert err.value.field == field


def test_a_transition_matrix_must_keep_the_true_class_most_likely():
    good = [[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.3, 0.7]]
    info = DataInfo(3, 1, 8, 1000, "mnist", builtin=False)
    spec = resolve_spec(JobSpec(dataset="ds_x", noise={"type": "transition", "matrix": good}), info)
    assert spec.noise.matrix == tuple(map(tuple, good)) and spec.augment == "none"
    bad = [[0.4, 0.6, 0.0], [0.1, 0.9, 0.0], [0.0, 0.3, 0.7]]
    with pytest.raises(SpecError, match="row 0"):
        resolve_spec(JobSpec(dataset="ds_x", noise={"type": "transition", "matrix": bad}), info)


@pytest.mark.parametrize(
    "fields",
    [
        {"dataset": "mnist", "epochs": 0},
        {"dataset": "mnist", "batch_size": 100_000},
        {"dataset": "mnist", "alpha": -1},
        {"dataset": "mnist", "model": "vgg"},
        {"dataset": "mnist", "precision": "fp8"},
        {"dataset": "mnist", "epoch": 5},
        {"dataset": "mnist", "epochs": True},
        {"dataset": "mnist", "epochs": "1"},
        {"dataset": "mnist", "lr": "0.1"},
        {"dataset": "mnist", "batch_size": 1},
        {"dataset": "mnist", "deterministic": "true"},
        {"dataset": "mnist", "deterministic": 1},
    ],
)
def test_out_of_range_or_unknown_fields_are_validation_errors(fields):
    with pytest.raises(ValidationError):
        JobSpec.model_validate(fields)


def test_asymmetric_noise_is_refused_for_an_uploaded_data_set():
    info = DataInfo(10, 1, 28, 1000, "mnist", builtin=False)
    with pytest.raises(SpecError, match="use pairflip, or transition"):
        resolve_spec(JobSpec(dataset="ds_x", noise={"type": "asymmetric", "rate": 0.2}), info)


@pytest.mark.parametrize("folds", [1, 11, -1])
def test_cross_fit_folds_outside_0_or_2_to_10_is_refused_naming_the_range(folds):
    with pytest.raises(SpecError) as refused:
        resolve_spec(JobSpec.parse({"dataset": "fashion-mnist", "cross_fit_folds": folds}))
    assert refused.value.field == "cross_fit_folds"
    assert "0 (off) or a number of folds from 2 to 10" in refused.value.message and str(folds) in refused.value.message


def test_cross_fit_folds_is_off_unless_asked_and_kept_in_the_resolved_spec():
    assert resolve(dataset="fashion-mnist").cross_fit_folds == 0
    assert resolve(dataset="fashion-mnist", cross_fit_folds=5).to_json()["cross_fit_folds"] == 5


def test_the_paper_preset_keeps_the_runs_data_set_loss_and_noise_and_nothing_else():
    run = resolve_spec(JobSpec.parse({"dataset": "mnist", "loss": "ngce", "noise": {"type": "asymmetric", "rate": 0.3},
                                      "alpha": 2.0, "epochs": 3, "train_size": 1000, "seed": 4}))
    preset = paper_preset(run)
    assert (preset.dataset, preset.loss, preset.noise) == (run.dataset, run.loss, run.noise)
    assert preset.alpha == 1.0  # the paper's asymmetric-noise α for NGCE on MNIST, not the symmetric 10
    ours, theirs = flat_spec(run.to_json()), flat_spec(preset.to_json())
    assert {name for name in ours if ours[name] != theirs[name]} == {"alpha", "epochs", "train_size", "seed"}
    assert "noise.rate" in ours and "loss_params.q" in ours
