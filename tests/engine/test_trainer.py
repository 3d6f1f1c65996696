"""The trainer on real Fashion-MNIST, a few hundred to a few thousand samples, on the CPU."""

import dataclasses
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared.errors import Diverged, ResumeMismatch
from shared.spec import JobSpec, ResolvedSpec, resolve_spec
from worker.checkpoints import read_resume, resume_checkpoint
from worker.datasets import SYSTEM_DATA_DIRS, load_dataset
from worker.noise import corrupt_labels
from worker.trainer import (
    PAD,
    Callback,
    PreparedData,
    SamplePredictions,
    TrainResult,
    TrainState,
    augment,
    batch_bounds,
    determinism,
    epoch_draws,
    standardize,
    per_sample_losses,
    predict,
    rotate,
    train,
)

TIMING = {"epoch_seconds", "samples_per_second"}


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    if not (SYSTEM_DATA_DIRS[0] / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("the Debian package dataset-fashion-mnist is not installed: run scripts/setup.sh")
    return load_dataset("fashion-mnist", tmp_path_factory.mktemp("data"))


def prepared(ds, n: int, n_test: int = 1000, noise: float = 0.0) -> PreparedData:
    clean = ds.y_train[:n]
    noisy, _ = corrupt_labels(clean, "symmetric", num_classes=10, rate=noise, seed=0)
    return PreparedData(
        ds.x_train[:n], noisy, ds.x_test[:n_test], ds.y_test[:n_test], 10, ds.mean, ds.std, y_train_clean=clean
    )


def spec_for(**fields) -> ResolvedSpec:
    return resolve_spec(JobSpec(dataset="fashion-mnist", **fields))


def weights(result) -> dict[str, torch.Tensor]:
    return result.model.state_dict()


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


class StopAt(Callback):
    """Asks to stop before optimizer step `step` + 1; keeps the resume checkpoint of every epoch."""

    def __init__(self, step: int):
        self.step, self.steps_seen, self.checkpoints = step, 0, {}

    log_every = 1

    def on_step(self, state, metrics):
        self.steps_seen = metrics["step"]

    def on_epoch_end(self, state, metrics):
        self.checkpoints[state.epoch] = resume_checkpoint(state)

    def should_stop(self):
        return self.steps_seen >= self.step


# Reproducibility and resume


def test_the_same_spec_repeats_bit_for_bit(fashion):
    spec = spec_for(loss="nce+rce", epochs=2, augment="crop-flip-rotate", l1=1e-5)
    data = prepared(fashion, 384, 256, noise=0.4)
    first, second = train(spec, data, device="cpu"), train(spec, data, device="cpu")
    assert_same_weights(weights(first), weights(second))
    assert without_timing(first.history) == without_timing(second.history)


class SeesDeterminism(Callback):
    """Records whether torch's deterministic algorithms were on during training."""

    def __init__(self) -> None:
        self.seen: set[bool] = set()

    def on_epoch_end(self, state, metrics):
        self.seen.add(torch.are_deterministic_algorithms_enabled())


def test_determinism_sets_the_cuda_settings_and_restores_them_after(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    before = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    with determinism(True):
        assert cudnn.deterministic and not cudnn.benchmark and torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled()) == before
    with determinism(False):
        assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_changes_nothing_on_a_cpu(fashion):
    data = prepared(fashion, 256, 256, noise=0.4)
    seen = SeesDeterminism()
    plain = train(spec_for(epochs=1, augment="crop-flip"), data, device="cpu")
    strict = train(spec_for(epochs=1, augment="crop-flip", deterministic=True), data, [seen], device="cpu")
    assert_same_weights(weights(plain), weights(strict))
    assert seen.seen == {False}, "a CPU run is reproducible without torch's deterministic mode"


@pytest.mark.parametrize("model", ["cnn4", "resnet34"])
def test_a_deterministic_cuda_run_repeats_bit_for_bit(fashion, model):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here: deterministic CUDA training did not run")
    spec = spec_for(model=model, epochs=2, batch_size=64, augment="crop-flip-rotate", deterministic=True)
    data = prepared(fashion, 512, 256, noise=0.4)
    seen = SeesDeterminism()
    first, second = train(spec, data, [seen], device="cuda"), train(spec, data, device="cuda")
    assert seen.seen == {True}
    assert_same_weights(weights(first), weights(second))
    assert without_timing(first.history) == without_timing(second.history)


def test_another_seed_gives_other_weights(fashion):
    data = prepared(fashion, 256, 256)
    a = train(spec_for(epochs=1, seed=0), data, device="cpu")
    b = train(spec_for(epochs=1, seed=1), data, device="cpu")
    assert not torch.equal(weights(a)["classifier.4.weight"], weights(b)["classifier.4.weight"])


def test_a_run_stopped_mid_epoch_and_resumed_ends_with_the_weights_of_an_uninterrupted_run(fashion):
    spec = spec_for(loss="gce", epochs=3, augment="crop-flip-rotate")
    data = prepared(fashion, 500, 256, noise=0.4)  # 4 batches per epoch, the last one partial
    whole = train(spec, data, device="cpu")

    stopper = StopAt(step=4 + 2)  # two steps into epoch 2
    stopped = train(spec, data, [stopper], device="cpu")
    assert stopped.stopped and stopped.epochs_completed == 1
    assert len(stopped.history) == 1

    resumed = train(spec, data, device="cpu", resume=read_resume(stopper.checkpoints[1]))
    assert not resumed.stopped and resumed.epochs_completed == 3
    assert_same_weights(weights(resumed), weights(whole))
    assert without_timing(resumed.history) == without_timing(whole.history)
    assert resumed.best_test_accuracy == whole.best_test_accuracy
    assert resumed.state.step == whole.state.step == 12


def test_resume_refuses_a_checkpoint_of_another_spec(fashion):
    data = prepared(fashion, 256, 256)
    keep = StopAt(step=10**9)
    train(spec_for(epochs=1), data, [keep], device="cpu")
    with pytest.raises(ResumeMismatch, match="lr"):
        train(spec_for(epochs=1, lr=0.05), data, device="cpu", resume=read_resume(keep.checkpoints[1]))


# Learning and metrics


def test_a_short_run_on_fashion_mnist_learns(fashion):
    data = prepared(fashion, 3000, 2000)
    result = train(spec_for(loss="ce", epochs=2), data, device="cpu")
    assert result.final_test_accuracy > 0.6  # chance is 0.1
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_every_epoch_reports_the_design_metrics(fashion):
    spec = spec_for(loss="ce", epochs=2, schedule="cosine", lr=0.02, lr_min=0.002)
    data = prepared(fashion, 512, 256, noise=0.6)
    data.x_val, data.y_val = fashion.x_train[-200:], fashion.y_train[-200:]
    seen = []

    class Record(Callback):
        def on_epoch_end(self, state, metrics):
            seen.append(dict(metrics))

    result = train(spec, data, [Record()], device="cpu")
    assert seen == result.history and [m["epoch"] for m in seen] == [1, 2]
    for m in seen:
        for key in ("train_acc", "memorized", "true_label_acc_on_corrupted", "test_acc", "val_acc"):
            assert 0.0 <= m[key] <= 1.0, key
        for key in ("train_loss", "test_loss", "val_loss", "epoch_seconds", "samples_per_second"):
            assert m[key] > 0 and math.isfinite(m[key]), key
    # cosine annealing per epoch from lr to lr_min over `epochs`: the lr of epoch 2 of 2 is the midpoint
    assert [m["lr"] for m in seen] == pytest.approx([0.02, 0.011])
    assert result.final_test_accuracy == seen[-1]["test_acc"]
    assert result.best_test_accuracy == max(m["test_acc"] for m in seen)


def test_memorisation_figures_count_only_the_corrupted_samples(fashion):
    data = prepared(fashion, 400, 256, noise=0.5)
    result = train(spec_for(loss="ce", epochs=1), data, device="cpu")
    _, predicted, _ = predict(result.model, data.x_train, data.y_train, data.mean, data.std)
    corrupted = data.y_train != data.y_train_clean
    m = result.history[-1]
    assert m["memorized"] == pytest.approx((predicted == data.y_train)[corrupted].float().mean().item())
    assert m["true_label_acc_on_corrupted"] == pytest.approx(
        (predicted == data.y_train_clean)[corrupted].float().mean().item()
    )
    assert m["train_acc"] == pytest.approx((predicted == data.y_train).float().mean().item())


def test_step_callbacks_come_every_log_every_steps(fashion):
    steps = []

    class Every3(Callback):
        log_every = 3

        def on_step(self, state, metrics):
            steps.append((metrics["epoch"], metrics["step"], metrics["batch"], metrics["batches"]))

    train(spec_for(epochs=2), prepared(fashion, 640, 128), [Every3()], device="cpu")  # 5 batches per epoch
    assert steps == [(1, 3, 3, 5), (2, 6, 1, 5), (2, 9, 4, 5)]


def test_bf16_precision_trains(fashion):
    result = train(spec_for(epochs=1, precision="bf16"), prepared(fashion, 256, 256), device="cpu")
    assert math.isfinite(result.history[-1]["train_loss"])


def test_per_sample_losses_are_the_cross_entropy_of_the_noisy_labels(fashion):
    spec = spec_for(epochs=1)
    data = prepared(fashion, 300, 128, noise=0.4)
    result = train(spec, data, device="cpu")
    scored = per_sample_losses(result.model, data, spec, "cpu")
    with torch.no_grad():
        logits = result.model.eval()(standardize(data.x_train, data.mean, data.std))
    expected = F.cross_entropy(logits, data.y_train, reduction="none").numpy()
    np.testing.assert_allclose(scored.losses, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scored.predicted, logits.argmax(1).numpy())
    np.testing.assert_allclose(scored.confidence, logits.softmax(1).max(1).values.numpy(), rtol=1e-5)
    assert scored.probabilities.dtype == np.float32 and scored.probabilities.shape == (300, 10)
    np.testing.assert_allclose(scored.probabilities, logits.softmax(1).numpy(), rtol=1e-5, atol=1e-7)


def test_per_sample_losses_from_the_last_epochs_pass_equal_a_pass_of_their_own(fashion):
    spec = spec_for(epochs=2)
    data = prepared(fashion, 300, 128, noise=0.4)
    result = train(spec, data, device="cpu")
    kept = result.state.train_log_probabilities
    assert kept is not None and kept.shape == (300, 10)
    reused, fresh = per_sample_losses(result.model, data, spec, log_p=kept), per_sample_losses(result.model, data, spec)
    for name in (f.name for f in dataclasses.fields(SamplePredictions)):
        np.testing.assert_array_equal(getattr(reused, name), getattr(fresh, name), err_msg=name)
    hits = torch.from_numpy(reused.predicted) == data.y_train
    assert result.history[-1]["train_acc"] == hits.float().mean().item(), "the epoch's figures read the same pass"


def test_training_without_evaluation_records_only_the_training_figures(fashion):
    result = train(spec_for(epochs=1), prepared(fashion, 256, 128), device="cpu", evaluate=False)
    assert set(result.history[0]) == {"epoch", "train_loss", "lr", "samples_per_second", "epoch_seconds"}
    assert result.best_test_accuracy is None and result.state.train_log_probabilities is None


# Augmentation on the device


MEAN, STD = (0.5,), (0.25,)


def white(n: int = 2, size: int = 8) -> torch.Tensor:
    return torch.full((n, 1, size, size), 255, dtype=torch.uint8)


def test_crop_pads_with_black_before_normalization():
    x = white()
    shifted = augment(x, {"shift": torch.tensor([[0, 0], [2 * PAD, 2 * PAD]])})
    out = standardize(shifted, MEAN, STD)
    black, full = (0 - MEAN[0]) / STD[0], (1 - MEAN[0]) / STD[0]
    # offset (0, 0): the top PAD rows and left PAD columns are padding
    assert torch.all(out[0, 0, :PAD, :] == black) and torch.all(out[0, 0, :, :PAD] == black)
    assert torch.all(out[0, 0, PAD:, PAD:] == full)
    # offset (2·PAD, 2·PAD): the bottom and right ones
    assert torch.all(out[1, 0, -PAD:, :] == black) and torch.all(out[1, 0, :, -PAD:] == black)
    assert torch.all(out[1, 0, :-PAD, :-PAD] == full)


def test_crop_takes_each_samples_own_window():
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    shift = torch.randint(0, 2 * PAD + 1, (5, 2))
    out = augment(x, {"shift": shift})
    padded = F.pad(x, (PAD,) * 4)
    for i, (dy, dx) in enumerate(shift.tolist()):
        assert torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])


def test_flip_mirrors_left_to_right_where_drawn():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5)
    out = augment(x, {"flip": torch.tensor([True, False])})
    assert torch.equal(out[0], x[0].flip(-1))
    assert torch.equal(out[1], x[1])


def test_rotation_turns_about_the_centre_and_fills_black():
    x = torch.randint(1, 256, (1, 1, 8, 8)).float()
    assert torch.equal(rotate(x, torch.tensor([0.0])), x)
    quarter = rotate(x, torch.tensor([90.0]))
    assert torch.equal(quarter, torch.rot90(x, 1, (2, 3))) or torch.equal(quarter, torch.rot90(x, -1, (2, 3)))
    tilted = rotate(x, torch.tensor([20.0]))
    assert tilted[0, 0, 0, 0] == 0 and tilted[0, 0, 4, 4] != 0  # a corner uncovered, the centre kept


def test_epoch_draws_depend_on_seed_and_epoch_only():
    a = epoch_draws(0, 3, 100, "crop-flip-rotate")
    b = epoch_draws(0, 3, 100, "crop-flip-rotate")
    for key in ("order", "shift", "flip", "angle"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["order"], epoch_draws(0, 4, 100, "none")["order"])
    assert not torch.equal(a["order"], epoch_draws(1, 3, 100, "none")["order"])
    assert sorted(a["order"].tolist()) == list(range(100))
    assert a["shift"].min() >= 0 and a["shift"].max() <= 2 * PAD
    assert a["angle"].abs().max() <= 20
    assert set(epoch_draws(0, 1, 10, "none")) == {"order"}


@pytest.mark.parametrize(("n", "batch_size", "sizes"), [(129, 128, [129]), (100, 33, [33, 33, 34]), (64, 32, [32, 32])])
def test_a_last_batch_of_one_sample_joins_the_one_before(n, batch_size, sizes):
    assert [end - start for start, end in batch_bounds(n, batch_size)] == sizes


def test_training_whose_last_batch_would_hold_one_sample_runs(fashion):
    """cnn4's BatchNorm1d cannot train on a batch of one: 100 samples in batches of 33."""
    seen = []

    class Batches(Callback):
        log_every = 1

        def on_step(self, state, metrics):
            seen.append(metrics["batches"])

    result = train(spec_for(epochs=1, batch_size=33), prepared(fashion, 100, n_test=100), [Batches()], device="cpu")
    assert result.epochs_completed == 1 and seen == [3, 3, 3]


def test_a_run_whose_loss_becomes_nan_fails_as_diverged_saying_what_to_change(fashion):
    spec = spec_for(epochs=2, lr=10.0, momentum=0.999, weight_decay=1.0, grad_clip=0.0, batch_size=4,
                    schedule="constant", train_size=100)
    epochs = []

    class Epochs(Callback):
        def on_epoch_end(self, state, metrics):
            epochs.append(metrics["epoch"])

    with pytest.raises(Diverged) as diverged:
        train(spec, prepared(fashion, 100, n_test=100), [Epochs()], device="cpu")
    assert diverged.value.code == "diverged" and epochs == []  # a non-finite epoch is never reported
    assert "epoch 1" in diverged.value.message and "Lower lr (now 10)" in diverged.value.message


def test_weights_that_become_infinite_fail_as_diverged(fashion):
    class Poison(Callback):
        log_every = 1

        def on_step(self, state, metrics):
            next(state.model.parameters()).data.fill_(float("inf"))

    with pytest.raises(Diverged, match="the weights became NaN or infinite"):
        train(spec_for(epochs=1, train_size=100), prepared(fashion, 100, n_test=100), [Poison()], device="cpu")


# Choosing by the noisy validation split


def result_with(history: list[dict]) -> TrainResult:
    return TrainResult(TrainState(spec_for(), None, None, None, epoch=len(history), history=history), stopped=False)


def test_validation_picks_the_epoch_of_highest_val_acc_the_earliest_of_equals():
    history = [{"epoch": e, "val_acc": v, "test_acc": t}
               for e, v, t in [(1, 0.5, 0.61), (2, 0.7, 0.72), (3, 0.6, 0.80), (4, 0.7, 0.75), (5, 0.65, 0.9)]]
    result = result_with(history)
    assert result.final_val_accuracy == 0.65
    assert result.best_val_epoch == 2, "epoch 4 ties epoch 2: the earlier stays"
    assert result.test_accuracy_at_best_val == 0.72
    assert result.best_test_accuracy is None and result.final_test_accuracy == 0.9


def test_without_a_validation_split_the_validation_figures_are_none():
    result = result_with([{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.6}])
    assert (result.final_val_accuracy, result.best_val_epoch, result.test_accuracy_at_best_val) == (None, None, None)
    assert result_with([]).best_val_epoch is None
