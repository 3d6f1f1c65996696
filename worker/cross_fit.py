"""Out-of-sample probabilities by K-fold cross-fitting (a job's `cross_fit_folds`).

A model that memorised its noisy labels is a poor judge of them: trained with CE, its probability
of a wrong given label climbs towards 1. So the training samples are split into K folds (balanced
over the noisy labels, seeded: worker.runner.fold_assignment), and for each fold a model with the
job's spec (model, epochs, optimizer, seed) trains on the other K−1 folds and predicts the
held-out one. Every training sample gets probabilities from a model that never saw it.

Cost: K extra trainings, each on (K−1)/K of the samples and without the per-epoch evaluation,
so about K−1 times the main run's training steps. The folds share what the main run prepared:
the images already on the device, indexed there, and the same spec.

After each fold its probabilities go into `cross_fit.npz` in the job's sink; a job stopped
during cross-fitting resumes at the first fold not yet done.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from shared.errors import Diverged
from shared.spec import ResolvedSpec
from worker.sinks import ArtifactSink
from worker.trainer import Callback, PreparedData, TrainState, log_probabilities, train

PROGRESS = "cross_fit.npz"


class FoldCallbacks(Callback):
    """What the job's callbacks see of a fold's training: stop requests, and its epochs as
    on_fold_epoch_end (never on_epoch_end, which is the job's own progress)."""

    def __init__(self, callbacks: Sequence[Callback], fold: int, folds: int):
        self.callbacks, self.fold, self.folds = callbacks, fold, folds

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.on_fold_epoch_end(self.fold + 1, self.folds, state, metrics)

    def should_stop(self) -> bool:
        return any(callback.should_stop() for callback in self.callbacks)


def cross_fitted_probabilities(
    spec: ResolvedSpec,
    data: PreparedData,
    fold: np.ndarray,
    sink: ArtifactSink,
    callbacks: Sequence[Callback] = (),
    device: str | None = None,
) -> np.ndarray | None:
    """float32 [n, K]: each training sample's probabilities from the model trained without its
    fold (`fold[i]` in 0..K−1 for sample i of data.x_train); None when a callback stopped it."""
    folds = int(fold.max()) + 1
    probabilities, done = _progress(sink.get(PROGRESS), fold, data.num_classes)
    device = device or str(data.x_train.device)
    for f in range(folds):
        if done[f]:
            continue
        held = torch.from_numpy(fold == f).to(data.x_train.device)
        fitted = _without(data, ~held)
        try:
            outcome = train(spec, fitted, [FoldCallbacks(callbacks, f, folds)], device=device, evaluate=False)
        except Diverged as exc:
            raise Diverged(f"cross-fitting model {f + 1} of {folds}: {exc.message}") from exc
        if outcome.stopped:
            return None
        log_p = log_probabilities(outcome.model, data.x_train[held], data.mean, data.std, spec.eval_batch_size,
                                  spec.precision)
        probabilities[fold == f] = log_p.exp().cpu().numpy()
        done[f] = True
        sink.put(PROGRESS, _npz(fold=fold, probabilities=probabilities, done=done))
    return probabilities


def _without(data: PreparedData, keep: torch.Tensor) -> PreparedData:
    """The training samples where `keep`, nothing to validate on; the test set stays (unused)."""
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep], y_train_clean=None,
                               x_val=None, y_val=None)


def _progress(saved: bytes | None, fold: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities and done folds of an earlier attempt with the same folds, else none."""
    folds = int(fold.max()) + 1
    if saved is not None:
        with np.load(io.BytesIO(saved), allow_pickle=False) as npz:
            if np.array_equal(npz["fold"], fold) and npz["probabilities"].shape == (len(fold), k):
                return npz["probabilities"].copy(), npz["done"].copy()
    return np.full((len(fold), k), np.nan, dtype=np.float32), np.zeros(folds, dtype=bool)


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()
