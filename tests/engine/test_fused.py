"""Runs trained together (worker/fused.py) against the same runs trained alone.

On CPU, run by run (the CPU default), each run equals the run alone bit for bit: weights,
batch-norm statistics, optimizer state, every epoch's figures and artifacts. The wide model
(grouped convolutions, the CUDA default) agrees within a stated tolerance. The CUDA tests are
in test_fused_cuda.py.
"""

import dataclasses
import io
import json

import pytest
import torch

from shared.errors import Diverged
from shared.fusion import FUSED_MODELS, fusable, mismatch
from shared.spec import JobSpec, ResolvedSpec, resolve_spec
from worker.checkpoints import read_resume, resume_checkpoint
from worker.datasets import SYSTEM_DATA_DIRS, load_dataset
from worker.fused import WideNet, train_fused
from worker.models import build_model
from worker.runner import make_labels, prepare_data, run_job, run_jobs_fused
from worker.sinks import LocalSink
from worker.trainer import Callback, TrainResult, standardize, train

TIMING = {"epoch_seconds", "samples_per_second"}
# Wide vs alone, after 2 epochs of 400 samples: the largest weight difference. Summed in another
# order, a run drifts: with torch 2.14.1 on 2 threads the wide CE run is 1.6e-2 from the run alone,
# as far as the run alone on 1 thread is from itself on 2 (bench/README.md, "Which fused form").
WIDE_WEIGHTS_ATOL = 3e-2
WIDE_ACCURACY_SAMPLES = 2  # ... and the most test samples on which the accuracies may differ


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    if not (SYSTEM_DATA_DIRS[0] / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("the Debian package dataset-fashion-mnist is not installed: run scripts/setup.sh")
    ds = load_dataset("fashion-mnist", tmp_path_factory.mktemp("data"))
    return dataclasses.replace(ds, x_test=ds.x_test[:500], y_test=ds.y_test[:500])


def spec_for(**fields) -> ResolvedSpec:
    return resolve_spec(JobSpec(**{"dataset": "fashion-mnist", "epochs": 2, "train_size": 400, **fields}))


# Three runs that differ in loss, α/β, seed, noise, lr and clipping (grad_clip 0.5 clips every step).
CELLS = [
    {"loss": "ce", "seed": 0},
    {"loss": "nce+rce", "alpha": 2.0, "beta": 5.0, "seed": 1, "noise": {"type": "symmetric", "rate": 0.4},
     "grad_clip": 0.5},
    {"loss": "gce", "seed": 2, "noise": {"type": "asymmetric", "rate": 0.3}, "lr": 0.05, "l1": 1e-5},
]


@pytest.fixture(scope="module")
def runs(fashion):
    specs = [spec_for(**cell) for cell in CELLS]
    datas = [prepare_data(fashion, make_labels(spec, fashion)) for spec in specs]
    alone = [train(spec, data, device="cpu") for spec, data in zip(specs, datas)]
    return specs, datas, alone


def assert_equal_runs(a: TrainResult, b: TrainResult) -> None:
    """Bit for bit: weights and batch-norm statistics, optimizer state, steps, every figure."""
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    oa, ob = a.state.optimizer.state_dict()["state"], b.state.optimizer.state_dict()["state"]
    assert all(torch.equal(oa[k]["momentum_buffer"], ob[k]["momentum_buffer"]) for k in oa)
    assert a.state.step == b.state.step and a.epochs_completed == b.epochs_completed
    assert without_timing(a.history) == without_timing(b.history)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


def largest_weight_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    wa, wb = a.state_dict(), b.state_dict()
    return max((wa[k].float() - wb[k].float().to(wa[k].device)).abs().max().item() for k in wa)


# Equality with the runs alone


def test_runs_trained_together_run_by_run_equal_each_run_alone_bit_for_bit(runs):
    specs, datas, alone = runs
    together = train_fused(specs, datas, device="cpu", wide=False)
    for a, b in zip(alone, together):
        assert isinstance(b, TrainResult) and not b.stopped
        assert_equal_runs(a, b)
        assert torch.equal(a.state.train_log_probabilities, b.state.train_log_probabilities)


def test_the_wide_model_agrees_with_each_run_alone_within_the_stated_tolerance(runs):
    specs, datas, alone = runs
    together = train_fused(specs, datas, device="cpu", wide=True)
    n_test = len(datas[0].y_test)
    for a, b in zip(alone, together):
        assert b.state.step == a.state.step and b.epochs_completed == 2
        assert largest_weight_difference(a.model, b.model) <= WIDE_WEIGHTS_ATOL
        for ma, mb in zip(a.history, b.history):
            assert abs(ma["test_acc"] - mb["test_acc"]) * n_test <= WIDE_ACCURACY_SAMPLES + 1e-6
        assert torch.equal(a.model.features[1].num_batches_tracked, b.model.features[1].num_batches_tracked)
        assert b.state.train_log_probabilities is None, "per_sample_losses scores with the run's own model"


class StopAtStep(Callback):
    log_every = 1

    def __init__(self, step: int):
        self.step, self.seen = step, 0

    def on_step(self, state, metrics):
        self.seen = metrics["step"]

    def should_stop(self):
        return self.seen >= self.step


class Poison(Callback):
    """Makes a weight infinite at one step: the run diverges at the end of that epoch."""

    log_every = 1

    def __init__(self, step: int):
        self.step = step

    def on_step(self, state, metrics):
        if metrics["step"] == self.step:
            next(state.model.parameters()).data.fill_(float("inf"))


@pytest.mark.parametrize("wide", [False, True], ids=["run-by-run", "wide"])
def test_a_run_that_stops_or_diverges_leaves_the_group_and_the_others_end_as_alone(runs, wide):
    specs, datas, alone = runs
    stopped, diverged, kept = train_fused(specs, datas, [[StopAtStep(3)], [Poison(2)], []], device="cpu", wide=wide)
    assert stopped.stopped and stopped.state.step == 3 and stopped.epochs_completed == 0
    stopped_alone = train(specs[0], datas[0], [StopAtStep(3)], device="cpu")
    assert largest_weight_difference(stopped_alone.model, stopped.model) <= (WIDE_WEIGHTS_ATOL if wide else 0.0)
    assert isinstance(diverged, Diverged) and "epoch 1" in diverged.message
    if wide:
        assert largest_weight_difference(alone[2].model, kept.model) <= WIDE_WEIGHTS_ATOL
    else:
        assert_equal_runs(alone[2], kept)


def test_runs_resumed_at_different_epochs_train_together_to_the_uninterrupted_weights(runs):
    specs, datas, alone = runs

    class KeepEpoch1(Callback):
        def on_epoch_end(self, state, metrics):
            if state.epoch == 1:
                self.checkpoint = resume_checkpoint(state)

    keep = KeepEpoch1()
    train(specs[1], datas[1], [keep], device="cpu")
    fresh, resumed = train_fused(specs[:2], datas[:2], device="cpu", resumes=[None, read_resume(keep.checkpoint)])
    assert_equal_runs(alone[0], fresh)
    assert_equal_runs(alone[1], resumed)


def test_without_evaluation_runs_trained_together_equal_each_run_alone_without_it(runs):
    """The path cross-fitting's models take (worker.cross_fit): training figures only."""
    specs, datas, _ = runs
    alone = [train(spec, data, device="cpu", evaluate=False) for spec, data in zip(specs[:2], datas[:2])]
    for wide in (False, True):
        together = train_fused(specs[:2], datas[:2], device="cpu", wide=wide, evaluate=False)
        for a, b in zip(alone, together):
            assert b.best_test_accuracy is None and b.final_val_accuracy is None
            assert [set(m) for m in b.history] == [{"epoch", "train_loss", "lr", "samples_per_second",
                                                    "epoch_seconds"}] * 2
            if not wide:
                assert_equal_runs(a, b)


def test_train_fused_refuses_runs_of_another_shape(runs):
    specs, datas, _ = runs
    with pytest.raises(ValueError, match="run 1 cannot train with run 0: batch_size differs"):
        train_fused([specs[0], spec_for(batch_size=64)], datas[:2], device="cpu")


# Artifacts


def test_a_run_trained_together_writes_the_artifacts_of_the_run_alone(fashion, tmp_path):
    specs = [spec_for(**CELLS[0], validation_split=0.2), spec_for(**CELLS[1], validation_split=0.2)]
    alone = [LocalSink(tmp_path / f"alone{i}") for i in range(2)]
    together = [LocalSink(tmp_path / f"together{i}") for i in range(2)]
    for spec, sink in zip(specs, alone):
        run_job(spec, sink, None, device="cpu", dataset=fashion)
    results = run_jobs_fused(specs, together, None, device="cpu", dataset=fashion)
    for a, b, result in zip(alone, together, results):
        assert set(a.list()) == set(b.list())
        ra, rb = json.loads(a.get("result.json")), json.loads(b.get("result.json"))
        assert rb == json.loads(json.dumps(result)) and rb["timings"]["fused_runs"] == 2
        assert {k: v for k, v in ra.items() if k not in ("timings", "history")} == \
            {k: v for k, v in rb.items() if k not in ("timings", "history")}
        assert without_timing(ra["history"]) == without_timing(rb["history"])
        assert ra["final_test_accuracy"] == rb["final_test_accuracy"] and ra["status"] == "succeeded"
        assert {"label_report.json", "label_heatmap.png", "label_probabilities.npz"} <= set(b.list())
        assert ra["label_quality"] == rb["label_quality"] and ra["final_val_accuracy"] is not None
        for name in ("noisy_labels.npz", "suspected_mislabels.csv", "label_report.json", "label_probabilities.npz"):
            assert a.get(name) == b.get(name), name
        events = [[{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in s.get("metrics.jsonl").splitlines()]
                  for s in (a, b)]
        assert events[0] == events[1]
        wa, wb = (torch.load(io.BytesIO(s.get("checkpoint.pt")), weights_only=True)["model"] for s in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_run_whose_sink_holds_another_specs_resume_point_fails_alone(fashion, tmp_path):
    specs = [spec_for(loss="ce", epochs=1), spec_for(loss="gce", epochs=1, seed=3)]
    other = LocalSink(tmp_path / "other")
    run_job(spec_for(loss="mae", epochs=1), other, None, device="cpu", dataset=fashion)
    results = run_jobs_fused(specs, [LocalSink(tmp_path / "fresh"), other], None, device="cpu", dataset=fashion)
    assert results[0]["status"] == "succeeded" and results[0]["timings"]["fused_runs"] == 1
    assert type(results[1]).__name__ == "ResumeMismatch"


# Which runs fuse


def test_fusable_groups_runs_of_one_shape_and_says_why_others_are_apart():
    specs = [
        spec_for(loss="ce", seed=0),
        spec_for(loss="nce+rce", seed=1, lr=0.05, grad_clip=1.0, epochs=3, noise={"type": "symmetric", "rate": 0.4}),
        spec_for(batch_size=64),
        spec_for(loss="gce", validation_split=0.1, train_size=440),  # 396 trained on ...
        spec_for(loss="gce", seed=5, validation_split=0.01),  # ... and 396 here
        resolve_spec(JobSpec(dataset="mnist", train_size=400)),
    ]
    groups = fusable(specs, max_runs=8)
    assert [g.members for g in groups] == [(0, 1), (2,), (3, 4), (5,)]
    assert "trains alone" in groups[1].reason and "batch_size differs (64 and 128)" in groups[1].reason
    assert "dataset differs" in groups[3].reason
    assert mismatch(specs[0], specs[3]) == "training_samples differs (400 and 396)"
    assert [g.members for g in fusable(specs[:2] * 2, max_runs=3)] == [(0, 1, 2), (3,)]
    assert fusable(specs[:2] * 2, max_runs=3)[0].reason == "at most 3 runs train together"


def test_a_run_that_cross_fits_trains_alone_and_deterministic_runs_train_with_their_kind():
    folds = spec_for(cross_fit_folds=3)
    (alone, rest) = fusable([folds, spec_for(), spec_for(seed=1)], max_runs=4)
    assert alone.members == (0,) and "cross_fit_folds is 3" in alone.reason and rest.members == (1, 2)
    assert mismatch(spec_for(), folds) == alone.reason
    assert mismatch(spec_for(), spec_for(deterministic=True)) == "deterministic differs (False and True)"
    assert mismatch(spec_for(deterministic=True), spec_for(deterministic=True, seed=1)) is None


def test_a_network_without_a_wide_form_trains_alone():
    spec = spec_for().model_copy(update={"model": "vit"})  # a network registered later, without one
    (group,) = fusable([spec, spec_for()], max_runs=4)[:1]
    assert group.members == (0,) and "model vit has no wide form" in group.reason
    assert mismatch(spec_for(), spec) == group.reason


@pytest.mark.parametrize("name", sorted(FUSED_MODELS))
def test_every_network_named_fusable_has_a_wide_form_that_computes_each_runs_function(name):
    """Forward and backward of the wide model against each run's own, in training mode."""
    channels, size, classes = (1, 28, 10) if name == "cnn4" else (3, 32, 100)  # imagenet-resnet50 too: 32 px
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(build_model(name, classes, channels, size).to(memory_format=torch.channels_last).train())
    g = torch.Generator().manual_seed(0)
    xs = [standardize(torch.randint(0, 256, (4, channels, size, size), dtype=torch.uint8, generator=g), (0.5,) * channels,
                      (0.25,) * channels) for _ in models]
    wide_out = WideNet(models)(xs)
    wide_grads = torch.autograd.grad(sum(z.square().sum() for z in wide_out), [p for m in models for p in m.parameters()])
    alone_out = [m(x) for m, x in zip(models, xs)]
    alone_grads = torch.autograd.grad(sum(z.square().sum() for z in alone_out), [p for m in models for p in m.parameters()])
    for a, b in zip(alone_out, wide_out):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    scale = max(g.abs().max().item() for g in alone_grads)  # float rounding, against the largest gradient
    for a, b in zip(alone_grads, wide_grads):
        torch.testing.assert_close(b, a, rtol=1e-2, atol=1e-4 * scale)
