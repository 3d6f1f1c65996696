"""The torch-free catalog the API validates against names exactly what the worker implements."""

import pytest

from shared import catalog
from worker import datasets, losses, models, noise


@pytest.mark.parametrize(
    ("declared", "implemented"),
    [
        (catalog.DATASETS, datasets.DATASETS),
        (catalog.MODELS, models.MODELS),
        (catalog.NOISE_KINDS, noise.NOISE_KINDS),
        (catalog.LOSSES, losses.LOSSES),
    ],
    ids=["datasets", "models", "noise", "losses"],
)
def test_catalog_and_worker_registries_agree(declared, implemented):
    assert set(declared) == set(implemented)


def test_every_catalog_loss_builds_with_its_declared_parameters():
    for name, info in catalog.LOSSES.items():
        beta = {"beta": 1.0} if name == "sce" else {}
        loss_fn = losses.make_loss(name, num_classes=10, **beta, **info.params)
        assert loss_fn is not None


def test_every_loss_preset_builds():
    from shared.spec import JobSpec, resolve_spec

    for family, presets in catalog.LOSS_PRESETS.items():
        dataset = next(n for n, d in catalog.DATASETS.items() if d.family == family)
        for loss in presets:
            spec = resolve_spec(JobSpec(dataset=dataset, loss=loss))
            beta = {} if spec["beta"] is None else {"beta": spec["beta"]}
            losses.make_loss(loss, num_classes=spec["num_classes"], alpha=spec["alpha"], **beta, **spec["loss_params"])


def test_the_api_and_the_worker_accept_and_refuse_the_same_loss_names():
    from shared.spec import parse_loss

    names = list(catalog.LOSSES)
    for first in names:
        for second in [None, *names]:
            name = first if second is None else f"{first}+{second}"
            api_ok = _accepts(parse_loss, name)
            worker_ok = _accepts(losses.parse_loss_name, name)
            assert api_ok == worker_ok, name


def _accepts(parse, name: str) -> bool:
    try:
        parse(name)
    except ValueError:
        return False
    return True
