"""The data holder on a GPU (worker/resident.py): it lends CIFAR-10's images as its own device
memory, which a borrowing process maps (CUDA IPC) without allocating or copying any, and a job
trained on lent images ends as the job on its own copy (deterministic CUDA, so bit for bit). Its
CIFAR-10 files are the benchmark's (bench/resident_data.py). The module imports only the engine,
so that the lent GPU machine runs it (bench/gpu_check.sh). Without CUDA it says so in one line.
"""

import multiprocessing

import pytest
import torch

from bench.resident_data import write_cifar10
from shared.spec import JobSpec, resolve_spec
from worker.datasets import load_dataset
from worker.resident import borrow, start_holder
from worker.runner import run_job
from worker.sinks import LocalSink

NO_CUDA = "CUDA tests did not run: no CUDA device here (bench/gpu_check.sh runs them on a GPU)"


def test_cuda_the_holder_lends_device_memory_that_a_job_maps_without_a_copy_and_trains_on_as_its_own(tmp_path):
    """One test, so that a machine without CUDA says in one line that these did not run."""
    if not torch.cuda.is_available():
        pytest.skip(NO_CUDA)
    write_cifar10(tmp_path, per_batch=400, n_test=500)
    dataset = load_dataset("cifar10", tmp_path)
    process, lender = start_holder(multiprocessing.get_context("forkserver"), "cuda")
    try:
        allocated = torch.cuda.memory_allocated()
        lent = borrow(lender, "cifar10", tmp_path)
        assert lent is not None and lent.x_train.is_cuda and lent.x_test.is_cuda
        assert torch.cuda.memory_allocated() == allocated  # mapped from the holder, not allocated here
        assert torch.equal(lent.x_train.cpu(), dataset.x_train) and torch.equal(lent.x_test.cpu(), dataset.x_test)
        for i, fields in enumerate(({}, {"train_size": 1000, "validation_split": 0.2})):  # the lent tensor; a subset
            spec = resolve_spec(JobSpec(dataset="cifar10", epochs=2, loss="nce+rce", deterministic=True,
                                        noise={"type": "symmetric", "rate": 0.4}, **fields))
            own = run_job(spec, LocalSink(tmp_path / f"own{i}"), tmp_path, device="cuda", dataset=dataset)
            borrowed = run_job(spec, LocalSink(tmp_path / f"lent{i}"), tmp_path, device="cuda", dataset=dataset,
                               images=lent)
            assert [e["train_loss"] for e in borrowed["history"]] == [e["train_loss"] for e in own["history"]]
            assert borrowed["final_test_accuracy"] == own["final_test_accuracy"], fields
        assert torch.equal(lent.x_train.cpu(), dataset.x_train)  # training left the lent images as they were
    finally:
        process.kill()
        process.join()
