"""Several runs of one shape trained together in one process, each run still its own.

Runs that share a data set, a network, a batch size, a training-set size, augmentation and
precision (shared.fusion) take their optimizer steps together. Everything else stays the run's:

    run r:  new_state(spec_r): its model, optimizer, scheduler (the initialisation it gets alone)
            epoch_draws(seed_r, epoch): its own order and augmentation of its own samples/labels
            its loss, l1, gradient clipping and optimizer step on its own parameters
            its evaluation, metrics, callbacks, checkpoints, stop and divergence

Each step sums the runs' losses and runs one backward pass: their parameters are disjoint, so
each run gets exactly its own gradient, in its own parameters, which its own optimizer steps.
The forward pass has two forms (`wide`):

- wide (the CUDA default), as HFTA does (Wang et al., MLSys 2021): the N runs' convolutions
  become one convolution with groups=N over their channels side by side ([B, N·C, H, W]), their
  batch norms one over N·C channels, and each run's classifier head reads its own channels; the
  epoch's evaluation scores the runs side by side too. One kernel does the work of N small ones,
  which a GPU needs to be busy. The wide model holds no weights: each step concatenates the
  runs' parameters (a copy of a few MB). The grouped
  kernels round differently from the ungrouped ones a run alone uses (on CPU, oneDNN's grouped
  weight gradient sums in another order, and a 1-channel input takes another kernel), so a
  wide run agrees with the run alone within float tolerance, not bit for bit.
- run by run (the CPU default): each run's own model on its own batch. Bit for bit the run
  alone; on a CPU, whose cores one run keeps busy, the wide kernels are no faster
  (bench/README.md, where vmap is measured too), and the group still shares one process.

A run that stops (its callbacks ask), diverges or fails in a callback leaves the group; the
others go on. Runs may start at different epochs (resumed) and end at different epochs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from shared.fusion import check_fusable
from shared.spec import ResolvedSpec
from worker.losses import loss_for
from worker.models import GlobalAvgPool, PaperCNN
from worker.trainer import (
    Callback,
    PreparedData,
    TrainResult,
    TrainState,
    autocast,
    batch_bounds,
    batch_inputs,
    check_finite,
    default_device,
    determinism,
    end_epoch,
    epoch_draws,
    epoch_figures,
    evaluation_sets,
    log_step,
    new_state,
    optimizer_step,
    standardize,
    with_l1,
)

Fuser = Callable[[list[nn.Module]], nn.Module]
FUSERS: dict[type[nn.Module], Fuser] = {}
"""Module type -> builds the wide module of N runs' modules of that type."""

STATELESS = (nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, GlobalAvgPool, nn.Identity)
"""Act on each channel alone, with no parameters: the wide model uses run 0's module."""


def register_fuser(*kinds: type[nn.Module]) -> Callable[[Fuser], Fuser]:
    def register(fuser: Fuser) -> Fuser:
        for kind in kinds:
            FUSERS[kind] = fuser
        return fuser

    return register


def fuse(modules: Sequence[nn.Module]) -> nn.Module:
    """The wide module of `modules` (one per run, the same architecture): inputs and outputs
    carry the runs' channels side by side, except a network's, whose output is the list of the
    runs' logits."""
    kind = type(modules[0])
    if any(type(m) is not kind for m in modules):
        raise ValueError(f"cannot fuse different modules: {sorted({type(m).__name__ for m in modules})}")
    if isinstance(modules[0], STATELESS):
        return modules[0]
    if kind not in FUSERS:
        raise ValueError(f"{kind.__name__} has no fused form; register one with worker.fused.register_fuser")
    return FUSERS[kind](list(modules))


@register_fuser(nn.Sequential)
def _fuse_sequential(seqs: list[nn.Module]) -> nn.Module:
    return nn.Sequential(*(fuse([s[i] for s in seqs]) for i in range(len(seqs[0]))))


class GroupedConv2d(nn.Module):
    """N runs' Conv2d as one convolution with groups=N, reading the runs' own parameters."""

    def __init__(self, convs: list[nn.Conv2d]):
        super().__init__()
        first = convs[0]
        if first.groups != 1 or first.padding_mode != "zeros":
            raise ValueError("only ungrouped, zero-padded convolutions fuse")
        self.convs = convs  # not submodules: the runs own them

    def forward(self, x: Tensor) -> Tensor:
        first = self.convs[0]
        weight = torch.cat([c.weight for c in self.convs])
        bias = torch.cat([c.bias for c in self.convs]) if first.bias is not None else None
        return F.conv2d(x, weight, bias, first.stride, first.padding, first.dilation, len(self.convs))


@register_fuser(nn.Conv2d)
def _fuse_conv(convs: list[nn.Module]) -> nn.Module:
    return GroupedConv2d(convs)


class WideBatchNorm(nn.Module):
    """N runs' BatchNorm as one over their N·C channels (each channel's statistics are its own).

    The running statistics live here while the group trains, and go back to the runs' own
    modules on `sync` (before evaluation, checkpoints, or the group changing)."""

    def __init__(self, norms: list[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        first = norms[0]
        if first.momentum is None or not first.track_running_stats or not first.affine:
            raise ValueError("only affine batch norms with running statistics and a momentum fuse")
        self.norms = norms
        self.momentum, self.eps = first.momentum, first.eps
        self.register_buffer("running_mean", torch.cat([m.running_mean for m in norms]))
        self.register_buffer("running_var", torch.cat([m.running_var for m in norms]))
        self.steps = 0  # training forwards since the last sync

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.steps += 1
        weight = torch.cat([m.weight for m in self.norms])
        bias = torch.cat([m.bias for m in self.norms])
        return F.batch_norm(x, self.running_mean, self.running_var, weight, bias, self.training, self.momentum,
                            self.eps)

    @torch.no_grad()
    def sync(self) -> None:
        for norm, mean, var in zip(self.norms, self.running_mean.chunk(len(self.norms)),
                                   self.running_var.chunk(len(self.norms))):
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.num_batches_tracked.add_(self.steps)
        self.steps = 0


@register_fuser(nn.BatchNorm2d)
def _fuse_batch_norm(norms: list[nn.Module]) -> nn.Module:
    return WideBatchNorm(norms)


class Heads(nn.Module):
    """The end of a wide network: run r's own `heads[r]` on its channels r·C … (r+1)·C."""

    def __init__(self, heads: list[nn.Module]):
        super().__init__()
        self.heads = heads

    def forward(self, x: Tensor) -> list[Tensor]:
        return [head(part) for head, part in zip(self.heads, x.chunk(len(self.heads), 1))]


@register_fuser(PaperCNN)
def _fuse_paper_cnn(models: list[nn.Module]) -> nn.Module:
    return nn.Sequential(fuse([m.features for m in models]), Heads([m.classifier for m in models]))


class WideResidual(nn.Module):
    """N runs' torchvision BasicBlock or Bottleneck: the same layers, wide."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        names = ["conv1", "bn1", "conv2", "bn2"] + (["conv3", "bn3"] if isinstance(blocks[0], Bottleneck) else [])
        self.body = nn.ModuleList(fuse([getattr(b, name) for b in blocks]) for name in names)
        self.downsample = fuse([b.downsample for b in blocks]) if blocks[0].downsample is not None else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for i in range(0, len(self.body), 2):
            out = self.body[i + 1](self.body[i](out))
            if i + 2 < len(self.body):
                out = self.relu(out)
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


register_fuser(BasicBlock, Bottleneck)(WideResidual)


class ResNetHead(nn.Module):
    """What torchvision's ResNet does after its average pool: flatten, then fc."""

    def __init__(self, fc: nn.Module):
        super().__init__()
        self.fc = fc

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(x, 1))


@register_fuser(ResNet)
def _fuse_resnet(models: list[nn.Module]) -> nn.Module:
    parts = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]
    wide = [fuse([getattr(m, name) for m in models]) for name in parts]
    return nn.Sequential(*wide, Heads([ResNetHead(m.fc) for m in models]))


class WideNet(nn.Module):
    """The runs' models as one wide model: their inputs side by side in, their logits out."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.net = fuse(models)

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        return self.net(torch.cat(inputs, 1).contiguous(memory_format=torch.channels_last))  # as standardize's


class RunByRun(nn.Module):
    """The runs' models, each on its own input."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        return [model(x) for model, x in zip(self.models, inputs)]


def group_model(models: list[nn.Module], wide: bool) -> nn.Module:
    return WideNet(models) if wide else RunByRun(models)


def sync(group: nn.Module) -> None:
    """Hand the running statistics of the wide batch norms back to the runs' own modules."""
    for module in group.modules():
        if isinstance(module, WideBatchNorm):
            module.sync()


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


@dataclass
class Run:
    """One run of a group: what it trains with, and how it is doing."""

    state: TrainState
    data: PreparedData
    loss_fn: nn.Module
    callbacks: Sequence[Callback]
    outcome: TrainResult | Exception | None = None
    draws: dict[str, Tensor] = field(default_factory=dict)  # the epoch's
    loss_sum: Tensor | None = None  # the epoch's, weighted by batch size
    loss: Tensor | None = None  # the last step's
    lr: float = 0.0  # the epoch's

    @property
    def spec(self) -> ResolvedSpec:
        return self.state.spec

    def params(self) -> list[Tensor]:
        return [p for p in self.state.model.parameters() if p.requires_grad]


def train_fused(
    specs: Sequence[ResolvedSpec],
    datas: Sequence[PreparedData],
    callbacks: Sequence[Sequence[Callback]] | None = None,
    device: str | None = None,
    resumes: Sequence[dict[str, Any] | None] | None = None,
    wide: bool | None = None,
    evaluate: bool = True,
) -> list[TrainResult | Exception]:
    """Train the runs `specs` (each on its `datas[i]`, with its `callbacks[i]`, resuming from
    its `resumes[i]`) together; per run, what worker.trainer.train would return for it
    alone, or the exception that ended it alone (Diverged, a callback's error). An error of the
    whole group (out of memory) is raised. `wide`: one wide model, or each run's own (module
    docstring); by default wide on CUDA only. Without `evaluate`, as worker.trainer.train's: an
    epoch's figures are its training figures alone. Runs of deterministic specs train within
    worker.trainer.determinism on CUDA (a group shares the setting: shared.fusion)."""
    check_fusable(specs)
    if len({len(d.y_train) for d in datas}) != 1:
        raise ValueError(f"runs that train together need training sets of one size; got {[len(d.y_train) for d in datas]}")
    device = torch.device(device or default_device())
    wide = device.type == "cuda" if wide is None else wide
    with determinism(specs[0].deterministic and device.type == "cuda"):
        return _train_fused(specs, datas, callbacks, device, resumes, wide, evaluate)


def _train_fused(
    specs: Sequence[ResolvedSpec], datas: Sequence[PreparedData], callbacks: Sequence[Sequence[Callback]] | None,
    device: torch.device, resumes: Sequence[dict[str, Any] | None] | None, wide: bool, evaluate: bool,
) -> list[TrainResult | Exception]:
    moved = _on_device(datas, device)
    callbacks = callbacks or [() for _ in specs]
    resumes = resumes or [None for _ in specs]
    runs = []
    for spec, data, own, resume in zip(specs, moved, callbacks, resumes, strict=True):
        state = new_state(spec, data, device)
        if resume is not None:
            state.load_state_dict(resume)
        runs.append(Run(state, data, loss_for(spec), own))
    active = [run for run in runs if not _finished(run)]
    while active:
        active = _train_epoch(active, wide, evaluate)
        for run in active:
            _finished(run)
        active = [run for run in active if run.outcome is None]
    return [run.outcome for run in runs]


def _finished(run: Run) -> bool:
    if run.state.epoch >= run.spec.epochs:
        run.outcome = TrainResult(run.state, stopped=False)
    return run.outcome is not None


def _on_device(datas: Sequence[PreparedData], device: torch.device) -> list[PreparedData]:
    """Each run's data on the device; a tensor that several runs share (the test set) moves once."""
    moved: dict[int, Tensor] = {}
    out = []
    for data in datas:
        fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
        for name, value in fields.items():
            if isinstance(value, Tensor):
                fields[name] = moved.setdefault(id(value), value.to(device))
        out.append(PreparedData(**fields))
    return out


def _train_epoch(runs: list[Run], wide: bool, evaluate: bool = True) -> list[Run]:
    """One epoch of every run (each its own next epoch), then their evaluation; the runs still
    in the group."""
    first = runs[0]
    device, n, batch_size = first.data.x_train.device, len(first.data.y_train), first.spec.batch_size
    mean = torch.tensor(first.data.mean, device=device)
    std = torch.tensor(first.data.std, device=device)
    for run in runs:
        epoch = run.state.epoch + 1
        run.draws = {k: v.to(device) for k, v in epoch_draws(run.spec.seed, epoch, n, run.spec.augment).items()}
        run.loss_sum = torch.zeros((), device=device)
        run.lr = run.state.optimizer.param_groups[0]["lr"]
        run.state.model.train()
    bounds = batch_bounds(n, batch_size)
    group = group_model([run.state.model for run in runs], wide).train()
    started = time.perf_counter()
    for b, (start, end) in enumerate(bounds):
        leaving = [run for run in runs if _wants_stop(run)]
        if leaving:
            sync(group)
            for run in leaving:
                run.outcome = run.outcome or TrainResult(run.state, stopped=True)
            runs = [run for run in runs if run.outcome is None]
            if not runs:
                return runs
            group = group_model([run.state.model for run in runs], wide).train()
        _step(runs, group, start, end, mean, std)
        for run in runs:
            loggers = [c for c in run.callbacks if c.log_every > 0]
            _guard(run, log_step, run.state, loggers, run.state.epoch + 1, b + 1, len(bounds), run.lr, run.loss)
    sync(group)
    train_loss = [run.loss_sum.item() / n for run in runs]  # waits for the device: the time is honest
    seconds = time.perf_counter() - started
    metrics = {}
    for run, loss in zip(runs, train_loss):
        metrics[id(run)] = {"epoch": run.state.epoch + 1, "train_loss": loss, "lr": run.lr,
                            "samples_per_second": n / seconds}
        _guard(run, check_finite, run.state, loss, run.state.epoch + 1)
    runs = [run for run in runs if run.outcome is None]
    started = time.perf_counter()
    figures = evaluate_wide(runs, mean, std) if wide and evaluate else [None for _ in runs]
    seconds += time.perf_counter() - started
    for run, figure in zip(runs, figures):
        _guard(run, end_epoch, run.state, run.data, metrics[id(run)], run.callbacks, seconds, figure, evaluate)
    return [run for run in runs if run.outcome is None]


@torch.inference_mode()
def evaluate_wide(runs: list[Run], mean: Tensor, std: Tensor) -> list[dict[str, Any]]:
    """Each run's evaluation figures (worker.trainer.epoch_figures), the runs' models scoring as
    one wide model every evaluation set that has one size across them (the shared test set; the
    training sets, of one size in a group; the validation sets of one size)."""
    for run in runs:
        run.state.model.eval()
    sets = [evaluation_sets(run.data) for run in runs]
    scores: list[dict[str, tuple[Tensor, Tensor]]] = [{} for _ in runs]
    for name in dict.fromkeys(name for own in sets for name in own):
        by_size: dict[int, list[int]] = {}
        for i, own in enumerate(sets):
            if name in own:
                by_size.setdefault(len(own[name][1]), []).append(i)
        for members in by_size.values():
            wide = WideNet([runs[i].state.model for i in members]).eval()
            scored = _predict_wide(wide, [sets[i][name] for i in members], runs[members[0]].spec, mean, std)
            for i, score in zip(members, scored):
                scores[i][name] = score
    return [epoch_figures(run.data, score) for run, score in zip(runs, scores)]


def _predict_wide(
    wide: WideNet, sets: list[tuple[Tensor, Tensor]], spec: ResolvedSpec, mean: Tensor, std: Tensor
) -> list[tuple[Tensor, Tensor]]:
    """Per run: the cross-entropy of each sample's label and its predicted class, as
    worker.trainer.predict gives them; a set that several runs share is standardized once."""
    out: list[tuple[list[Tensor], list[Tensor]]] = [([], []) for _ in sets]
    for start in range(0, len(sets[0][1]), spec.eval_batch_size):
        end = start + spec.eval_batch_size
        batches: dict[int, Tensor] = {}
        for x, _ in sets:
            if id(x) not in batches:
                batches[id(x)] = standardize(x[start:end], mean, std)
        with autocast(mean.device, spec.precision):
            logits = wide([batches[id(x)] for x, _ in sets])
        for (losses, predicted), z, (_, y) in zip(out, logits, sets):
            log_p = z.float().log_softmax(1)
            losses.append(F.nll_loss(log_p, y[start:end], reduction="none"))
            predicted.append(log_p.max(1).indices)
    return [(torch.cat(losses), torch.cat(predicted)) for losses, predicted in out]


def _wants_stop(run: Run) -> bool:
    """The run leaves the group: a callback asks it to stop, or it already ended with an error."""
    return bool(_guard(run, lambda: any(c.should_stop() for c in run.callbacks))) or run.outcome is not None


def _guard(run: Run, call: Callable[..., Any], *args: Any) -> Any:
    """call(*args) for this run alone: an exception ends this run (its outcome), not the group."""
    if run.outcome is not None:
        return None
    try:
        return call(*args)
    except Exception as exc:
        run.outcome = exc
        return None


def _step(runs: list[Run], group: nn.Module, start: int, end: int, mean: Tensor, std: Tensor) -> None:
    """One optimizer step of every run: a forward and backward pass of the group, then each
    run's clipping and optimizer step on its own parameters."""
    inputs = [batch_inputs(run.data, run.draws, start, end, mean, std) for run in runs]
    device = inputs[0][0].device
    with autocast(device, runs[0].spec.precision):
        logits = group([x for x, _ in inputs])
    objective = torch.zeros((), device=device)
    for run, (_, y), z in zip(runs, inputs, logits):
        loss = run.loss_fn(z.float(), y)
        objective = objective + with_l1(loss, run.spec, run.params())
        run.loss = loss
        run.loss_sum += loss.detach() * len(y)
    for run in runs:
        run.state.optimizer.zero_grad(set_to_none=True)
    objective.backward()
    for run in runs:
        optimizer_step(run.state, run.params())
