import numpy as np
import pytest
import torch

from shared.catalog import NOISE_KINDS
from shared.errors import SpecError
from worker.noise import (
    CIFAR10_MAP,
    IMPLEMENTATIONS,
    coarse_of_class,
    corrupt_labels,
    noise_report,
    transition_matrix,
)

K = 10


def balanced(per_class: int = 100, num_classes: int = K) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def test_registry_names_are_the_design_ones():
    assert set(NOISE_KINDS) == set(IMPLEMENTATIONS) == {"none", "symmetric", "asymmetric", "pairflip", "transition"}


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
def test_same_seed_gives_same_labels_and_other_seed_differs(kind):
    labels = balanced()
    a, _ = corrupt_labels(labels, kind, rate=0.3, num_classes=K, seed=1)
    b, _ = corrupt_labels(labels, kind, rate=0.3, num_classes=K, seed=1)
    c, _ = corrupt_labels(labels, kind, rate=0.3, num_classes=K, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_none_returns_an_unchanged_copy():
    labels = balanced()
    noisy, corrupted = corrupt_labels(labels, "none", num_classes=K)
    assert np.array_equal(noisy, labels) and not corrupted.any()
    assert noisy is not labels


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6, 0.8, 0.29])
def test_symmetric_flips_exactly_rate_of_the_labels_evenly(rate):
    labels = balanced()
    noisy, corrupted = corrupt_labels(labels, "symmetric", rate=rate, num_classes=K, seed=0)
    assert corrupted.sum() == round(rate * labels.size)
    assert np.array_equal(corrupted, noisy != labels)
    per_class = noise_report(labels, noisy, K)["per_class_rate"]
    assert max(per_class) - min(per_class) <= 0.0100001  # at most one sample apart


def test_symmetric_targets_are_uniform_over_the_other_classes():
    labels = balanced(per_class=2000)
    noisy, corrupted = corrupt_labels(labels, "symmetric", rate=0.6, num_classes=K, seed=0)
    confusion = np.zeros((K, K))
    np.add.at(confusion, (labels[corrupted], noisy[corrupted]), 1)
    assert np.all(np.diag(confusion) == 0)
    off = confusion[~np.eye(K, dtype=bool)]
    expected = 2000 * 0.6 / (K - 1)
    assert np.all(np.abs(off - expected) < 5 * np.sqrt(expected))


def test_symmetric_on_unbalanced_classes_keeps_the_exact_total():
    labels = np.concatenate([np.zeros(7, int), np.ones(50, int), np.full(13, 2)])
    _, corrupted = corrupt_labels(labels, "symmetric", rate=0.5, num_classes=3, seed=3)
    assert corrupted.sum() == 35
    per_class = [corrupted[labels == c].sum() for c in range(3)]
    assert all(abs(n - 0.5 * (labels == c).sum()) < 1 for c, n in enumerate(per_class))


def test_symmetric_refuses_rates_where_wrong_labels_dominate():
    with pytest.raises(SpecError, match=r"rate < 0\.9"):
        corrupt_labels(balanced(), "symmetric", rate=0.9, num_classes=K)


def test_cifar10_asymmetric_exact_count_per_source_class_all_from_clean_labels():
    labels = balanced(per_class=1000)
    noisy, corrupted = corrupt_labels(labels, "asymmetric", rate=0.4, num_classes=K, seed=0, dataset="cifar10")
    for source, target in CIFAR10_MAP.items():
        flipped = noisy[labels == source]
        assert (flipped == target).sum() == 400 and (flipped == source).sum() == 600
    untouched = [c for c in range(K) if c not in CIFAR10_MAP]
    assert not corrupted[np.isin(labels, untouched)].any()
    # The reference code's double flip gave 18.5% overall at 0.4; exact counts give 20%.
    assert corrupted.mean() == pytest.approx(0.2)


def test_asymmetric_maps_match_the_paper_and_its_sources():
    T = transition_matrix("asymmetric", 0.3, 10, dataset="mnist")
    for source, target in {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}.items():
        assert T[source, target] == pytest.approx(0.3) and T[source, source] == pytest.approx(0.7)
    T = transition_matrix("asymmetric", 0.3, 10, dataset="fashion-mnist")
    for source, target in {9: 7, 7: 5, 2: 6, 4: 3, 3: 4}.items():
        assert T[source, target] == pytest.approx(0.3)
    assert np.allclose(T.sum(axis=1), 1)


def test_asymmetric_refuses_half_and_unknown_datasets():
    with pytest.raises(SpecError, match=r"rate < 0\.5"):
        corrupt_labels(balanced(), "asymmetric", rate=0.5, num_classes=K, dataset="cifar10")
    with pytest.raises(SpecError, match="cifar10, cifar100, fashion-mnist, mnist"):
        corrupt_labels(balanced(), "asymmetric", rate=0.2, num_classes=K, dataset="svhn")


def cifar100_like() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fine labels with a shuffled (non-consecutive) super-class assignment, like the real files."""
    coarse_of_fine = np.random.default_rng(0).permutation(np.repeat(np.arange(20), 5))
    labels = balanced(per_class=10, num_classes=100)
    return labels, coarse_of_fine[labels], coarse_of_fine


def test_cifar100_asymmetric_flips_to_the_next_class_of_the_real_super_class():
    labels, coarse, coarse_of_fine = cifar100_like()
    noisy, corrupted = corrupt_labels(
        labels, "asymmetric", rate=0.4, num_classes=100, seed=0, dataset="cifar100", coarse_labels=coarse
    )
    assert corrupted.sum() == 400
    assert np.array_equal(coarse_of_fine[noisy], coarse)  # never leaves the super-class
    for group in range(20):
        members = np.flatnonzero(coarse_of_fine == group)
        for i, c in enumerate(members):
            assert set(noisy[labels == c]) == {c, members[(i + 1) % 5]}


def test_cifar100_accepts_a_per_class_map_and_blocks_compatibility():
    labels, coarse, coarse_of_fine = cifar100_like()
    per_sample, _ = corrupt_labels(labels, "asymmetric", rate=0.2, num_classes=100, dataset="cifar100", coarse_labels=coarse)
    per_class, _ = corrupt_labels(
        labels, "asymmetric", rate=0.2, num_classes=100, dataset="cifar100", coarse_labels=coarse_of_fine
    )
    assert np.array_equal(per_sample, per_class)
    assert np.array_equal(coarse_of_class(labels, coarse, 100), coarse_of_fine)
    T = transition_matrix("asymmetric", 0.2, 100, dataset="cifar100", cifar100_blocks=True)
    assert T[4, 0] == pytest.approx(0.2) and T[7, 8] == pytest.approx(0.2)


def test_cifar100_without_coarse_labels_says_what_to_pass():
    with pytest.raises(SpecError, match="coarse_labels"):
        corrupt_labels(balanced(num_classes=100), "asymmetric", rate=0.2, num_classes=100, dataset="cifar100")


def test_pairflip_moves_exact_counts_to_the_next_class():
    labels = balanced(per_class=50)
    noisy, corrupted = corrupt_labels(labels, "pairflip", rate=0.45, num_classes=K, seed=0)
    assert np.all(noisy[corrupted] == (labels[corrupted] + 1) % K)
    assert all(corrupted[labels == c].sum() == 23 for c in range(K))  # round(22.5) half up
    with pytest.raises(SpecError, match=r"rate < 0\.5"):
        corrupt_labels(labels, "pairflip", rate=0.5, num_classes=K)


def test_transition_samples_each_row():
    matrix = [[0.8, 0.2, 0.0], [0.1, 0.6, 0.3], [0.0, 0.0, 1.0]]
    labels = balanced(per_class=5000, num_classes=3)
    noisy, _ = corrupt_labels(labels, "transition", num_classes=3, seed=0, matrix=matrix)
    realised = np.zeros((3, 3))
    np.add.at(realised, (labels, noisy), 1 / 5000)
    assert np.allclose(realised, matrix, atol=0.02)
    assert np.array_equal(transition_matrix("transition", 0.0, 3, matrix=matrix), matrix)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([[1.0, 0.0], [0.0, 1.0]], "3×3"),
        ([[0.9, 0.1, 0.0], [0.2, 0.7, 0.2], [0.0, 0.0, 1.0]], "row 1 sums to 1.1"),
        ([[0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [-0.1, 0.1, 1.0]], "row 2 has entries outside"),
        ([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], "row 1: the true class must stay the most likely label"),
        ([[0.9, 0.1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "must be 3×3, one row and one column per class"),
    ],
)
def test_transition_refuses_bad_matrices_naming_the_row(matrix, message):
    with pytest.raises(SpecError, match=message):
        corrupt_labels(balanced(num_classes=3), "transition", num_classes=3, matrix=matrix)


@pytest.mark.parametrize("kind", sorted(NOISE_KINDS))
def test_expected_matrices_are_row_stochastic(kind):
    rate = 0.0 if kind in ("none", "transition") else 0.3
    matrix = np.eye(K) if kind == "transition" else None
    T = transition_matrix(kind, rate, K, dataset="cifar10", matrix=matrix)
    assert T.shape == (K, K) and np.allclose(T.sum(axis=1), 1)


def test_symmetric_realised_matrix_matches_the_expected_one():
    labels = balanced(per_class=1000)
    noisy, _ = corrupt_labels(labels, "symmetric", rate=0.4, num_classes=K, seed=0)
    realised = np.zeros((K, K))
    np.add.at(realised, (labels, noisy), 1 / 1000)
    assert np.allclose(realised, transition_matrix("symmetric", 0.4, K), atol=0.02)


def test_torch_labels_come_back_as_tensors_of_the_same_dtype():
    labels = torch.from_numpy(balanced())
    noisy, corrupted = corrupt_labels(labels, "symmetric", rate=0.4, num_classes=K, seed=0)
    assert isinstance(noisy, torch.Tensor) and noisy.dtype == torch.int64
    assert corrupted.dtype == torch.bool and int(corrupted.sum()) == 400
    as_numpy, _ = corrupt_labels(labels.numpy(), "symmetric", rate=0.4, num_classes=K, seed=0)
    assert np.array_equal(noisy.numpy(), as_numpy)


def test_numpy_dtype_is_kept():
    noisy, _ = corrupt_labels(balanced().astype(np.uint8), "pairflip", rate=0.2, num_classes=K)
    assert noisy.dtype == np.uint8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "gaussian", "rate": 0.2}, "unknown noise type"),
        ({"kind": "symmetric", "rate": 1.0}, r"0 <= rate < 0\.9"),
        ({"kind": "none", "rate": 0.2}, "takes no rate"),
        ({"kind": "transition", "rate": 0.2}, "from the matrix"),
        ({"kind": "transition"}, "needs a 10×10 matrix"),
    ],
)
def test_bad_settings_say_what_to_change(kwargs, message):
    with pytest.raises(SpecError, match=message):
        corrupt_labels(balanced(), num_classes=K, **kwargs)


def test_labels_out_of_range_are_refused():
    with pytest.raises(SpecError, match=r"\[0, 10\)"):
        corrupt_labels(np.array([0, 10]), "symmetric", rate=0.2, num_classes=K)


def test_noise_report_gives_overall_and_per_class_rates():
    labels = np.array([0, 0, 1, 1, 2])
    noisy = np.array([0, 1, 1, 1, 0])
    report = noise_report(labels, noisy, num_classes=4)
    assert report["rate"] == pytest.approx(0.4)
    assert report["num_corrupted"] == 2 and report["num_samples"] == 5
    assert report["per_class_rate"] == [0.5, 0.0, 1.0, None]
