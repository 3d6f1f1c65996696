"""Packing on a GPU: the driver probe sees the device, free memory reads, and the memory a job is
admitted by (worker/device_memory.py, estimated before any job of its shape ran) covers what the
job really reserves on the device. It prints each figure, so that a lent GPU's run also
calibrates the estimate (docs/PACKING.md). The module imports only the engine (no database,
queue or object-store clients), so that the lent GPU machine runs it; without CUDA it says so
in one line.
"""

import gc

import pytest
import torch

from shared.spec import JobSpec, resolve_spec
from worker.device_memory import MIB, DataShape, data_bytes, estimated_model_bytes
from worker.packing import visible_cuda_devices
from worker.trainer import PreparedData, train

NO_CUDA = "CUDA packing tests did not run: no CUDA device here (run them on a GPU: pytest tests/engine/test_packing_cuda.py)"
JOBS = [("cifar10", "cnn8", "fp32"), ("cifar10", "cnn8", "bf16"), ("cifar100", "resnet34", "fp32")]


def synthetic(train_size: int, shape: DataShape, num_classes: int) -> PreparedData:
    """Random images and labels of the data set's shape, its whole test set included (as a job holds it)."""
    g = torch.Generator().manual_seed(0)
    n = train_size + shape.test_samples
    x = torch.randint(0, 256, (n, shape.channels, shape.size, shape.size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return PreparedData(x[:train_size], y[:train_size], x[train_size:], y[train_size:], num_classes,
                        (0.5,) * shape.channels, (0.25,) * shape.channels, y_train_clean=y[:train_size].clone())


def test_cuda_the_estimate_covers_each_jobs_peak_and_the_device_is_seen():
    """One test, so that a machine without CUDA says in one line that these did not run."""
    if not torch.cuda.is_available():
        pytest.skip(NO_CUDA)
    assert visible_cuda_devices() >= 1
    free, total = torch.cuda.mem_get_info()
    assert 0 < free <= total
    for dataset, model, precision in JOBS:
        spec = resolve_spec(JobSpec(dataset=dataset, model=model, precision=precision, epochs=1, train_size=2000))
        shape = DataShape.builtin(dataset)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        train(spec, synthetic(spec.train_size, shape, spec.num_classes), device="cuda")
        peak = torch.cuda.max_memory_reserved()
        measured, estimated = peak - data_bytes(spec, shape), estimated_model_bytes(spec, shape)
        print(f"{model} {dataset} batch {spec.batch_size} {precision}: reserved at peak {peak / MIB:.0f} MiB, "
              f"model part measured {measured / MIB:.0f} MiB, estimated {estimated / MIB:.0f} MiB")
        assert measured <= estimated, (model, precision, measured, estimated)
