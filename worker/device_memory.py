"""What a job needs of a GPU's memory, known before it runs: a packing worker admits it by this
(worker.packing). torch-free: it runs in the worker's long-lived process.

    need = CUDA_CONTEXT_BYTES                                   estimated (a constant)
         + the job's images and labels on the device           counted: uint8 pixels, int64 labels
         + the model's part:
             measured: the peak an earlier job of the same shape reached in its first epoch
                       (torch.cuda.max_memory_reserved, reported by its training process), less
                       its data; kept per MemoryKey in the worker's memory
             or estimated: weights, gradients and the momentum buffer (4 bytes a parameter each)
                       + (saved activations per sample × batch size × image area ratio + fixed)
                         × HEADROOM + WORKSPACE_BYTES

MODEL_MEMORY holds each model's parameters and the activations its forward pass saves for the
backward pass, per sample and fixed, in fp32 and under bf16 autocast: measured once on the CPU
by bench/activation_memory.py (its docstring says how) and checked by tests/engine. The
constants below were not measured on a GPU: they are deliberately generous, and the first job
of each shape replaces the estimate by what it really used.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.catalog import DATASETS

if TYPE_CHECKING:  # read as attributes only: the module imports no pydantic (the GPU machine's tests)
    from shared.spec import ResolvedSpec

MIB = 2**20
CUDA_CONTEXT_BYTES = 768 * MIB  # a training process's CUDA context and kernels (torch 2.x, lazy loading)
WORKSPACE_BYTES = 256 * MIB  # cuDNN's workspace and the allocator's cache beside the activations
HEADROOM = 1.5  # over the saved activations: their gradients in flight in backward, rounding
FP32 = 4
LABEL = 8  # int64

TABLE_CLASSES = {"cnn4": 10, "cnn8": 10, "resnet34": 100, "resnet50": 100, "imagenet-resnet50": 1000}


@dataclass(frozen=True)
class ModelMemory:
    params: int
    image_area: int  # H × W of the images measured (the model's data set)
    per_sample: dict[str, int]  # bytes of saved activations per sample, by precision
    fixed: dict[str, int]  # bytes saved whatever the batch size (under bf16: the weights' bf16 copies)


MODEL_MEMORY: dict[str, ModelMemory] = {  # python bench/activation_memory.py prints these rows
    "cnn4": ModelMemory(params=422090, image_area=784, per_sample={'fp32': 418112, 'bf16': 246688},
                        fixed={'fp32': 3584, 'bf16': 846400}),
    "cnn8": ModelMemory(params=1639794, image_area=1024, per_sample={'fp32': 2120448, 'bf16': 1171072},
                        fixed={'fp32': 16512, 'bf16': 3289888}),
    "resnet34": ModelMemory(params=21328292, image_area=1024, per_sample={'fp32': 7976960, 'bf16': 3988480},
                            fixed={'fp32': 136192, 'bf16': 42758528}),
    "resnet50": ModelMemory(params=23705252, image_area=1024, per_sample={'fp32': 25513984, 'bf16': 12756992},
                            fixed={'fp32': 424960, 'bf16': 47729024}),
    "imagenet-resnet50": ModelMemory(params=25557032, image_area=50176,
                                     per_sample={'fp32': 85909504, 'bf16': 43757568},
                                     fixed={'fp32': 424960, 'bf16': 51430784}),
}


@dataclass(frozen=True)
class DataShape:
    """A data set's images as the device holds them."""

    channels: int
    size: int  # height = width
    test_samples: int

    @classmethod
    def builtin(cls, name: str) -> DataShape:
        info = DATASETS[name]
        return cls(info.channels, info.size, info.test_samples)


@dataclass(frozen=True)
class MemoryKey:
    """Jobs that need the same memory for their model part."""

    model: str
    channels: int
    size: int
    batch_size: int
    eval_batch_size: int
    precision: str

    @classmethod
    def of(cls, spec: ResolvedSpec, shape: DataShape) -> MemoryKey:
        return cls(spec.model, shape.channels, shape.size, spec.batch_size, spec.eval_batch_size, spec.precision)


def data_bytes(spec: ResolvedSpec, shape: DataShape) -> int:
    """The job's images (train and validation samples, the whole test set) and labels on the device
    (noisy and clean training labels, test labels)."""
    pixels = shape.channels * shape.size * shape.size
    return (spec.train_size + shape.test_samples) * pixels + (2 * spec.train_size + shape.test_samples) * LABEL


def estimated_model_bytes(spec: ResolvedSpec, shape: DataShape) -> int:
    """The model's part by the formula (module docstring)."""
    model = MODEL_MEMORY[spec.model]
    state = model.params * FP32 * (3 if spec.momentum > 0 else 2)
    area = shape.size * shape.size / model.image_area
    saved = model.per_sample[spec.precision] * spec.batch_size * area + model.fixed[spec.precision]
    return int(state + saved * HEADROOM) + WORKSPACE_BYTES


class MeasuredMemory:
    """What jobs' model parts really used on this worker's device, per MemoryKey (the largest seen)."""

    def __init__(self) -> None:
        self._bytes: dict[MemoryKey, int] = {}
        self._lock = threading.Lock()

    def get(self, key: MemoryKey) -> int | None:
        with self._lock:
            return self._bytes.get(key)

    def record(self, spec: ResolvedSpec, shape: DataShape, peak_bytes: int) -> int:
        """A job's peak on the device (its data included, unless lent by worker.resident: then the
        part recorded is short by the data, which job_need adds back); returns the part recorded."""
        key, part = MemoryKey.of(spec, shape), max(0, peak_bytes - data_bytes(spec, shape))
        with self._lock:
            self._bytes[key] = max(part, self._bytes.get(key, 0))
            return self._bytes[key]


def job_need(spec: ResolvedSpec, shape: DataShape, measured: MeasuredMemory) -> int:
    """Device bytes the job needs at its peak: measured where a job of its shape ran, else estimated."""
    model = measured.get(MemoryKey.of(spec, shape))
    return CUDA_CONTEXT_BYTES + data_bytes(spec, shape) + (model if model is not None else
                                                            estimated_model_bytes(spec, shape))
