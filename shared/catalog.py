"""What can be asked for: data sets, losses, models, noise kinds and the paper's presets.

Plain data, no torch: the API validates against it, and `worker/` registers the
implementations under the same names (tests/engine/test_catalog.py checks both agree).
Figures come from the paper and from the authors' reference configs
(../shared/paper/REFERENCE-NOTES.md); where they differ, the reference values win,
because the published α/β were tuned with them. docs/LOSSES.md explains each choice.
"""

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["active", "passive", "composite"]

MAX_LOSS_PARAM = 1e6
"""|value| of any loss parameter: finite and bounded, so a spec always stores as JSON."""


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    channels: int
    size: int
    train_samples: int
    test_samples: int
    family: str  # which recipe of the paper it trains with
    asymmetric_map: str  # how asymmetric noise flips its classes
    install: str  # how to give a worker its files (the error of a job no live worker can load)


@dataclass(frozen=True)
class ParamRule:
    """A loss parameter: its default and the open or closed interval it must lie in, or the
    few values it may take (`choices`: a switch is 0 or 1)."""

    default: float
    low: float = -MAX_LOSS_PARAM
    high: float = MAX_LOSS_PARAM
    low_open: bool = False
    high_open: bool = False
    choices: tuple[float, ...] = ()

    def allows(self, value: float) -> bool:
        if self.choices:
            return value in self.choices
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def rule(self, name: str) -> str:
        """The interval as a reader writes it: "q > 0", "A < 0", "0 <= gamma"; or the choices."""
        if self.choices:
            return f"{name} = " + " or ".join(f"{c:g}" for c in self.choices)
        parts = []
        if self.low > -MAX_LOSS_PARAM:
            parts.append(f"{name} {'>' if self.low_open else '>='} {self.low:g}")
        if self.high < MAX_LOSS_PARAM:
            parts.append(f"{name} {'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts) or f"|{name}| <= {MAX_LOSS_PARAM:g}"


@dataclass(frozen=True)
class LossInfo:
    """A loss term, or a named composite of two (`terms`): its role in the APL grammar."""

    role: Role
    robust: bool
    formula: str
    params: dict[str, ParamRule] = field(default_factory=dict)
    source: str = "Ma et al., ICML 2020"
    note: str = ""
    normalizes: str | None = None  # the base loss of a normalized term (Eq. 1)
    terms: tuple[str, str] | None = None  # a composite's two terms, weighed alpha and beta


@dataclass(frozen=True)
class Combination:
    """Two robust terms that may be added, weighed alpha and beta, in this order of roles."""

    roles: tuple[Role, Role]
    description: str


@dataclass(frozen=True)
class NoiseKind:
    """A kind of synthetic label noise and the rates it may take."""

    description: str
    rate_below: Literal["(K-1)/K", "1/2", "no rate"]  # why: see `rate_reason`
    rate_reason: str = ""
    needs_class_map: bool = False  # only for data sets with the paper's class maps
    needs_matrix: bool = False


ALLOW_DOWNLOAD = "or set NOISYFIT_ALLOW_DOWNLOAD=true on a worker"
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        10, 1, 28, 60_000, 10_000, "mnist", "7→1, 2→7, 5↔6, 3→8",
        "put torchvision's MNIST files (train-images-idx3-ubyte, ...) into NOISYFIT_DATA_DIR/MNIST/raw/ on a "
        f"worker, {ALLOW_DOWNLOAD}",
    ),
    "fashion-mnist": DatasetInfo(
        10, 1, 28, 60_000, 10_000, "mnist", "boot→sneaker, sneaker→sandal, pullover→shirt, coat↔dress (Zhang & Sabuncu, 2018)",
        "install it on a worker with `apt-get install dataset-fashion-mnist` (Debian; the files land in "
        f"/usr/share/datasets/fashion-mnist), {ALLOW_DOWNLOAD}",
    ),
    "cifar10": DatasetInfo(
        10, 3, 32, 50_000, 10_000, "cifar10", "truck→automobile, bird→airplane, deer→horse, cat↔dog",
        "extract torchvision's cifar-10-python.tar.gz into NOISYFIT_DATA_DIR on a worker (it unpacks to "
        f"cifar-10-batches-py/), {ALLOW_DOWNLOAD}",
    ),
    "cifar100": DatasetInfo(
        100, 3, 32, 50_000, 10_000, "cifar100", "each class → the next in its super-class, circularly",
        "extract torchvision's cifar-100-python.tar.gz into NOISYFIT_DATA_DIR on a worker (it unpacks to "
        f"cifar-100-python/), {ALLOW_DOWNLOAD}",
    ),
}

A_REFERENCE = -9.210340371976182  # ln(1e-4): the RCE constant of the reference code

# Bounds keep every loss finite in fp32: (a + 1)^q stays below 1e21 for a <= 100, q <= 10.
POSITIVE = dict(low=0.0, low_open=True)
GAMMA = ParamRule(0.5, low=0.0, high=10.0)
Q = ParamRule(0.7, **POSITIVE, high=1.0)  # GCE's q in (0, 1] (Zhang & Sabuncu, 2018)
RCE_A = ParamRule(A_REFERENCE, low=-100.0, high=0.0, high_open=True)  # the log of what stands in for log 0
SHIFT = dict(high=100.0)  # the a of AGCE, AUL, AEL
POWER = ParamRule(1.5, **POSITIVE, high=10.0)  # the q of AGCE, AUL
# 1: the focal factor (1 - p)^γ is a constant to the gradient, as in the reference code, whose
# NFL presets were tuned so; 0 (default): the true gradient. Loss values are the same.
DETACH = ParamRule(0.0, choices=(0.0, 1.0))
FOCAL = {"gamma": GAMMA, "detach_focal": DETACH}

LOSSES: dict[str, LossInfo] = {
    "ce": LossInfo("active", False, "CE = -log p_y"),
    "fl": LossInfo("active", False, "FL = -(1 - p_y)^γ log p_y", FOCAL, "Lin et al., 2017",
                   "detach_focal = 1 treats (1 - p_y)^γ as a constant in the gradient, as the reference code does"),
    "gce": LossInfo("active", False, "GCE = (1 - p_y^q) / q", {"q": Q}, "Zhang & Sabuncu, 2018"),
    "mae": LossInfo(
        "passive", True, "MAE = 1 - p_y", note="reference-code form: the paper's Σ|p-q| is 2(1 - p_y)"
    ),
    "rce": LossInfo(
        "passive", True, "RCE = -A (1 - p_y)", {"A": RCE_A}, "Wang et al., 2019",
        "A = ln(1e-4) as in the reference code; the paper's text says -4 (log10)",
    ),
    "sce": LossInfo(
        "composite", False, "SCE = α CE + β RCE", {"A": RCE_A}, "Wang et al., 2019",
        "α weighs CE and β RCE", terms=("ce", "rce"),
    ),
    "nce": LossInfo("active", True, "NCE = log p_y / Σ_j log p_j  (Eq. 2)", normalizes="ce"),
    "nfl": LossInfo(
        "active", True, "NFL = (1 - p_y)^γ log p_y / Σ_j (1 - p_j)^γ log p_j  (Eq. 5)", FOCAL,
        note="the reference code, with whose NFL the presets were tuned, detaches the focal factors: "
             "detach_focal = 1 does the same", normalizes="fl",
    ),
    "ngce": LossInfo(
        "active", True, "NGCE = (1 - p_y^q) / Σ_j (1 - p_j^q)  (Eq. 1 on GCE)", {"q": Q}, normalizes="gce"
    ),
    "nmae": LossInfo(
        "passive", True, "NMAE = (1 - p_y) / (K - 1)  (Eq. 3)",
        note="the reference code has an extra 1/2", normalizes="mae",
    ),
    "nrce": LossInfo(
        "passive", True, "NRCE = (1 - p_y) / (K - 1)  (Eq. 4)", {"A": RCE_A},
        note="the reference code multiplies by (K-1)/4 instead of normalizing; we normalize", normalizes="rce",
    ),
    "nnce": LossInfo(
        "passive", True, "NNCE = 1 - ℓ_y / Σ_k ℓ_k,  ℓ_k = A + log clamp(p_k, 1e-7)",
        source="Ye et al., NeurIPS 2023 (Active Negative Loss)",
    ),
    "agce": LossInfo(
        "passive", True, "AGCE = ((a + 1)^q - (a + p_y)^q) / q",
        {"a": ParamRule(6.0, **POSITIVE, **SHIFT), "q": POWER}, "Zhou et al., ICML 2021",
    ),
    "aul": LossInfo(
        "passive", True, "AUL = ((a - p_y)^q - (a - 1)^q) / q",
        {"a": ParamRule(6.3, low=1.0, low_open=True, **SHIFT), "q": POWER}, "Zhou et al., ICML 2021",
    ),
    "ael": LossInfo("passive", True, "AEL = exp(-p_y / a)", {"a": ParamRule(5.0, **POSITIVE, **SHIFT)}, "Zhou et al., ICML 2021"),
}

# How two terms may be combined into "first+second" = α·first + β·second. Both must be robust.
COMBINATIONS: dict[str, Combination] = {
    "apl": Combination(("active", "passive"), "Active Passive Loss (Eq. 6), e.g. nce+rce"),
    "aal": Combination(("active", "active"), "two robust active terms (the paper's ablation, e.g. nfl+nce)"),
    "ppl": Combination(("passive", "passive"), "two robust passive terms (the paper's ablation, e.g. mae+rce)"),
}

MODELS: dict[str, str] = {
    "cnn4": "the paper's 4-layer CNN (MNIST family), 422,090 parameters",
    "cnn8": "the paper's 8-layer CNN (CIFAR-10), 1,639,794 parameters",
    "resnet34": "CIFAR-style ResNet-34 (the paper's CIFAR-100 model)",
    "resnet50": "CIFAR-style ResNet-50 (the reference configs' CIFAR-100 model)",
    "imagenet-resnet50": "the standard ImageNet ResNet-50, from scratch",
}

NOISE_KINDS: dict[str, NoiseKind] = {
    "none": NoiseKind("clean labels", "no rate"),
    "symmetric": NoiseKind(
        "exactly rate·N labels, each to a uniformly drawn other class", "(K-1)/K",
        "at (K-1)/K a wrong label is as frequent as the true one",
    ),
    "asymmetric": NoiseKind(
        "the paper's per-data-set class maps at rate r", "1/2",
        "at 1/2 the flipped class outnumbers the true one", needs_class_map=True,
    ),
    "pairflip": NoiseKind(
        "class c → c+1 (mod K) at rate r", "1/2", "at 1/2 the flipped class outnumbers the true one"
    ),
    "transition": NoiseKind(
        "each label drawn from row y of a user-given K×K matrix", "no rate", needs_matrix=True
    ),
}

AUGMENTATIONS: dict[str, str] = {
    "none": "no augmentation",
    "crop-flip": "random crop with 4 pixels of zero padding, horizontal flip",
    "crop-flip-rotate": "crop-flip and a random rotation of up to 20°",
}

SCHEDULES: dict[str, str] = {
    "cosine": "cosine annealing from lr to lr_min, stepped per epoch",
    "constant": "lr throughout",
}

PRECISIONS: dict[str, str] = {"fp32": "full precision", "bf16": "bfloat16 autocast"}

# The paper's training recipe per data-set family (REFERENCE-NOTES.md, "Training recipe").
RECIPES: dict[str, dict] = {
    "mnist": {
        "model": "cnn4", "epochs": 50, "batch_size": 128, "eval_batch_size": 512,
        "lr": 0.01, "lr_min": 1e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2,
        "schedule": "cosine", "grad_clip": 5.0, "augment": "none",
    },
    "cifar10": {
        "model": "cnn8", "epochs": 120, "batch_size": 128, "eval_batch_size": 128,
        "lr": 0.01, "lr_min": 0.0, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
        "schedule": "cosine", "grad_clip": 5.0, "augment": "crop-flip",
    },
    "cifar100": {
        "model": "resnet34", "epochs": 200, "batch_size": 128, "eval_batch_size": 256,
        "lr": 0.1, "lr_min": 0.0, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-5,
        "schedule": "cosine", "grad_clip": 5.0, "augment": "crop-flip-rotate",
    },
}

# α, β and loss parameters per family and loss (reference configs). `asym` overrides for
# asymmetric noise. For a single term, α is its scale. Anything not listed uses α=1, β=1
# and the loss's default parameters.
LOSS_PRESETS: dict[str, dict[str, dict]] = {
    "mnist": {
        "sce": {"alpha": 0.01, "beta": 1.0},
        "gce": {"params": {"q": 0.7}},
        "fl": {"params": {"gamma": 0.5}},
        "nce": {"alpha": 10.0},
        "nfl": {"alpha": 1.0, "params": {"gamma": 0.5}},
        "ngce": {"alpha": 10.0, "params": {"q": 0.1}, "asym": {"alpha": 1.0}},
        "nce+mae": {"alpha": 1.0, "beta": 10.0},
        "nce+rce": {"alpha": 1.0, "beta": 10.0},
        "nfl+mae": {"alpha": 1.0, "beta": 10.0, "params": {"gamma": 0.5}},
        "nfl+rce": {"alpha": 1.0, "beta": 10.0, "params": {"gamma": 0.5}},
        "ngce+mae": {"alpha": 1.0, "beta": 10.0, "params": {"q": 0.1}},
        "ngce+rce": {"alpha": 1.0, "beta": 10.0, "params": {"q": 0.1}},
    },
    "cifar10": {
        "sce": {"alpha": 0.1, "beta": 1.0},
        "gce": {"params": {"q": 0.7}},
        "fl": {"params": {"gamma": 0.5}},
        "nce": {"alpha": 1.0},
        "nfl": {"alpha": 10.0, "params": {"gamma": 0.5}, "asym": {"alpha": 1.0}},
        "ngce": {"alpha": 1.0, "params": {"q": 0.1}},
        "nce+mae": {"alpha": 1.0, "beta": 1.0},
        "nce+rce": {"alpha": 1.0, "beta": 1.0},
        "nfl+mae": {"alpha": 1.0, "beta": 1.0, "params": {"gamma": 0.5}},
        "nfl+rce": {"alpha": 1.0, "beta": 1.0, "params": {"gamma": 0.5}},
        "ngce+mae": {"alpha": 1.0, "beta": 1.0, "params": {"q": 0.1}},
        "ngce+rce": {"alpha": 1.0, "beta": 1.0, "params": {"q": 0.1}},
        "nce+nnce": {"alpha": 5.0, "beta": 5.0, "l1": 5e-5, "weight_decay": 0.0},
        "nce+agce": {"alpha": 1.0, "beta": 4.0, "params": {"a": 6.0, "q": 1.5}},
    },
    "cifar100": {
        "sce": {"alpha": 6.0, "beta": 0.1},
        "gce": {"params": {"q": 0.7}},
        "fl": {"params": {"gamma": 0.5}},
        "nce": {"alpha": 1.0},
        "nfl": {"alpha": 1.0, "params": {"gamma": 0.5}},
        "ngce": {"alpha": 1.0, "params": {"q": 0.7}},
        "nce+mae": {"alpha": 10.0, "beta": 1.0},
        "nce+rce": {"alpha": 10.0, "beta": 0.1},
        "nfl+mae": {"alpha": 10.0, "beta": 1.0, "params": {"gamma": 0.5}},
        "nfl+rce": {"alpha": 10.0, "beta": 0.1, "params": {"gamma": 0.5}},
        "ngce+mae": {"alpha": 10.0, "beta": 1.0, "params": {"q": 0.7}},
        "ngce+rce": {"alpha": 10.0, "beta": 0.1, "params": {"q": 0.7}},
        "nce+nnce": {"alpha": 10.0, "beta": 1.0, "l1": 5e-7, "weight_decay": 0.0},
    },
}

# The paper's experiment grids (Tables 2 and 3, Section 5), for sweep presets.
PAPER_LOSSES = ["ce", "fl", "gce", "sce", "nce+mae", "nce+rce", "nfl+mae", "nfl+rce"]
PAPER_GRIDS: dict[str, dict] = {
    "table2": {"noise.type": ["symmetric"], "noise.rate": [0.0, 0.2, 0.4, 0.6, 0.8], "loss": PAPER_LOSSES},
    "table3": {"noise.type": ["asymmetric"], "noise.rate": [0.1, 0.2, 0.3, 0.4], "loss": PAPER_LOSSES},
    "alpha-beta": {"alpha": [0.1, 1.0, 10.0], "beta": [0.1, 1.0, 10.0, 100.0], "validation_split": [0.2]},
    # Choosing without clean labels: each candidate loss at the α/β its reference configs use for
    # MNIST, CIFAR-10 and CIFAR-100 (ce and gce: their preset), judged on a 20% noisy validation
    # split. "loss,alpha,beta" links the three fields: they vary together, one triple per cell;
    # null leaves a value to the loss's preset (a single term takes no beta).
    "select": {
        "loss,alpha,beta": [
            ["ce", None, None], ["gce", None, None],
            ["sce", 0.01, 1.0], ["sce", 0.1, 1.0], ["sce", 6.0, 0.1],
            *([loss, alpha, beta] for loss in ("nce+rce", "nfl+rce") for alpha, beta in ((1.0, 10.0), (1.0, 1.0), (10.0, 0.1))),
            ["nce+mae", 1.0, 10.0], ["nce+mae", 1.0, 1.0], ["nce+mae", 10.0, 1.0],
        ],
        "validation_split": [0.2],
    },
}
PAPER_GRID_BASE: dict[str, dict] = {"select": {"epochs": 10}}
"""What a preset fills into the base spec where the base is silent: `select` is a short budget
(a fifth of the MNIST recipe's 50 epochs); a base that sets epochs keeps its own."""

def robust_terms(role: Role) -> list[str]:
    """The robust single terms of a role: what a combination may use."""
    return sorted(n for n, i in LOSSES.items() if i.role == role and i.robust and i.terms is None)


def _combination(combination: Combination) -> str:
    first, second = combination.roles
    return (f"{first}+{second}: one of {', '.join(robust_terms(first))}, then a different one of "
            f"{', '.join(robust_terms(second))}: {combination.description}")


def _loss(info: LossInfo) -> dict:
    return {
        **vars(info),
        "params": {name: rule.default for name, rule in info.params.items()},
        "param_rules": {name: rule.rule(name) for name, rule in info.params.items()},
    }


def catalog() -> dict:
    """Everything a client may ask for, as JSON-ready data (GET /v1/catalog)."""
    return {
        "datasets": {name: vars(info) for name, info in DATASETS.items()},
        "losses": {name: _loss(info) for name, info in LOSSES.items()},
        "combinations": {name: _combination(c) for name, c in COMBINATIONS.items()},
        "models": MODELS,
        "noise": {name: vars(kind) for name, kind in NOISE_KINDS.items()},
        "augmentations": AUGMENTATIONS,
        "schedules": SCHEDULES,
        "precisions": PRECISIONS,
        "recipes": RECIPES,
        "presets": LOSS_PRESETS,
        "sweep_presets": PAPER_GRIDS,
        "sweep_preset_base": PAPER_GRID_BASE,
    }
