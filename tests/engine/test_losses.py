"""worker/losses.py: each loss against its formula, Eq. 1's normalization, APL composition,
refused requests, and finite values and gradients at extreme logits."""

import math

import numpy as np
import pytest
import torch

from shared.catalog import LOSSES, LossInfo
from shared.errors import SpecError
from shared.rules import parse_loss
from worker.losses import IMPLEMENTATIONS, make_loss, register_loss, register_normalized

K = 5
LN_1E4 = math.log(1e-4)
# Fixed logits: a moderate row, a peaked row, a near-uniform row, and a row with p < 1e-7 (NNCE's clamp).
LOGITS = np.array(
    [
        [2.0, -1.0, 0.5, 0.0, 3.0],
        [-4.0, 4.0, 0.0, 1.0, -1.0],
        [0.1, 0.2, 0.3, 0.4, 0.5],
        [-20.0, 10.0, 0.0, 0.0, 0.0],
    ]
)
LABELS = np.array([4, 0, 2, 0])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def nnce(p, py):
    def ell(v):
        return -math.log(1e-7) + np.log(np.clip(v, 1e-7, 1))  # ℓ = A + ln clamp(p, 1e-7, 1)

    return 1 - ell(py) / ell(p).sum(axis=1)


def nfl(p, py, gamma=0.5):
    return ((1 - py) ** gamma * np.log(py)) / ((1 - p) ** gamma * np.log(p)).sum(axis=1)


# Each loss written out independently in numpy: p [B, K] probabilities, py [B] those of the labels.
# Default parameter values are spelled out here, so a changed default fails the test.
FORMULAS = {
    "ce": lambda p, py: -np.log(py),
    "fl": lambda p, py, gamma=0.5: -((1 - py) ** gamma) * np.log(py),
    "gce": lambda p, py, q=0.7: (1 - py**q) / q,
    "mae": lambda p, py: 1 - py,
    "rce": lambda p, py, A=LN_1E4: -A * (1 - py),
    "nce": lambda p, py: np.log(py) / np.log(p).sum(axis=1),
    "nfl": nfl,
    "ngce": lambda p, py, q=0.7: (1 - py**q) / (K - (p**q).sum(axis=1)),
    "nmae": lambda p, py: (1 - py) / (K - 1),
    "nrce": lambda p, py, A=LN_1E4: (1 - py) / (K - 1),
    "nnce": nnce,
    "agce": lambda p, py, a=6.0, q=1.5: ((a + 1) ** q - (a + py) ** q) / q,
    "aul": lambda p, py, a=6.3, q=1.5: ((a - py) ** q - (a - 1) ** q) / q,
    "ael": lambda p, py, a=5.0: np.exp(-py / a),
    "sce": lambda p, py, A=LN_1E4: -np.log(py) - A * (1 - py),
}

FORMULA_CASES = [(name, {}) for name in FORMULAS] + [
    ("fl", {"gamma": 0.0}),
    ("fl", {"gamma": 2.0}),
    ("gce", {"q": 0.3}),
    ("rce", {"A": -4.0}),
    ("nfl", {"gamma": 2.0}),
    ("ngce", {"q": 0.1}),
    ("nrce", {"A": -4.0}),
    ("agce", {"a": 1.0, "q": 0.5}),
    ("aul", {"a": 2.0, "q": 3.0}),
    ("ael", {"a": 0.5}),
    ("sce", {"A": -4.0}),
]

ROBUST_TERMS = sorted(name for name, info in LOSSES.items() if info.terms is None and info.robust)


def _parses(name: str) -> bool:
    try:
        parse_loss(name)
    except SpecError:
        return False
    return True


COMBINATIONS = [f"{a}+{b}" for a in ROBUST_TERMS for b in ROBUST_TERMS if _parses(f"{a}+{b}")]


def per_sample(name: str, logits=LOGITS, labels=LABELS, **kwargs) -> np.ndarray:
    loss_fn = make_loss(name, num_classes=K, reduction="none", **kwargs)
    return loss_fn(torch.tensor(logits, dtype=torch.float64), torch.tensor(labels)).numpy()


@pytest.fixture
def brier():
    """A base loss the module does not know, registered here: the Brier score Σ_k (p_k - q_k)^2."""

    def brier_score(log_p):
        p = log_p.exp()
        return (p**2).sum(dim=1, keepdim=True) - 2 * p + 1  # L[b, j] = Σ_k p_k^2 - 2 p_j + 1

    register_loss("brier", brier_score, LossInfo("passive", False, "Σ_k (p_k - q_k)^2"))
    register_normalized("nbrier", LossInfo("passive", True, "Brier / Σ_j Brier_j", normalizes="brier"))
    yield
    for name in ("brier", "nbrier"):  # gone again, so that no later test sees them in the catalog
        LOSSES.pop(name, None)
        IMPLEMENTATIONS.pop(name, None)


def test_every_registered_loss_has_an_independent_formula_here():
    assert set(FORMULAS) == set(LOSSES)


@pytest.mark.parametrize(("name", "params"), FORMULA_CASES, ids=lambda v: str(v) if v else "defaults")
def test_each_loss_equals_its_formula(name, params):
    p = softmax(LOGITS)
    py = p[np.arange(len(LABELS)), LABELS]
    np.testing.assert_allclose(per_sample(name, **params), FORMULAS[name](p, py, **params), rtol=1e-10)


def test_fp32_agrees_with_fp64():
    for name in LOSSES:
        loss_fn = make_loss(name, num_classes=K, reduction="none")
        fp32 = loss_fn(torch.tensor(LOGITS[:3], dtype=torch.float32), torch.tensor(LABELS[:3]))
        assert fp32.dtype == torch.float32
        np.testing.assert_allclose(fp32.numpy(), per_sample(name, LOGITS[:3], LABELS[:3]), rtol=1e-5, atol=1e-6)


def test_a_base_loss_registered_later_is_normalized_by_eq1_without_new_code(brier):
    p = softmax(LOGITS)
    py = p[np.arange(len(LABELS)), LABELS]
    brier_y = (p**2).sum(axis=1) - 2 * py + 1
    np.testing.assert_allclose(per_sample("nbrier"), brier_y / ((p**2).sum(axis=1) * K - 2 + K), rtol=1e-10)
    assert LOSSES["nbrier"].robust and LOSSES["nbrier"].role == "passive"
    np.testing.assert_allclose(per_sample("nce+nbrier"), per_sample("nce") + per_sample("nbrier"), rtol=1e-12)
    with pytest.raises(SpecError, match="use its normalized form nbrier"):
        make_loss("nce+brier", num_classes=K)


NORMALIZED_CASES = [
    ("nce", {}),
    ("nfl", {}),
    ("nfl", {"gamma": 2.0}),
    ("ngce", {}),
    ("ngce", {"q": 0.1}),
    ("nmae", {}),
    ("nrce", {}),
    ("nrce", {"A": -4.0}),
    ("nbrier", {}),
]


@pytest.mark.usefixtures("brier")
@pytest.mark.parametrize(("name", "params"), NORMALIZED_CASES, ids=lambda v: str(v) if v else "defaults")
def test_normalized_loss_sums_to_one_over_all_labels(name, params):
    logits = torch.randn(16, K, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    loss_fn = make_loss(name, num_classes=K, reduction="none", **params)
    total = sum(loss_fn(logits, torch.full((16,), j)) for j in range(K))  # Σ_j L_norm(f(x), j)
    np.testing.assert_allclose(total.numpy(), 1.0, rtol=1e-12)
    assert LOSSES[name].robust


@pytest.mark.parametrize("A", [LN_1E4, -4.0, -1.0])
def test_nmae_and_nrce_are_the_correctly_normalized_one_minus_p_for_any_A(A):
    py = softmax(LOGITS)[np.arange(len(LABELS)), LABELS]
    np.testing.assert_allclose(per_sample("nmae"), (1 - py) / (K - 1), rtol=1e-12)
    np.testing.assert_allclose(per_sample("nrce", A=A), (1 - py) / (K - 1), rtol=1e-12)
    np.testing.assert_allclose(per_sample("rce", A=A), -A * (1 - py), rtol=1e-12)


@pytest.mark.parametrize("name", COMBINATIONS)
def test_combination_is_alpha_first_plus_beta_second(name):
    first, second = name.split("+")
    combined = per_sample(name, alpha=0.3, beta=7.0)
    np.testing.assert_allclose(combined, 0.3 * per_sample(first) + 7.0 * per_sample(second), rtol=1e-12)


def test_the_papers_apl_aal_and_ppl_combinations_are_accepted():
    for name in ["nce+mae", "nce+rce", "nfl+mae", "nfl+rce", "ngce+mae", "ngce+rce", "nfl+nce", "mae+rce"]:
        assert name in COMBINATIONS
    for name in ["nce+nnce", "nce+agce", "nce+aul", "nce+ael", "nce+nmae", "nce+nrce"]:
        assert name in COMBINATIONS
    # every ordered pair of different robust terms but passive-then-active: 3·8 APL + 3·2 AAL + 8·7 PPL
    assert len(COMBINATIONS) == 24 + 6 + 56


def test_single_loss_is_scaled_by_alpha_and_sce_is_alpha_ce_plus_beta_rce():
    np.testing.assert_allclose(per_sample("nce", alpha=10.0), 10 * per_sample("nce"), rtol=1e-12)
    expected = 6.0 * per_sample("ce") + 0.1 * per_sample("rce", A=-4.0)
    np.testing.assert_allclose(per_sample("sce", alpha=6.0, beta=0.1, A=-4.0), expected, rtol=1e-12)
    np.testing.assert_allclose(per_sample("sce", alpha=6.0, beta=0.1, **{"sce.A": -4.0}), expected, rtol=1e-12)


def test_plain_parameter_goes_to_every_term_that_takes_it_and_dotted_to_one():
    both = per_sample("ngce+agce", q=0.9)
    np.testing.assert_allclose(both, per_sample("ngce", q=0.9) + per_sample("agce", q=0.9), rtol=1e-12)
    one = per_sample("ngce+agce", **{"ngce.q": 0.1, "agce.q": 1.5, "a": 3.0})
    np.testing.assert_allclose(one, per_sample("ngce", q=0.1) + per_sample("agce", a=3.0, q=1.5), rtol=1e-12)
    dotted_wins = per_sample("ngce+agce", **{"q": 0.9, "agce.q": 1.5})
    np.testing.assert_allclose(dotted_wins, per_sample("ngce", q=0.9) + per_sample("agce", q=1.5), rtol=1e-12)
    only_agce = per_sample("nce+agce", a=6.0, q=1.5)  # nce takes no q: it goes to agce alone
    np.testing.assert_allclose(only_agce, per_sample("nce") + per_sample("agce"), rtol=1e-12)


def test_reductions():
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    rows = make_loss("nce+rce", num_classes=K, reduction="none")(logits, labels)
    assert rows.shape == (len(LABELS),)
    assert torch.allclose(make_loss("nce+rce", num_classes=K)(logits, labels), rows.mean())
    assert torch.allclose(make_loss("nce+rce", num_classes=K, reduction="sum")(logits, labels), rows.sum())


def test_parse_loss():
    assert parse_loss("nce").terms == ("nce",)
    assert parse_loss("sce").terms == ("ce", "rce")
    assert parse_loss("nce+rce").terms == ("nce", "rce")
    assert parse_loss(" NCE + RCE ").name == "nce+rce"


REFUSED = [
    ("ce+rce", {}, ["ce is not robust", "nce, e.g. nce+rce", "sce"]),
    ("fl+mae", {}, ["fl is not robust", "nfl"]),
    ("nce+gce", {}, ["gce is not robust", "ngce"]),
    ("rce+nce", {}, ["write the active term first: nce+rce"]),
    ("nce+nce", {}, ["twice"]),
    ("nce+rce+mae", {}, ["3 terms", "two"]),
    ("xyz", {}, ["unknown loss 'xyz'", "nce", "nrce", "sce"]),
    ("nce+xyz", {}, ["unknown loss 'xyz'"]),
    ("sce+mae", {}, ["sce is already the combination ce+rce"]),
    ("", {}, ["such as 'nce' or 'nce+rce'"]),
    ("nce", {"beta": 1.0}, ["single term", "drop beta"]),
    ("nce", {"q": 0.5}, ["'q'", "takes none"]),
    ("nce+rce", {"gamma": 0.5}, ["'gamma'", "takes: A, rce.A"]),
    ("nce+rce", {"nce.A": -4.0}, ["'nce.A'", "takes: A, rce.A"]),
    ("fl", {"gamma": -1.0}, ["gamma >= 0"]),
    ("nfl", {"detach_focal": 0.5}, ["detach_focal = 0 or 1", "detach_focal=0.5"]),
    ("nfl+rce", {"detach_focal": 2.0}, ["detach_focal = 0 or 1"]),
    ("nce+rce", {"detach_focal": 1.0}, ["'detach_focal'", "takes: A, rce.A"]),
    ("gce", {"q": 0.0}, ["q > 0"]),
    ("rce", {"A": 4.0}, ["A < 0"]),
    ("aul", {"a": 0.5}, ["a > 1"]),
    ("agce", {"q": float("nan")}, ["finite number"]),
    ("agce", {"a": "6"}, ["finite number"]),
    ("nce", {"alpha": 0.0}, ["alpha must be in (0, 1000]"]),
    ("nce+rce", {"beta": -1.0}, ["beta must be in (0, 1000]"]),
    ("nce", {"num_classes": 1}, ["num_classes"]),
    ("nce", {"reduction": "avg"}, ["reduction"]),
]


@pytest.mark.parametrize(("name", "kwargs", "fragments"), REFUSED, ids=[f"{n}-{k}" for n, k, _ in REFUSED])
def test_refused_request_raises_spec_error_saying_what_to_write(name, kwargs, fragments):
    kwargs = {"num_classes": K, **kwargs}
    with pytest.raises(SpecError) as refused:
        make_loss(name, **kwargs)
    assert isinstance(refused.value, ValueError)
    for fragment in fragments:
        assert fragment in str(refused.value)


def test_logits_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        make_loss("nce", num_classes=K)(torch.zeros(2, K + 1), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_are_those_of_the_formula(name):
    """Including the focal factor (1 - p)^γ: we keep it in the graph, the reference code detaches it."""
    loss_fn = make_loss(name, num_classes=K, reduction="none")
    logits = torch.tensor(LOGITS[:3], requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: loss_fn(z, torch.tensor(LABELS[:3])), (logits,))


EXTREME = [
    [1e4, -1e4, 0.0, -1e4, 1e4],
    [1e4, -1e4, 0.0, -1e4, 1e4],
    [-1e4, 1e4, -1e4, -1e4, -1e4],
    [1e4, 1e4, 1e4, 1e4, 1e4],
    [-1e4, -1e4, -1e4, -1e4, 1e4],
    [0.0, 30.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 100.0, 0.0, 0.0],
]
# p_y = 1/2, 0, 1, 1/K, 0, then exactly 1 in fp32 with log p_y = 0 for gaps of 30 and 100
EXTREME_LABELS = torch.tensor([0, 1, 1, 3, 0, 1, 2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", sorted(LOSSES) + COMBINATIONS)
def test_value_and_gradient_are_finite_for_logits_up_to_1e4(name, dtype):
    logits = torch.tensor(EXTREME, dtype=dtype, requires_grad=True)
    loss = make_loss(name, num_classes=K, reduction="none")(logits, EXTREME_LABELS)
    loss.sum().backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss).all(), loss
    assert torch.isfinite(logits.grad).all(), logits.grad


def test_safe_under_bf16_autocast():
    layer = torch.nn.Linear(8, K)
    x = torch.randn(4, 8) * 1e3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(x)
        loss = make_loss("nfl+rce", num_classes=K)(logits, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(layer.weight.grad).all()


FOCAL_LOSSES = ["fl", "nfl", "nfl+rce", "nfl+mae"]


def focal_gradient(name: str, detach_focal: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.tensor(LOGITS, requires_grad=True)
    loss = make_loss(name, num_classes=K, reduction="sum", detach_focal=detach_focal)(logits, torch.tensor(LABELS))
    loss.backward()
    return loss.detach(), logits.grad


@pytest.mark.parametrize("name", FOCAL_LOSSES)
def test_detach_focal_changes_the_gradient_but_not_the_value(name):
    kept_value, kept_grad = focal_gradient(name, 0.0)
    detached_value, detached_grad = focal_gradient(name, 1.0)
    assert torch.equal(kept_value, detached_value)
    assert torch.equal(kept_grad, focal_gradient(name, 0)[1]), "the default keeps the factor in the graph"
    assert not torch.allclose(kept_grad, detached_grad, rtol=1e-3)


def test_a_detached_focal_factor_is_a_constant_to_the_gradient():
    """FL with c = (1 - p_y)^γ held constant: d(-c log p_y)/dz = c (p - onehot(y))."""
    _, grad = focal_gradient("fl", 1.0)
    p = softmax(LOGITS)
    onehot = np.eye(K)[LABELS]
    c = (1 - p[np.arange(len(LABELS)), LABELS]) ** 0.5
    np.testing.assert_allclose(grad.numpy(), c[:, None] * (p - onehot), rtol=1e-10)


# Logits with the label's class ahead of the others by `gap`: p_y = 1/(1 + Σ e^(-gap - offset)),
# from 1 - 5e-5 down to 1 - 4e-18 (float32's 1 - p_y = 1 - exp(log_softmax) is 0 from about gap 17 on).
GAPS = [10.0, 14.0, 17.0, 20.0, 25.0, 30.0, 40.0]
OFFSETS = np.array([0.0, 0.5, 1.0, 3.0])


def near_one_logits(gap: float) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([[gap], -OFFSETS])[None, :].astype(np.float64), np.array([0])


def reference_one_minus_p(gap: float) -> float:
    """1 - p_y = Σ_{j≠y} p_j in float64: a sum of small positive terms, nothing cancels."""
    others = np.exp(-gap - OFFSETS)
    return float(others.sum() / (1 + others.sum()))


@pytest.mark.parametrize("gap", GAPS)
def test_one_minus_p_is_accurate_in_fp32_as_p_approaches_one(gap):
    logits, labels = near_one_logits(gap)
    ref = reference_one_minus_p(gap)
    log_py = -math.log1p(ref / (1 - ref))  # log p_y = -log(1 + Σ_{j≠y} e^(z_j - z_y))
    expected = {
        "mae": ref,
        "rce": -LN_1E4 * ref,
        "gce": -math.expm1(0.7 * log_py) / 0.7,
        "ce": -log_py,
    }
    for name, value in expected.items():
        got = make_loss(name, num_classes=K, reduction="none")(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels))
        assert got.item() == pytest.approx(value, rel=1e-5), name
    if ref > 1e-7:  # above the focal factor's floor EPS
        fl = make_loss("fl", num_classes=K, reduction="none")(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels))
        assert fl.item() == pytest.approx(-(ref**0.5) * log_py, rel=1e-5)
