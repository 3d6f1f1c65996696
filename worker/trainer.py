"""The training loop: one resolved spec, one seed, the whole data set on the device.

The training images stay on the device as uint8. Every epoch draws one permutation and the
augmentation of every sample from a generator seeded by (seed, epoch), then crops, flips,
rotates and normalizes whole batches on the device: no DataLoader, no per-sample Python. As an
epoch's draws depend on (seed, epoch) alone, a run resumed after epoch k needs only the weights,
optimizer and scheduler state to end bit for bit where an uninterrupted run ends (on CPU).

Callbacks see the state at every step and epoch: they stream metrics, save checkpoints and ask
to stop, so the loop knows nothing of Redis, object stores or databases.

Figures of an epoch (DESIGN.md, "Metrics"):
  train_loss        mean loss of the epoch's training steps, as minimized (without the l1 term)
  train_acc         accuracy on the noisy training labels  \
  memorized         share of corrupted samples predicted as their noisy label  } an eval pass over
  true_label_acc_on_corrupted   ... predicted as their true label            / the unaugmented
                                                                               training set
  test_loss, test_acc           cross-entropy and accuracy on the clean test set
  val_loss, val_acc             the same on the held-out part of the noisy training set
  lr, epoch_seconds (training and evaluation), samples_per_second (training steps only)
The eval pass costs about a third of an epoch, but it scores the end-of-epoch model in eval mode
on clean images, like the test set, instead of a mixture of a whole epoch's models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LRScheduler

from shared.errors import Diverged, ResumeMismatch
from shared.spec import ResolvedSpec
from worker.losses import loss_for
from worker.models import build_model

PAD = 4  # zero padding of the random crop, as RandomCrop(32, padding=4)
MAX_ROTATION = 20.0  # degrees, as RandomRotation(20)

SCHEDULES = {
    "cosine": lambda opt, spec: CosineAnnealingLR(opt, T_max=spec.epochs, eta_min=spec.lr_min),
    "constant": lambda opt, spec: ConstantLR(opt, factor=1.0, total_iters=0),
}
CUBLAS_WORKSPACE = ":4096:8"
"""CUBLAS_WORKSPACE_CONFIG that makes cuBLAS deterministic (CUDA >= 10.2); read when the process
first creates a cuBLAS handle, so a job's process sets it before its first matrix multiply."""
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}  # the autocast dtype
AUGMENTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "crop-flip": ("crop", "flip"),
    "crop-flip-rotate": ("crop", "flip", "rotate"),
}



@dataclass
class PreparedData:
    """What the trainer needs: uint8 images [N, C, H, W] and int64 labels."""

    x_train: Tensor
    y_train: Tensor  # the labels trained on (noisy)
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    y_train_clean: Tensor | None = None  # when known: the memorisation figures
    x_val: Tensor | None = None  # held out from the noisy training set
    y_val: Tensor | None = None

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.x_train.shape[-2:])

    def to(self, device: torch.device | str) -> PreparedData:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **moved)


@dataclass
class TrainState:
    spec: ResolvedSpec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)
    best_test_accuracy: float | None = None
    # The training set's log-probabilities [n, K] under the final model, kept from the last epoch's
    # evaluation for per_sample_losses; None where end_epoch did not evaluate that epoch itself
    # (evaluate=False, a wide group's evaluation, a run resumed after its last epoch).
    train_log_probabilities: Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and containers: loads with torch.load(weights_only=True)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "best_test_accuracy": self.best_test_accuracy,
            "spec": self.spec.to_json(),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        check_resumable(self.spec, saved)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.epoch, self.step = saved["epoch"], saved["step"]
        self.history = list(saved["history"])
        self.best_test_accuracy = saved["best_test_accuracy"]


def check_resumable(spec: ResolvedSpec, saved: dict[str, Any]) -> None:
    """A resume checkpoint continues only the spec it was made for."""
    ours = spec.to_json()
    if saved["spec"] != ours:
        changed = sorted(k for k in ours.keys() | saved["spec"].keys() if ours.get(k) != saved["spec"].get(k))
        raise ResumeMismatch(f"the resume checkpoint was made for another spec (differs in: {', '.join(changed)})")


class Callback:
    """Hooks into the loop; override what you need.

    on_step runs every `log_every` optimizer steps (0: never), on_epoch_end after each epoch's
    evaluation, and should_stop before every step: True ends training, dropping the epoch under
    way, so the caller resumes from its last checkpoint. on_fold_epoch_end runs after each epoch
    of a cross-fitting model (worker/cross_fit.py), `fold` counted from 1; the job's own epochs are
    on_epoch_end's alone.
    """

    log_every: int = 0

    def on_step(self, state: TrainState, metrics: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def on_fold_epoch_end(self, fold: int, folds: int, state: TrainState, metrics: dict[str, Any]) -> None:
        pass


@dataclass
class TrainResult:
    state: TrainState
    stopped: bool  # a callback asked to stop

    @property
    def model(self) -> nn.Module:
        return self.state.model

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history

    @property
    def epochs_completed(self) -> int:
        return self.state.epoch

    @property
    def final_test_accuracy(self) -> float | None:
        """The last epoch's, as the paper reports."""
        return self.state.history[-1]["test_acc"] if self.state.history else None

    @property
    def best_test_accuracy(self) -> float | None:
        return self.state.best_test_accuracy

    @property
    def final_val_accuracy(self) -> float | None:
        """The last epoch's accuracy on the noisy validation split; None without one."""
        return self.state.history[-1].get("val_acc") if self.state.history else None

    @property
    def best_val_epoch(self) -> int | None:
        """The epoch of the highest noisy-validation accuracy, the earliest of equals (early
        stopping keeps a model until a later one does strictly better); None without a split."""
        scored = [(m["val_acc"], -m["epoch"]) for m in self.state.history if m.get("val_acc") is not None]
        return -max(scored)[1] if scored else None

    @property
    def test_accuracy_at_best_val(self) -> float | None:
        """The clean test accuracy of the epoch the noisy validation picks (best_val_epoch)."""
        epoch = self.best_val_epoch
        if epoch is None:
            return None
        return next(m["test_acc"] for m in self.state.history if m["epoch"] == epoch)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def train(
    spec: ResolvedSpec,
    data: PreparedData,
    callbacks: Sequence[Callback] = (),
    device: str | None = None,
    resume: dict[str, Any] | None = None,
    evaluate: bool = True,
) -> TrainResult:
    """Train from a resolved spec (shared.spec.resolve_spec), resuming from `resume` if given
    (a TrainState.state_dict(), e.g. checkpoints.read_resume(bytes)). Without `evaluate`, an
    epoch's figures are its training figures alone (no pass over the training, test and
    validation sets)."""
    device = torch.device(device or default_device())
    with determinism(spec.deterministic and device.type == "cuda"):
        return _train(spec, data, callbacks, device, resume, evaluate)


def _train(
    spec: ResolvedSpec, data: PreparedData, callbacks: Sequence[Callback], device: torch.device,
    resume: dict[str, Any] | None, evaluate: bool,
) -> TrainResult:
    data = data.to(device)
    state = new_state(spec, data, device)
    if resume is not None:
        state.load_state_dict(resume)
    loss_fn = loss_for(spec)
    for epoch in range(state.epoch + 1, spec.epochs + 1):
        started = time.perf_counter()
        metrics = train_epoch(state, data, loss_fn, callbacks, epoch)
        if metrics is None:
            return TrainResult(state, stopped=True)
        end_epoch(state, data, metrics, callbacks, time.perf_counter() - started, evaluate=evaluate)
    return TrainResult(state, stopped=False)


def end_epoch(
    state: TrainState, data: PreparedData, metrics: dict[str, Any], callbacks: Sequence[Callback], train_seconds: float,
    figures: dict[str, Any] | None = None, evaluate: bool = True,
) -> None:
    """Check, evaluate and record the epoch `metrics["epoch"]` just trained, then tell the callbacks.
    `figures`: the evaluation's, when made already; else the last epoch keeps the training set's
    log-probabilities (state.train_log_probabilities), which per_sample_losses reads. epoch_seconds
    is `train_seconds` (the training pass, and that evaluation) plus the evaluation's here. Without
    `evaluate`, the epoch's figures are its training figures alone and best_test_accuracy stays as
    it was."""
    started = time.perf_counter()
    epoch = metrics["epoch"]
    check_finite(state, metrics["train_loss"], epoch)
    if evaluate:
        if figures is None:
            if epoch == state.spec.epochs:  # the final model: its pass over the training set is kept
                state.train_log_probabilities = training_log_probabilities(state.model, data, state.spec)
            figures = evaluate_epoch(state.model, data, state.spec, state.train_log_probabilities)
        metrics.update(figures)
    state.scheduler.step()
    metrics["epoch_seconds"] = train_seconds + time.perf_counter() - started
    state.epoch = epoch
    state.history.append(metrics)
    if evaluate:
        state.best_test_accuracy = max(state.best_test_accuracy or 0.0, metrics["test_acc"])
    for callback in callbacks:
        callback.on_epoch_end(state, metrics)


@contextlib.contextmanager
def determinism(enabled: bool) -> Iterator[None]:
    """While enabled: cuDNN's deterministic kernels without autotuning, torch's deterministic
    algorithms (an op that has none raises, naming itself, rather than vary silently) and cuBLAS's
    fixed workspace; the previous settings come back after. For CUDA runs (spec.deterministic):
    on a CPU the same spec gives the same weights without it."""
    if not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    cudnn.deterministic, cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def check_finite(state: TrainState, train_loss: float, epoch: int) -> None:
    """Refuse to go on once the loss or any weight is NaN or infinite (the epoch is not recorded)."""
    weights_finite = all(torch.isfinite(p).all() for p in state.model.parameters())
    if math.isfinite(train_loss) and weights_finite:
        return
    spec = state.spec
    what = "weights" if math.isfinite(train_loss) else "loss"
    raise Diverged(
        f"training diverged in epoch {epoch}: the {what} became NaN or infinite. Lower lr (now {spec.lr:g}) "
        f"or momentum ({spec.momentum:g}), clip gradients (grad_clip, now {spec.grad_clip:g}; the paper uses 5), "
        f"or lower weight_decay ({spec.weight_decay:g}) or alpha/beta ({spec.alpha:g}/{spec.beta:g})"
    )


def new_state(spec: ResolvedSpec, data: PreparedData, device: torch.device) -> TrainState:
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, data.num_classes, data.in_channels, data.image_size)
    model = model.to(device, memory_format=torch.channels_last)  # ~1.25× on CPU for cnn4 (bench/README.md)
    for module in model.modules():
        if isinstance(module, nn.Flatten):
            module.register_forward_pre_hook(_channels_last_grad)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov,
        weight_decay=spec.weight_decay,
        foreach=True,  # CPU defaults to a Python loop over tensors; same values, ~3% faster for cnn4
    )
    return TrainState(spec, model, optimizer, SCHEDULES[spec.schedule](optimizer, spec))


def train_epoch(
    state: TrainState, data: PreparedData, loss_fn: nn.Module, callbacks: Sequence[Callback], epoch: int
) -> dict[str, Any] | None:
    """One pass over the training set; None when a callback asked to stop."""
    spec, model, optimizer = state.spec, state.model, state.optimizer
    device, n, batch_size = data.x_train.device, len(data.y_train), spec.batch_size
    params = [p for p in model.parameters() if p.requires_grad]
    lr = optimizer.param_groups[0]["lr"]
    loggers = [c for c in callbacks if c.log_every > 0]
    draws = {k: v.to(device) for k, v in epoch_draws(spec.seed, epoch, n, spec.augment).items()}
    bounds = batch_bounds(n, batch_size)
    mean, std = torch.tensor(data.mean, device=device), torch.tensor(data.std, device=device)
    loss_sum = torch.zeros((), device=device)
    model.train()
    started = time.perf_counter()
    for b, (start, end) in enumerate(bounds):
        if any(c.should_stop() for c in callbacks):
            return None
        x, y = batch_inputs(data, draws, start, end, mean, std)
        with autocast(device, spec.precision):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        with_l1(loss, spec, params).backward()
        optimizer_step(state, params)
        loss_sum += loss.detach() * len(y)
        log_step(state, loggers, epoch, b + 1, len(bounds), lr, loss)
    train_loss = loss_sum.item() / n  # waits for the device, so the time below is honest
    seconds = time.perf_counter() - started
    return {"epoch": epoch, "train_loss": train_loss, "lr": lr, "samples_per_second": n / seconds}


def batch_inputs(
    data: PreparedData, draws: dict[str, Tensor], start: int, end: int, mean: Tensor, std: Tensor
) -> tuple[Tensor, Tensor]:
    """Positions [start, end) of the epoch's order: standardized, augmented images and their labels."""
    index = draws["order"][start:end]
    batch = {k: v[start:end] for k, v in draws.items() if k != "order"}
    return standardize(augment(data.x_train[index], batch), mean, std), data.y_train[index]


def with_l1(loss: Tensor, spec: ResolvedSpec, params: Sequence[Tensor]) -> Tensor:
    """The objective minimized: the loss, plus the L1 penalty when the spec asks for one."""
    return loss + spec.l1 * sum(p.abs().sum() for p in params) if spec.l1 > 0 else loss


def optimizer_step(state: TrainState, params: Sequence[Tensor]) -> None:
    """Clip the gradients (when the spec asks) and take one optimizer step."""
    if state.spec.grad_clip > 0:
        nn.utils.clip_grad_norm_(params, state.spec.grad_clip, foreach=True)
    state.optimizer.step()
    state.step += 1


def log_step(
    state: TrainState, loggers: Sequence[Callback], epoch: int, batch: int, batches: int, lr: float, loss: Tensor
) -> None:
    """A `step` event for the callbacks whose log_every divides the step just taken."""
    due = [c for c in loggers if state.step % c.log_every == 0]
    if due:
        step = {"epoch": epoch, "step": state.step, "batch": batch, "batches": batches, "loss": loss.item(), "lr": lr}
        for callback in due:
            callback.on_step(state, step)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype or torch.float32, enabled=dtype is not None)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) of each batch, keeping the last partial batch as the paper's recipe does; a
    last batch of one sample joins the one before, as BatchNorm cannot train on a single sample."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(start, end) for start, end in zip(starts, [*starts[1:], n])]


class ChannelsLastGrad(torch.autograd.Function):
    """The identity, whose gradient comes back channels_last like its input.

    nn.Flatten hands a channels_last activation an NCHW gradient, and max-pool's backward with
    mixed memory formats copies both ways: about 3× slower on CPU. Values are unchanged."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def _channels_last_grad(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
    x = args[0]
    return (ChannelsLastGrad.apply(x),) if x.dim() == 4 and x.requires_grad else None


def evaluate_epoch(
    model: nn.Module, data: PreparedData, spec: ResolvedSpec, train_log_p: Tensor | None = None
) -> dict[str, Any]:
    """The epoch's evaluation figures. `train_log_p`: the training set's log-probabilities under
    `model` when made already, read instead of a pass over the training set (the same values)."""
    scores = {}
    for name, (x, y) in evaluation_sets(data).items():
        if name == "train" and train_log_p is not None:
            scores[name] = _scored(train_log_p, y)
        else:
            scores[name] = predict(model, x, y, data.mean, data.std, spec.eval_batch_size, spec.precision)[:2]
    return epoch_figures(data, scores)


def training_log_probabilities(model: nn.Module, data: PreparedData, spec: ResolvedSpec) -> Tensor:
    """Every class's log-probability for each training sample, in eval mode, as the evaluation
    scores them: per batch of eval_batch_size, at the spec's precision."""
    return log_probabilities(model, data.x_train, data.mean, data.std, spec.eval_batch_size, spec.precision)


def _scored(log_p: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample: the cross-entropy of its label and the predicted class, as predict gives them."""
    return F.nll_loss(log_p, labels.to(log_p.device), reduction="none"), log_p.max(1).indices


def evaluation_sets(data: PreparedData) -> dict[str, tuple[Tensor, Tensor]]:
    """What an epoch's evaluation scores: the test set, the training set, the validation set if any."""
    sets = {"test": (data.x_test, data.y_test), "train": (data.x_train, data.y_train)}
    if data.y_val is not None and len(data.y_val):
        sets["val"] = (data.x_val, data.y_val)
    return sets


def epoch_figures(data: PreparedData, scores: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Any]:
    """The epoch's evaluation figures from each evaluation set's per-sample losses and predictions."""
    test_losses, test_predicted = scores["test"]
    metrics = {"test_loss": test_losses.mean().item(), "test_acc": _share(test_predicted == data.y_test)}
    _, predicted = scores["train"]
    metrics["train_acc"] = _share(predicted == data.y_train)
    metrics["memorized"] = metrics["true_label_acc_on_corrupted"] = None
    if data.y_train_clean is not None:
        corrupted = data.y_train != data.y_train_clean
        if corrupted.any():
            metrics["memorized"] = _share((predicted == data.y_train)[corrupted])
            metrics["true_label_acc_on_corrupted"] = _share((predicted == data.y_train_clean)[corrupted])
    if "val" in scores:
        val_losses, val_predicted = scores["val"]
        metrics["val_loss"] = val_losses.mean().item()
        metrics["val_acc"] = _share(val_predicted == data.y_val)
    return metrics


def _share(hits: Tensor) -> float:
    return hits.float().mean().item()


def _log_probabilities(
    model: nn.Module, x: Tensor, mean: Sequence[float], std: Sequence[float], batch_size: int, precision: str
) -> Iterator[Tensor]:
    """Per batch of `x`, in eval mode: the log-softmax of the logits, fp32, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    mean, std = torch.as_tensor(mean, device=device), torch.as_tensor(std, device=device)
    for xb in x.split(batch_size):
        xb = standardize(xb.to(device), mean, std)
        with autocast(device, precision):
            logits = model(xb)
        yield logits.float().log_softmax(1)


@torch.inference_mode()
def predict(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    precision: str = "fp32",
) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample, in eval mode: cross-entropy of `labels`, predicted class, its probability."""
    losses, predicted, confidence = [], [], []
    for log_p, yb in zip(_log_probabilities(model, x, mean, std, batch_size, precision), labels.split(batch_size)):
        losses.append(F.nll_loss(log_p, yb.to(log_p.device), reduction="none"))
        top_log_p, top = log_p.max(1)
        predicted.append(top)
        confidence.append(top_log_p.exp())
    return torch.cat(losses), torch.cat(predicted), torch.cat(confidence)


@torch.inference_mode()
def log_probabilities(
    model: nn.Module,
    x: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    precision: str = "fp32",
) -> Tensor:
    """Per sample, in eval mode: the log-probability of every class, fp32 [n, K], on the model's
    device. exp() gives the probabilities; -expm1() gives 1 - p without losing p close to 1."""
    return torch.cat(list(_log_probabilities(model, x, mean, std, batch_size, precision)))


@dataclass(frozen=True)
class SamplePredictions:
    """A model's view of each training sample (numpy arrays, in the order of the samples)."""

    losses: np.ndarray  # cross-entropy of the (noisy) label
    predicted: np.ndarray  # the class of highest probability
    confidence: np.ndarray  # its probability
    probabilities: np.ndarray  # float32 [n, K]


def per_sample_losses(
    model: nn.Module, data: PreparedData, spec: ResolvedSpec, device: str | None = None,
    log_p: Tensor | None = None,
) -> SamplePredictions:
    """Cross-entropy of each training sample's (noisy) label under `model`, its predicted class
    and that class's probability, and every class's probability, from one pass, or from `log_p`
    when that pass was made already (TrainState.train_log_probabilities). Cross-entropy rather
    than the job's loss: the ranking is by p_y, comparable across jobs, and the same as that of
    any loss that falls as p_y rises."""
    if log_p is None:
        model = model.to(device or next(model.parameters()).device)
        log_p = training_log_probabilities(model, data, spec)
    labels = data.y_train.to(log_p.device)
    top_log_p, top = log_p.max(1)
    return SamplePredictions(
        losses=F.nll_loss(log_p, labels, reduction="none").cpu().numpy(),
        predicted=top.cpu().numpy(),
        confidence=top_log_p.exp().cpu().numpy(),
        probabilities=log_p.exp().cpu().numpy(),
    )


# ---------------------------------------------------------------------------------------
# Data on the device: draws, augmentation, normalization
# ---------------------------------------------------------------------------------------


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for (seed, epoch), so every device gets the same draws."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def epoch_draws(seed: int, epoch: int, n: int, kind: str) -> dict[str, Tensor]:
    """The epoch's sample order and, per position in it, the augmentation parameters."""
    g = epoch_generator(seed, epoch)
    ops = AUGMENTS[kind]
    draws = {"order": torch.randperm(n, generator=g)}
    if "crop" in ops:
        draws["shift"] = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g)
    if "flip" in ops:
        draws["flip"] = torch.rand(n, generator=g) < 0.5
    if "rotate" in ops:
        draws["angle"] = (torch.rand(n, generator=g) * 2 - 1) * MAX_ROTATION
    return draws


def augment(x: Tensor, draws: dict[str, Tensor]) -> Tensor:
    """A uint8 batch cropped, flipped and rotated as torchvision's RandomCrop(padding=4),
    RandomHorizontalFlip and RandomRotation(20) do, before normalization: the padding and the
    corners a rotation uncovers are black (pixel 0). Parameters per sample come from `draws`."""
    if "shift" in draws:
        x = random_crop(x, draws["shift"])
    if "flip" in draws:
        x = torch.where(draws["flip"][:, None, None, None], x.flip(3), x)
    if "angle" in draws:
        x = rotate(x.float(), draws["angle"])
    return x


def random_crop(x: Tensor, shift: Tensor) -> Tensor:
    """The H×W window at offset shift[i] = (dy, dx) of each image padded by PAD zeros."""
    n, c, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    rows = shift[:, 0, None] + torch.arange(h, device=x.device)  # [n, h]
    cols = shift[:, 1, None] + torch.arange(w, device=x.device)  # [n, w]
    i = torch.arange(n, device=x.device)[:, None, None, None]
    ch = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[i, ch, rows[:, None, :, None], cols[:, None, None, :]]


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image about its centre; nearest pixel, zeros outside, as RandomRotation."""
    angle = torch.deg2rad(degrees.float())
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def standardize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Pixels (uint8 or float in [0, 255]) to (x/255 - mean)/std, as ToTensor + Normalize.
    Pass mean and std as tensors on x's device to spare a copy per batch."""
    shape = (1, -1, 1, 1)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(shape)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(shape)
    x = x.div(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)
