"""Runs trained together on a GPU (worker/fused.py) against the same runs trained alone there.

cuDNN picks its own algorithms (and TF32) for grouped and ungrouped convolutions alike, so on
CUDA a run trained together agrees with the run alone within a tolerance: after 2 epochs of
1000 CIFAR-10-shaped samples, every weight within CUDA_WEIGHTS_ATOL and every epoch's test
accuracy within CUDA_ACCURACY_SHARE. The module imports only the engine, so that the lent GPU
machine (no database, queue or object-store clients) runs it: bench/gpu_check.sh does. Without
CUDA it says so in one line.
"""

import math

import pytest
import torch

from shared.spec import JobSpec, resolve_spec
from worker.fused import train_fused
from worker.trainer import Callback, PreparedData, TrainResult, train

CUDA_WEIGHTS_ATOL = 5e-2
CUDA_ACCURACY_SHARE = 0.02
NO_CUDA = "CUDA tests did not run: no CUDA device here (bench/gpu_check.sh runs them on a GPU)"


def synthetic(n: int, n_test: int, seed: int) -> PreparedData:
    """Random images of CIFAR-10's shape with random labels: each run's own, drawn by its seed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n + n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n + n_test,), generator=g)
    return PreparedData(x[:n], y[:n], x[n:], y[n:], 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


def largest_weight_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    wa, wb = a.state_dict(), b.state_dict()
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def test_cuda_runs_trained_together_agree_with_each_run_alone_wide_or_not_train_in_bf16_and_deterministically():
    """One test, so that a machine without CUDA says in one line that these did not run."""
    if not torch.cuda.is_available():
        pytest.skip(NO_CUDA)
    specs = [resolve_spec(JobSpec(dataset="cifar10", epochs=2, train_size=1000, loss=loss, seed=seed))
             for loss, seed in (("ce", 0), ("nce+rce", 1), ("gce", 2))]
    datas = [synthetic(1000, 500, seed) for seed in range(3)]
    alone = [train(spec, data, device="cuda") for spec, data in zip(specs, datas)]
    for wide in (False, True):
        together = train_fused(specs, datas, device="cuda", wide=wide)
        for a, b in zip(alone, together):
            assert isinstance(b, TrainResult) and b.state.step == a.state.step, (wide, b)
            assert largest_weight_difference(a.model, b.model) <= CUDA_WEIGHTS_ATOL, wide
            for ma, mb in zip(a.history, b.history):
                assert abs(ma["test_acc"] - mb["test_acc"]) <= CUDA_ACCURACY_SHARE, wide
    bf16 = [spec.model_copy(update={"precision": "bf16"}) for spec in specs]
    together = train_fused(bf16, datas, device="cuda")
    assert all(isinstance(r, TrainResult) and math.isfinite(r.history[-1]["train_loss"]) for r in together)
    check_deterministic_runs_trained_together()


class SeesDeterminism(Callback):
    """Whether torch's deterministic algorithms were on at each epoch's end."""

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, state, metrics):
        self.seen.append(torch.are_deterministic_algorithms_enabled())


def check_deterministic_runs_trained_together() -> None:
    """Deterministic runs train together under worker.trainer.determinism, to the same weights twice."""
    specs = [resolve_spec(JobSpec(dataset="cifar10", epochs=1, train_size=500, loss=loss, seed=seed,
                                  deterministic=True)) for loss, seed in (("ce", 0), ("gce", 1))]
    datas = [synthetic(500, 200, seed) for seed in range(2)]
    watch = [SeesDeterminism(), SeesDeterminism()]
    first = train_fused(specs, datas, [[w] for w in watch], device="cuda")
    second = train_fused(specs, datas, device="cuda")
    assert [w.seen for w in watch] == [[True], [True]] and not torch.are_deterministic_algorithms_enabled()
    for a, b in zip(first, second):
        assert isinstance(a, TrainResult) and isinstance(b, TrainResult), (a, b)
        assert largest_weight_difference(a.model, b.model) == 0.0
