"""The label-quality report (worker/label_quality.py): the confident joint recovers a known noise
transition matrix, its intervals cover the truth, and every score and set is what its
definition gives on examples small enough to work out by hand (done here, independently)."""

import json

import numpy as np
import pytest

from worker.label_quality import (
    FLAGGING,
    assess_labels,
    average_precision,
    calibrated_joint,
    class_thresholds,
    confident_classes,
    confident_joint,
    confident_off_diagonal,
    detection,
    noise_rates,
    normalized_margin,
    prune_by_noise_rate,
    resampled_joints,
    self_confidence,
    summary,
    transition_matrix,
)

# rows: true class, columns: given label (each row sums to 1); an asymmetric pattern, so a
# transposed matrix would be caught
TRANSITION = np.array([
    [0.8, 0.2, 0.0, 0.0],
    [0.0, 0.7, 0.3, 0.0],
    [0.0, 0.0, 0.9, 0.1],
    [0.1, 0.0, 0.0, 0.9],
])
POPULATION_RATE = float(np.mean(1 - np.diag(TRANSITION)))  # classes equally likely


def synthetic(n: int, strength: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True classes drawn uniformly, given labels drawn from TRANSITION's row of the true class,
    and the probabilities of a model that favours the true class by `strength` logits."""
    rng = np.random.default_rng(seed)
    k = len(TRANSITION)
    true = rng.integers(0, k, n)
    given = (rng.random(n)[:, None] > TRANSITION.cumsum(1)[true]).sum(1)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += strength
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probabilities.astype(np.float32), given, true


@pytest.fixture(scope="module")
def assessed():
    probabilities, given, true = synthetic(4000, strength=4.0, seed=0)
    return assess_labels(probabilities, given, 4, clean=true, classes=["a", "b", "c", "d"], seed=0), given, true


# Recovery of a known transition matrix


def test_the_estimated_transition_matrix_recovers_the_true_one_rows_true_columns_given(assessed):
    quality, given, true = assessed
    estimated = np.array(quality.report["transition_matrix"])
    realised = np.zeros((4, 4))
    np.add.at(realised, (true, given), 1)
    realised /= realised.sum(1, keepdims=True)
    np.testing.assert_allclose(estimated.sum(1), 1.0, atol=1e-12)
    assert np.abs(estimated - realised).max() < 0.03, "within 0.03 of the realised matrix"
    assert np.abs(estimated - TRANSITION).max() < 0.05, "within 0.05 of the matrix the labels were drawn from"
    np.testing.assert_allclose(quality.report["against_clean"]["transition_matrix"], realised, atol=1e-12)


def test_the_noise_rate_is_estimated_within_a_point_and_its_interval_covers_the_truth(assessed):
    quality, given, true = assessed
    rate = quality.report["noise_rate"]
    realised = float((given != true).mean())
    assert abs(rate["estimate"] - realised) < 0.01
    assert rate["low"] <= realised <= rate["high"] and rate["low"] <= POPULATION_RATE <= rate["high"]
    assert 0 < rate["high"] - rate["low"] < 0.05, "a 95% interval of about ±1.5 points at n = 4000"
    clean = quality.report["against_clean"]
    assert clean["noise_rate"] == pytest.approx(realised) and clean["noise_rate_covered"] is True
    assert clean["noise_rate_error"] == pytest.approx(abs(rate["estimate"] - realised))
    assert clean["per_class_covered"] >= 3


def test_per_class_rates_are_per_true_class_and_per_given_label(assessed):
    quality, given, true = assessed
    for entry, rate in zip(quality.report["per_class"], quality.report["per_class_noise_rate"]):
        i = entry["class"]
        truly_i, given_i = true == i, given == i
        assert entry["name"] == "abcd"[i] and entry["given_count"] == int(given_i.sum())
        assert rate == entry["noise_rate"]["estimate"]
        assert abs(rate - (given[truly_i] != i).mean()) < 0.04, "share of class i's samples labelled otherwise"
        assert abs(entry["given_label_noise_rate"]["estimate"] - (true[given_i] != i).mean()) < 0.04
        assert entry["noise_rate"]["low"] <= rate <= entry["noise_rate"]["high"]


def test_confused_pairs_are_the_largest_off_diagonal_cells_named(assessed):
    quality, _, _ = assessed
    pairs = quality.report["confused_pairs"]
    assert [(p["true"], p["given"]) for p in pairs[:2]] == [(1, 2), (0, 1)], "0.3 and 0.2 of TRANSITION"
    assert pairs[0]["true_name"] == "b" and pairs[0]["given_name"] == "c"
    assert pairs[0]["share"] == pytest.approx(0.3, abs=0.04)
    assert pairs[0]["count"] == pytest.approx(4000 * pairs[0]["joint"])
    assert [p["joint"] for p in pairs] == sorted((p["joint"] for p in pairs), reverse=True)


def test_the_flagged_set_finds_the_corrupted_samples_and_every_ranking_beats_chance(assessed):
    quality, given, true = assessed
    clean = quality.report["against_clean"]
    corrupted = given != true
    assert clean["precision"] > 0.9 and clean["recall"] > 0.9 and clean["num_corrupted"] == corrupted.sum()
    assert clean["precision"] == pytest.approx((quality.flagged & corrupted).sum() / quality.flagged.sum())
    for name, ap in clean["average_precision_by_score"].items():
        assert ap > 0.9, name
    assert set(clean["flagged_by_method"]) == set(FLAGGING)


def test_the_report_is_strict_json_with_the_documented_fields(assessed):
    quality, _, _ = assessed
    report = json.loads(json.dumps(quality.report, allow_nan=False))
    assert {"probabilities", "noise_rate", "per_class_noise_rate", "per_class", "transition_matrix", "joint",
            "confident_joint", "thresholds", "confused_pairs", "flagged", "bootstrap", "against_clean",
            "orientation"} <= set(report)
    assert report["probabilities"] == "in_sample" and "rows: true class" in report["orientation"]
    assert sum(map(sum, report["joint"])) == pytest.approx(1.0)
    assert summary(report) == {
        "probabilities": "in_sample", "noise_rate": report["noise_rate"],
        "noise_rate_true": report["against_clean"]["noise_rate"], "flagged": report["flagged"]["count"],
        "precision": report["against_clean"]["precision"], "recall": report["against_clean"]["recall"],
        "f1": report["against_clean"]["f1"],
    }


def test_without_clean_labels_there_is_no_comparison():
    probabilities, given, _ = synthetic(300, 4.0, seed=1)
    report = assess_labels(probabilities, given, 4, resamples=20).report
    assert report["against_clean"] is None and report["classes"] is None
    assert summary(report)["precision"] is None and summary(report)["noise_rate_true"] is None


# The bootstrap's vectorised resamples against resamples written out


def test_resampled_joints_equal_the_joint_of_each_resample_written_out():
    probabilities, given, _ = synthetic(500, 1.5, seed=2)  # a weak model: many samples near a threshold
    rng = np.random.default_rng(3)
    weights = np.stack([np.bincount(rng.integers(0, 500, 500), minlength=500) for _ in range(6)])
    joints = resampled_joints(probabilities.astype(np.float64), given, 4, weights.astype(np.float64))
    for w, joint in zip(weights, joints):
        p, g = np.repeat(probabilities, w, axis=0).astype(np.float64), np.repeat(given, w)
        expected = calibrated_joint(confident_joint(p, g, 4).astype(float), np.bincount(g, minlength=4).astype(float))
        np.testing.assert_allclose(joint, expected, atol=1e-12)


def test_the_bootstrap_is_seeded():
    probabilities, given, _ = synthetic(300, 3.0, seed=4)
    a = assess_labels(probabilities, given, 4, seed=7, resamples=30).report["noise_rate"]
    b = assess_labels(probabilities, given, 4, seed=7, resamples=30).report["noise_rate"]
    c = assess_labels(probabilities, given, 4, seed=8, resamples=30).report["noise_rate"]
    assert a == b and a["estimate"] == c["estimate"] and (a["low"], a["high"]) != (c["low"], c["high"])


# Hand-checkable examples

# Five samples, three classes. Given labels 0, 0, 1, 1, 2.
TINY_P = np.array([
    [0.7, 0.2, 0.1],  # given 0
    [0.1, 0.8, 0.1],  # given 0, looks like 1
    [0.2, 0.6, 0.2],  # given 1
    [0.3, 0.4, 0.3],  # given 1, unsure
    [0.1, 0.1, 0.8],  # given 2
])
TINY_GIVEN = np.array([0, 0, 1, 1, 2])


def test_thresholds_are_the_mean_probability_of_a_class_over_the_samples_given_it():
    # t0 = (0.7 + 0.1) / 2, t1 = (0.6 + 0.4) / 2, t2 = 0.8
    np.testing.assert_allclose(class_thresholds(TINY_P, TINY_GIVEN, 3), [0.4, 0.5, 0.8])
    assert class_thresholds(TINY_P, np.array([0, 0, 0, 0, 0]), 3)[1] == np.inf, "no sample given 1"


def test_a_sample_is_confidently_the_likeliest_class_above_its_threshold_or_none():
    # sample 0: only p0 = 0.7 ≥ 0.4. sample 1: p1 = 0.8 ≥ 0.5. sample 2: p1 = 0.6 ≥ 0.5.
    # sample 3: 0.3 < 0.4, 0.4 < 0.5, 0.3 < 0.8: none. sample 4: p2 = 0.8 ≥ 0.8.
    assert confident_classes(TINY_P, np.array([0.4, 0.5, 0.8])).tolist() == [0, 1, 1, -1, 2]
    # above two thresholds: the larger probability wins, not the first class
    assert confident_classes(np.array([[0.45, 0.55, 0.0]]), np.array([0.4, 0.5, 0.8])).tolist() == [1]


def test_the_confident_joint_counts_given_against_confident_class_and_is_calibrated_per_given_label():
    counts = confident_joint(TINY_P, TINY_GIVEN, 3)
    # [given, true]: given 0 → confident 0 once and 1 once; given 1 → 1 once (sample 3 counts nowhere)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    joint = calibrated_joint(counts.astype(float), np.array([2.0, 2.0, 1.0]))
    # row 1 is scaled from 1 counted sample to the 2 given label 1; n = 5
    np.testing.assert_allclose(joint, np.array([[1, 1, 0], [0, 2, 0], [0, 0, 1]]) / 5)
    np.testing.assert_allclose(
        calibrated_joint(np.zeros((2, 2)), np.array([3.0, 1.0])), [[0.75, 0], [0, 0.25]],
        err_msg="a label without confident samples is taken as clean",
    )


def test_the_transition_matrix_puts_true_classes_in_rows_and_given_labels_in_columns():
    # Q[given, true]: 0.1 of all samples are truly 0 but given 1; 0.4 truly 0 given 0; 0.5 truly 1 given 1
    joint = np.array([[0.4, 0.0], [0.1, 0.5]])
    np.testing.assert_allclose(transition_matrix(joint), [[0.8, 0.2], [0.0, 1.0]])
    rates = noise_rates(joint)
    assert rates.overall == pytest.approx(0.1)
    np.testing.assert_allclose(rates.per_true_class, [0.2, 0.0])  # of the truly-0, 0.1/0.5 carry label 1
    np.testing.assert_allclose(rates.per_given_label, [0.0, 1 / 6])  # of those given 1, 0.1/0.6 are not 1


def test_self_confidence_and_margin():
    np.testing.assert_allclose(self_confidence(TINY_P, TINY_GIVEN), [0.7, 0.1, 0.6, 0.4, 0.8])
    # p_given − the largest other: 0.7−0.2, 0.1−0.8, 0.6−0.2, 0.4−0.3, 0.8−0.1
    np.testing.assert_allclose(normalized_margin(TINY_P, TINY_GIVEN), [0.5, -0.7, 0.4, 0.1, 0.7])


def test_prune_by_noise_rate_flags_n_times_each_off_diagonal_cell_by_largest_lead():
    # ten samples given 0; Q[0][1] = 0.2 → round(10 · 0.2) = 2 flagged: the largest p1 − p0
    p1 = np.array([0.05, 0.9, 0.2, 0.6, 0.1, 0.3, 0.15, 0.0, 0.5, 0.25])
    probabilities = np.stack([1 - p1, p1], axis=1)
    joint = np.array([[0.8, 0.2], [0.0, 0.0]])
    flagged = prune_by_noise_rate(probabilities, np.zeros(10, dtype=int), joint)
    assert np.flatnonzero(flagged).tolist() == [1, 3]


def test_confident_off_diagonal_flags_samples_confidently_of_another_class():
    assert confident_off_diagonal(TINY_P, TINY_GIVEN, np.eye(3)).tolist() == [False, True, False, False, False]


def test_average_precision_is_the_mean_precision_at_each_positive_without_ties():
    rng = np.random.default_rng(5)
    scores, positives = rng.random(50), rng.random(50) < 0.3
    ranks = np.argsort(np.argsort(-scores)) + 1  # 1 = most suspect
    by_definition = np.mean([(positives & (ranks <= r)).sum() / r for r in ranks[positives]])
    assert average_precision(scores, positives) == pytest.approx(by_definition)


def test_average_precision_takes_tied_scores_together():
    # scores 3, 2, 2, 1 with positives T, F, T, F: thresholds give (P, R) = (1, 1/2), (2/3, 1), (1/2, 1)
    ap = average_precision(np.array([3.0, 2.0, 2.0, 1.0]), np.array([True, False, True, False]))
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(np.array([1.0, 2.0]), np.array([False, False])) is None


def test_detection_scores():
    flagged = np.array([True, True, True, False, False])
    corrupted = np.array([True, False, True, True, False])
    assert detection(flagged, corrupted) == {"count": 3, "precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3)}
    assert detection(np.zeros(5, bool), corrupted) == {"count": 0, "precision": None, "recall": 0.0, "f1": None}


def test_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, worker.label_quality; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
