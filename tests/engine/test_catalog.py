"""Every name the torch-free catalog declares has an implementation in the worker, and every
implementation is declared: one list of names, two halves (rules in shared/, code in worker/)."""

import pytest

from shared import catalog
from shared.spec import JobSpec, resolve_spec
from worker import datasets, losses, models, noise, trainer

SINGLE_TERMS = {name for name, info in catalog.LOSSES.items() if info.terms is None}


@pytest.mark.parametrize(
    ("declared", "implemented"),
    [
        (catalog.DATASETS, datasets.DATASETS),
        (catalog.MODELS, models.MODELS),
        (catalog.NOISE_KINDS, noise.IMPLEMENTATIONS),
        (SINGLE_TERMS, losses.IMPLEMENTATIONS),
        (catalog.SCHEDULES, trainer.SCHEDULES),
        (catalog.AUGMENTATIONS, trainer.AUGMENTS),
        (catalog.PRECISIONS, trainer.PRECISIONS),
    ],
    ids=["datasets", "models", "noise", "losses", "schedules", "augmentations", "precisions"],
)
def test_catalog_and_worker_registries_name_the_same_things(declared, implemented):
    assert set(declared) == set(implemented)


def test_a_composite_names_two_implemented_terms():
    for name, info in catalog.LOSSES.items():
        if info.terms is not None:
            assert set(info.terms) <= set(losses.IMPLEMENTATIONS), name


def test_every_catalog_loss_builds_with_its_declared_defaults():
    for name, info in catalog.LOSSES.items():
        beta = {"beta": 1.0} if info.terms else {}
        defaults = {param: rule.default for param, rule in info.params.items()}
        assert losses.make_loss(name, num_classes=10, **beta, **defaults).name == name


def test_every_loss_preset_resolves_and_builds():
    for family, presets in catalog.LOSS_PRESETS.items():
        dataset = next(n for n, d in catalog.DATASETS.items() if d.family == family)
        for loss in presets:
            spec = resolve_spec(JobSpec(dataset=dataset, loss=loss))
            assert losses.loss_for(spec).name == loss
