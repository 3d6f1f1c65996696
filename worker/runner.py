"""One training job, start to end: data set → label noise → training → artifacts in a sink.

    result = run_job(spec, LocalSink("runs/demo"), data_dir="var/data")

Labels are corrupted on the FULL training set, seeded by the spec's seed, as in the paper's
setup: a sample's noisy label does not depend on train_size or validation_split. Then one
seeded order of the training set, balanced over the noisy labels (balanced_order; a user has no
clean ones), gives the validation samples (its first validation_split·n) and the training samples
(the rest of its first n = train_size). Validation samples keep their noisy labels, as the paper
chose α and β on a noisy split.
The realised noise is reported on the samples trained on.

Artifacts: noisy_labels.npz, metrics.jsonl (one JSON line per epoch event), resume.pt (every
checkpoint_every epochs), cross_fit.npz (after each cross-fitting model, when cross_fit_folds > 0),
then checkpoint.pt, suspected_mislabels.csv, label_report.json, label_heatmap.png,
label_probabilities.npz, plot.png and result.json. A sink that holds resume.pt resumes from it
(and from cross_fit.npz, at the first fold not yet done).

The label-quality report (worker/label_quality.py) reads the final model's probabilities of the
training samples, or with cross_fit_folds = K the probabilities of K models that each did not see
the sample (worker/cross_fit.py).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import io
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from worker.sinks import ArtifactSink
from worker.checkpoints import final_checkpoint, read_resume, resume_checkpoint
from worker.cross_fit import cross_fitted_probabilities
from worker.datasets import UPLOADED_PREFIX, LoadedData, load_dataset
from worker.label_quality import LabelQuality, assess_labels, summary
from worker.noise import corrupt_labels, noise_report
from worker.resident import LentImages
from shared.plots import job_plot, job_title, label_heatmap
from shared.spec import ResolvedSpec
from shared.stream import encode, finite
from worker.fused import train_fused
from worker.trainer import (
    Callback, PreparedData, SamplePredictions, TrainResult, TrainState, check_resumable, default_device,
    per_sample_losses, train,
)

log = logging.getLogger(__name__)

SUBSET_STREAM = 0x5EB5E7  # keeps the subset's draws apart from the noise's, which share the seed
FOLD_STREAM = 0xF01D5  # and the cross-fitting folds' from both


@dataclass
class JobLabels:
    """Labels of the full training set, and which samples train and validate."""

    clean: np.ndarray
    noisy: np.ndarray
    corrupted: np.ndarray
    train_indices: np.ndarray
    val_indices: np.ndarray
    clean_known: bool = True  # False: an upload without y_train_clean and no synthetic noise

    def npz(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            noisy=self.noisy,
            clean=self.clean,
            corrupted=self.corrupted,
            train_indices=self.train_indices,
            val_indices=self.val_indices,
        )
        return buffer.getvalue()


def balanced_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation in which every prefix holds each class in proportion (±1 sample).

    Within each class the samples come in random order; a sample's place is its rank in its
    class over the class size, so the classes interleave evenly."""
    rng = np.random.default_rng([SUBSET_STREAM, seed])
    order = rng.permutation(len(labels))
    shuffled = labels[order]
    counts = np.bincount(shuffled)
    by_class = np.argsort(shuffled, kind="stable")
    rank = np.empty(len(labels))
    rank[by_class] = np.arange(len(labels)) - np.repeat(np.cumsum(counts) - counts, counts)
    return order[np.argsort((rank + 0.5) / counts[shuffled], kind="stable")]


def make_labels(spec: ResolvedSpec, dataset: LoadedData) -> JobLabels:
    """Labels to train on: the data set's own (an upload's may already be noisy), plus the
    spec's synthetic noise. Clean labels are an upload's y_train_clean when it has them."""
    given = dataset.y_train.numpy()
    clean = given if dataset.y_train_clean is None else dataset.y_train_clean.numpy()
    noise = spec.noise
    noisy, _ = corrupt_labels(
        given,
        noise.type,
        num_classes=dataset.num_classes,
        rate=noise.rate,
        seed=spec.seed,
        dataset=dataset.name,
        coarse_labels=None if dataset.coarse_train is None else dataset.coarse_train.numpy(),
        matrix=noise.matrix or None,
    )
    corrupted = noisy != clean
    order = balanced_order(noisy, spec.seed)[: spec.train_size]
    n_val = spec.validation_samples
    clean_known = dataset.y_train_clean is not None or noise.type != "none" or not dataset.name.startswith(UPLOADED_PREFIX)
    return JobLabels(clean, noisy, corrupted, np.sort(order[n_val:]), np.sort(order[:n_val]), clean_known)


def fold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The cross-fitting fold (0..folds−1) of each sample: seeded, each fold balanced over
    `labels` (the noisy ones) to ±1 sample per class, fold sizes within one of each other.

    The samples sorted by label, in random order within a label, are dealt to the folds in turn."""
    rng = np.random.default_rng([FOLD_STREAM, seed])
    fold = np.empty(len(labels), dtype=np.int64)
    fold[np.lexsort((rng.random(len(labels)), labels))] = np.arange(len(labels)) % folds
    return fold


def prepare_data(dataset: LoadedData, labels: JobLabels, lent: LentImages | None = None) -> PreparedData:
    """The job's images and labels. Its images come from `lent` when given (the data set's, on the
    device: worker.resident), else from the data set in host memory: the whole training set as it
    is, a subset gathered where the images are. Nothing writes into them."""
    images = (dataset.x_train, dataset.x_test) if lent is None else (lent.x_train, lent.x_test)
    train, val = torch.from_numpy(labels.train_indices), torch.from_numpy(labels.val_indices)
    noisy = torch.from_numpy(labels.noisy)
    return PreparedData(
        x_train=rows(images[0], train),
        y_train=noisy[train],
        x_test=images[1],
        y_test=dataset.y_test,
        num_classes=dataset.num_classes,
        mean=tuple(dataset.mean),
        std=tuple(dataset.std),
        y_train_clean=torch.from_numpy(labels.clean)[train],
        x_val=rows(images[0], val) if len(val) else None,
        y_val=noisy[val] if len(val) else None,
    )


def rows(images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """images[indices] (sorted, distinct), without a copy when they are all the rows."""
    return images if len(indices) == len(images) else images[indices.to(images.device)]


class MetricsLog(Callback):
    """metrics.jsonl, rewritten whole after every epoch (a sink has no append)."""

    def __init__(self, sink: ArtifactSink, history: Sequence[dict[str, Any]] = ()):
        self.sink = sink
        self.lines = [epoch_event(m) for m in history]

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        self.lines.append(epoch_event(metrics))
        self.sink.put("metrics.jsonl", "".join(line + "\n" for line in self.lines).encode())


def epoch_event(metrics: dict[str, Any]) -> str:
    return encode({"type": "epoch", **metrics})


class ResumeCheckpoints(Callback):
    """resume.pt every `every` epochs and after the last."""

    def __init__(self, sink: ArtifactSink, every: int):
        self.sink, self.every = sink, every

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        if state.epoch % self.every == 0 or state.epoch == state.spec.epochs:
            self.sink.put("resume.pt", resume_checkpoint(state))


@dataclass
class JobSetup:
    """A job ready to train: its labels and data, its resume point, and its callbacks."""

    spec: ResolvedSpec
    sink: ArtifactSink
    dataset: LoadedData
    labels: JobLabels
    data: PreparedData
    resume: dict[str, Any] | None
    own: Sequence[Callback]  # the caller's
    started: float  # perf_counter() when the job began, data loading included
    data_seconds: float

    @property
    def callbacks(self) -> list[Callback]:
        """The artifacts' (metrics.jsonl, resume.pt), then the caller's."""
        history = self.resume["history"] if self.resume else ()
        return [MetricsLog(self.sink, history), ResumeCheckpoints(self.sink, self.spec.checkpoint_every), *self.own]


def set_up_job(
    spec: ResolvedSpec, sink: ArtifactSink, dataset: LoadedData, callbacks: Sequence[Callback], started: float,
    lent: LentImages | None = None,
) -> JobSetup:
    """Labels, data (its images from `lent` when given) and resume point of the job; writes
    noisy_labels.npz. ResumeMismatch when the sink holds another spec's resume point (before
    anything of that run is overwritten)."""
    labels = make_labels(spec, dataset)
    data = prepare_data(dataset, labels, lent)
    saved = sink.get("resume.pt")
    resume = read_resume(saved) if saved is not None else None
    if resume is not None:
        check_resumable(spec, resume)
    sink.put("noisy_labels.npz", labels.npz())
    return JobSetup(spec, sink, dataset, labels, data, resume, callbacks, started, time.perf_counter() - started)


def run_job(
    spec: ResolvedSpec,
    sink: ArtifactSink,
    data_dir: str | os.PathLike[str],
    download: bool = False,
    callbacks: Sequence[Callback] = (),
    device: str | None = None,
    dataset: LoadedData | None = None,
    images: LentImages | None = None,
) -> dict[str, Any]:
    """Run the resolved `spec`, writing its artifacts to `sink`; returns result.json's content,
    or {"status": "stopped", ...} when a callback stopped it (resume.pt stays the resume point).
    `dataset` spares loading one already in memory, and `images` (lent by worker.resident) copying
    its images to the device, when they are that data set's, on `device`."""
    device = device or default_device()
    started = time.perf_counter()
    dataset = dataset or load_dataset(spec.dataset, data_dir, download=download)
    job = set_up_job(spec, sink, dataset, callbacks, started, usable(images, dataset, device))
    job.data = job.data.to(device)  # once: the cross-fitting models share it
    outcome = train(spec, job.data, job.callbacks, device=device, resume=job.resume)
    return finish_job(job, outcome, device, time.perf_counter() - started - job.data_seconds)


def finish_job(job: JobSetup, outcome: TrainResult, device: str, train_seconds: float,
               fused_runs: int = 1) -> dict[str, Any]:
    """What follows a job's training: its cross-fitting models when cross_fit_folds > 0, then its
    artifacts (checkpoint.pt, suspected_mislabels.csv, label_report.json, label_heatmap.png,
    label_probabilities.npz, plot.png, result.json); result.json's content, or
    {"status": "stopped", ...} when it (or its cross-fitting) was stopped. `fused_runs`: how many
    runs trained together with it (worker.fused), itself included."""
    if outcome.stopped:
        return {"status": "stopped", "epochs_completed": outcome.epochs_completed}
    spec, sink, labels, data, resume = job.spec, job.sink, job.labels, job.data, job.resume
    cross_started = time.perf_counter()
    cross_fitted = fold = None
    if spec.cross_fit_folds:
        fold = fold_assignment(labels.noisy[labels.train_indices], spec.cross_fit_folds, spec.seed)
        cross_fitted = cross_fitted_probabilities(spec, data, fold, sink, job.own, device)
        if cross_fitted is None:
            return {"status": "stopped", "epochs_completed": outcome.epochs_completed}
    cross_fit_seconds = time.perf_counter() - cross_started

    scored = per_sample_losses(outcome.model, data, spec, log_p=outcome.state.train_log_probabilities)
    sink.put("checkpoint.pt", final_checkpoint(outcome.state, data))
    quality = label_quality(spec, job.dataset, labels, scored, cross_fitted)
    sink.put("suspected_mislabels.csv", mislabels_csv(labels, scored, quality))
    sink.put("label_report.json", json.dumps(finite(quality.report), indent=2, allow_nan=False).encode())
    sink.put("label_heatmap.png", heatmap(spec, quality.report))
    sink.put("label_probabilities.npz", probabilities_npz(labels, scored, cross_fitted, fold))
    sink.put("plot.png", job_plot(outcome.history, job_title(spec.to_json())))
    corrupted = labels.corrupted[labels.train_indices]
    report = noise_report(labels.clean[labels.train_indices], labels.noisy[labels.train_indices],
                          job.dataset.num_classes)
    result = {
        "status": "succeeded",
        "spec": spec.to_json(),
        "final_test_accuracy": outcome.final_test_accuracy,
        "best_test_accuracy": outcome.best_test_accuracy,
        "final_val_accuracy": outcome.final_val_accuracy,
        "best_val_epoch": outcome.best_val_epoch,
        "test_accuracy_at_best_val": outcome.test_accuracy_at_best_val,
        "epochs_completed": outcome.epochs_completed,
        "resumed_from_epoch": resume["epoch"] if resume else None,
        "noise_rate_realised": report["rate"],
        "noise_rate_realised_per_class": report["per_class_rate"],
        "num_corrupted": report["num_corrupted"],
        "samples": {"train": len(labels.train_indices), "val": len(labels.val_indices),
                    "test": len(job.dataset.y_test)},
        "mislabel_detection": detection_scores(scored.losses, corrupted),
        "label_quality": summary(quality.report),
        "history": outcome.history,
        "timings": {
            "data_seconds": job.data_seconds,
            "train_seconds": train_seconds,
            "cross_fit_seconds": cross_fit_seconds,
            "total_seconds": time.perf_counter() - job.started,
            "epoch_seconds": [m["epoch_seconds"] for m in outcome.history],
            "fused_runs": fused_runs,
        },
        "versions": software_versions(),
        "device": device_description(device),
    }
    sink.put("result.json", json.dumps(finite(result), indent=2, allow_nan=False).encode())
    return result


def run_jobs_fused(
    specs: Sequence[ResolvedSpec],
    sinks: Sequence[ArtifactSink],
    data_dir: str | os.PathLike[str],
    download: bool = False,
    callbacks: Sequence[Sequence[Callback]] | None = None,
    device: str | None = None,
    dataset: LoadedData | None = None,
    wide: bool | None = None,
    images: LentImages | None = None,
) -> list[dict[str, Any] | Exception]:
    """run_job for runs that train together (shared.fusion), each into its own sink with the
    artifacts it would have alone; per run, what run_job returns, or the exception that ended
    it alone (its resume point of another spec, divergence, a callback's error). Out of memory
    for the group, each run trains alone from its last resume point."""
    device = device or default_device()
    callbacks = callbacks or [() for _ in specs]
    started = time.perf_counter()
    dataset = dataset or load_dataset(specs[0].dataset, data_dir, download=download)
    lent = usable(images, dataset, device)
    jobs: list[JobSetup | Exception] = []
    for spec, sink, own in zip(specs, sinks, callbacks, strict=True):
        try:
            jobs.append(set_up_job(spec, sink, dataset, own, started, lent))
        except Exception as exc:
            jobs.append(exc)
    ready = [job for job in jobs if isinstance(job, JobSetup)]
    if not ready:
        return jobs
    set_up = time.perf_counter()
    try:
        outcomes = train_fused([j.spec for j in ready], [j.data for j in ready], [j.callbacks for j in ready],
                               device, [j.resume for j in ready], wide)
    except torch.OutOfMemoryError:
        log.warning("%d runs trained together ran out of memory; each trains alone", len(ready))
        _free_device(device)
        return [job if isinstance(job, Exception) else _alone(job, device, lent) for job in jobs]
    train_seconds = time.perf_counter() - set_up
    finished = iter(outcomes)
    results: list[dict[str, Any] | Exception] = []
    for job in jobs:
        outcome = job if isinstance(job, Exception) else next(finished)
        if isinstance(outcome, Exception):
            results.append(outcome)
            continue
        try:
            results.append(finish_job(job, outcome, device, train_seconds, len(ready)))
        except Exception as exc:
            results.append(exc)
    return results


def _alone(job: JobSetup, device: str, images: LentImages | None) -> dict[str, Any] | Exception:
    """The job trained alone from its resume point (its callbacks but the artifacts' own)."""
    try:
        return run_job(job.spec, job.sink, "", callbacks=job.own, device=device, dataset=job.dataset, images=images)
    except Exception as exc:
        return exc


def usable(images: LentImages | None, dataset: LoadedData, device: str) -> LentImages | None:
    """Lent `images` when they are `dataset`'s, on `device`; else None (the job copies its own)."""
    if images is None:
        return None
    if (images.name, images.x_train.shape, images.x_test.shape) != (dataset.name, dataset.x_train.shape,
                                                                     dataset.x_test.shape):
        log.warning("lent images of %s do not match the data set %s; this job copies its own", images.name,
                    dataset.name)
        return None
    return images if images.x_train.device.type == torch.device(device).type else None


def _free_device(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def label_quality(spec: ResolvedSpec, dataset: LoadedData, labels: JobLabels, scored: SamplePredictions,
                  cross_fitted: np.ndarray | None) -> LabelQuality:
    """The report on the training samples' noisy labels, from the cross-fitted probabilities
    when there are any, else the final model's (whose loss then ranks the suspects)."""
    train = labels.train_indices
    quality = assess_labels(
        scored.probabilities if cross_fitted is None else cross_fitted,
        labels.noisy[train],
        dataset.num_classes,
        losses=scored.losses if cross_fitted is None else None,
        clean=labels.clean[train] if labels.clean_known else None,
        classes=dataset.classes,
        source="in_sample" if cross_fitted is None else "cross_fitted",
        seed=spec.seed,
    )
    return dataclasses.replace(quality, report={**quality.report, "cross_fit_folds": spec.cross_fit_folds})


def heatmap(spec: ResolvedSpec, report: dict[str, Any]) -> bytes:
    noise = spec.noise
    setting = noise.type if noise.type in ("none", "transition") else f"{noise.type} {noise.rate:g}"
    truth = report["against_clean"]["transition_matrix"] if report["against_clean"] else None
    return label_heatmap(
        report["transition_matrix"], truth, report["classes"],
        title=f"{spec.loss}, {setting} noise ({report['probabilities'].replace('_', '-')} probabilities)",
    )


def probabilities_npz(labels: JobLabels, scored: SamplePredictions, cross_fitted: np.ndarray | None,
                      fold: np.ndarray | None) -> bytes:
    """What the report was computed from, per training sample (in the order of train_indices)."""
    arrays = {"train_indices": labels.train_indices, "given": labels.noisy[labels.train_indices],
              "in_sample": scored.probabilities}
    if cross_fitted is not None:
        arrays.update(cross_fitted=cross_fitted, fold=fold)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def mislabels_csv(labels: JobLabels, scored: SamplePredictions, quality: LabelQuality) -> bytes:
    """Training samples from the highest loss on their noisy label down; index is the sample's
    index in the data set's training set. predicted, confidence and loss are the final model's;
    self_confidence, margin and flagged come from the probabilities of the label report
    (label_report.json's `probabilities`: in_sample or cross_fitted)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["index", "noisy_label", "predicted", "confidence", "loss", "rank", "self_confidence", "margin",
                     "flagged"])
    for rank, i in enumerate(np.argsort(-scored.losses, kind="stable"), start=1):
        index = labels.train_indices[i]
        writer.writerow([index, labels.noisy[index], scored.predicted[i], f"{scored.confidence[i]:.6f}",
                         f"{scored.losses[i]:.6f}", rank, f"{quality.self_confidence[i]:.6f}",
                         f"{quality.margin[i]:.6f}", int(quality.flagged[i])])
    return text.getvalue().encode()


def detection_scores(losses: np.ndarray, corrupted: np.ndarray) -> dict[str, Any] | None:
    """Precision and recall of the k highest-loss samples as 'corrupted', k = the number that
    are (so the two are equal); None without corrupted samples."""
    k = int(corrupted.sum())
    if k == 0:
        return None
    hits = int(corrupted[np.argsort(-losses, kind="stable")[:k]].sum())
    return {"k": k, "precision_at_k": hits / k, "recall_at_k": hits / k}


def software_versions() -> dict[str, str]:
    try:
        noisyfit = importlib.metadata.version("noisyfit")
    except importlib.metadata.PackageNotFoundError:
        noisyfit = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__, "noisyfit": noisyfit}


def device_description(device: str) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or platform.machine()
    return {"type": device, "name": name, "threads": torch.get_num_threads()}
