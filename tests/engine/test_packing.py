"""Packing, without a GPU: the admission rule on plain numbers, a CPU worker's core groups, the
packer's slots and waits, and the memory a job is admitted by (worker/packing.py,
worker/device_memory.py). tests/reliability/test_packing.py runs packed jobs in a real worker."""

import subprocess
import sys
import threading

import pytest

from shared.spec import JobSpec, resolve_spec
from worker.device_memory import (
    CUDA_CONTEXT_BYTES, MODEL_MEMORY, DataShape, MeasuredMemory, data_bytes, estimated_model_bytes, job_need,
)
from worker.packing import NoRoom, Packer, Running, admits, core_groups
from tests.conftest import ROOT

GIB = 2**30


# ---------------------------------------------------------------- the admission rule

def test_a_job_alone_is_admitted_whatever_it_needs():
    assert admits(free=1 * GIB, running=[], need=80 * GIB, margin=1 * GIB)


def test_a_job_is_admitted_while_free_memory_covers_it_and_the_margin():
    running = [Running(need=10 * GIB, measured=True)]
    assert admits(free=20 * GIB, running=running, need=19 * GIB, margin=1 * GIB)  # exactly full
    assert not admits(free=20 * GIB, running=running, need=19 * GIB + 1, margin=1 * GIB)
    assert not admits(free=20 * GIB, running=running, need=10 * GIB, margin=11 * GIB)


def test_running_jobs_not_yet_measured_keep_their_whole_need_aside():
    """Free memory does not show yet what a job that has not ended its first epoch will take."""
    starting = [Running(need=6 * GIB, measured=False), Running(need=3 * GIB, measured=True)]
    assert not admits(free=12 * GIB, running=starting, need=6 * GIB, margin=1 * GIB)  # 6 + 6 + 1 > 12
    assert admits(free=12 * GIB, running=starting, need=5 * GIB, margin=1 * GIB)  # 5 + 6 + 1 = 12
    measured = [Running(need=6 * GIB, measured=True), Running(need=3 * GIB, measured=True)]
    assert admits(free=12 * GIB, running=measured, need=11 * GIB, margin=1 * GIB)


def test_many_small_jobs_fill_a_device_until_the_margin():
    free, margin, need, running = 140 * GIB, 2 * GIB, 3 * GIB, []
    while admits(free, running, need, margin):
        running.append(Running(need, measured=True))
        free -= need  # each measured job's memory now shows as used
    assert len(running) == (140 - 2) // 3 and free >= margin


# ---------------------------------------------------------------- a CPU worker's cores

@pytest.mark.parametrize(("cores", "per_job", "groups"), [
    ([0, 1], 0, [(0, 1)]),  # the default: all cores, one job
    ([0, 1], 1, [(0,), (1,)]),
    ([0, 1], 2, [(0, 1)]),
    ([0, 1], 8, [(0, 1)]),  # more than the machine has: one job of all cores
    ([3, 0, 2, 1, 4], 2, [(0, 1), (2, 3)]),  # floor(5 / 2); core 4 stays idle
    ([4, 5, 6, 7], 1, [(4,), (5,), (6,), (7,)]),  # an affinity that does not start at 0
])
def test_a_cpu_worker_runs_one_job_per_group_of_cores(cores, per_job, groups):
    assert core_groups(cores, per_job) == groups


def test_each_packed_cpu_job_gets_cores_of_its_own_and_a_freed_slot_wakes_a_waiter():
    packer = Packer("cpu", 2, [(0,), (1,)], pin=True)
    with packer.admission() as admission:
        admission.check("a", 0)
        a = admission.hold("a")
    with packer.admission() as admission:
        admission.check("b", 0)
        b = admission.hold("b")
    assert {a.cores, b.cores} == {(0,), (1,)} and packer.capacity().busy == 2
    with packer.admission() as admission, pytest.raises(NoRoom) as refused:
        admission.check("c", 0)
    assert not packer.wait_for_room(refused.value, 0.05)  # nothing changed

    woke = []
    waiter = threading.Thread(target=lambda: woke.append(packer.wait_for_room(refused.value, 60)))
    waiter.start()
    packer.release(a)
    waiter.join(60)
    assert woke == [True]
    with packer.admission() as admission:
        admission.check("c", 0)
        assert admission.hold("c").cores == (0,)  # the freed group


def test_an_unpinned_cpu_worker_runs_one_job_on_all_cores():
    packer = Packer("cpu", 1, [(0, 1)], pin=False)
    with packer.admission() as admission:
        admission.check("a", 0)
        assert admission.hold("a").cores == ()  # left as it is: every core, torch's own thread count
    with packer.admission() as admission, pytest.raises(NoRoom):
        admission.check("b", 0)


# ---------------------------------------------------------------- a GPU worker's memory

def test_a_gpu_worker_admits_by_the_free_memory_it_reads_and_its_slots():
    free = {"now": 20 * GIB}
    reads = []

    def free_memory() -> int:
        reads.append(free["now"])
        return free["now"]

    packer = Packer("cuda", 3, free_memory=free_memory, margin=1 * GIB)
    with packer.admission() as admission:
        admission.check("a", 30 * GIB)  # alone: admitted without reading the device
        a = admission.hold("a")
    assert reads == [] and a.cores == () and a.need == 30 * GIB
    packer.measured("a")  # its memory now shows in free memory
    with packer.admission() as admission:
        admission.check("b", 12 * GIB)
        admission.hold("b")
    with packer.admission() as admission, pytest.raises(NoRoom):
        admission.check("c", 8 * GIB)  # b may still take 12: 8 + 12 + 1 > 20
    packer.measured("b")
    free["now"] = 8 * GIB  # b took its 12
    with packer.admission() as admission:
        admission.check("c", 7 * GIB)
        admission.hold("c")
    with packer.admission() as admission, pytest.raises(NoRoom):
        admission.check("d", 0)  # 3 slots busy, whatever memory is left
    assert len(reads) == 3


def test_a_gpu_worker_that_cannot_read_its_memory_runs_one_job_at_a_time():
    packer = Packer("cuda", 4, free_memory=lambda: None, margin=0)
    with packer.admission() as admission:
        admission.check("a", GIB)
        admission.hold("a")
    with packer.admission() as admission, pytest.raises(NoRoom):
        admission.check("b", 1)


def test_a_group_of_runs_takes_one_slot_and_on_a_gpu_grows_only_while_it_fits():
    cpu = Packer("cpu", 2, [(0,), (1,)], pin=True)
    with cpu.admission() as admission:
        admission.check("a", 0)
        assert all(admission.join("a", 0) for _ in range(7))  # a CPU group: one slot on its cores
        a = admission.hold("a")
    assert a.cores == (0,) and cpu.capacity().busy == 1

    reads = []

    def free_memory() -> int:
        reads.append(1)
        return 10 * GIB

    gpu = Packer("cuda", 4, free_memory=free_memory, margin=1 * GIB)
    with gpu.admission() as admission:
        admission.check("b", 3 * GIB)  # alone: admitted without reading the device
        assert admission.join("b", 2 * GIB) and admission.join("b", 2 * GIB)  # 7 + 1 <= 10
        assert not admission.join("b", 3 * GIB)  # 10 + 1 > 10: this run waits for another slot
        b = admission.hold("b")
    assert b.need == 7 * GIB and reads == [1]  # the device read once for the whole group
    with gpu.admission() as admission:
        admission.check("c", 1 * GIB)  # beside b, which may still take its 7: 1 + 7 + 1 <= 10
        assert admission.join("c", 1 * GIB)  # 1 + 1 + 7 + 1 <= 10
        assert not admission.join("c", 1 * GIB)  # 11 > 10
        admission.hold("c")
    assert reads == [1, 1]

    blind = Packer("cuda", 4, free_memory=lambda: None, margin=0)
    with blind.admission() as admission:
        admission.check("d", GIB)
        assert not admission.join("d", 1)  # memory unknown: the run trains in a slot of its own


# ---------------------------------------------------------------- what a job needs

def spec(**fields):
    return resolve_spec(JobSpec.parse({"dataset": "cifar10", "noise": {"type": "symmetric", "rate": 0.4},
                                       "loss": "nce+rce", **fields}))


CIFAR10 = DataShape(channels=3, size=32, test_samples=10_000)


def test_a_jobs_data_is_counted_to_the_byte():
    job = spec(train_size=1000)
    assert data_bytes(job, CIFAR10) == (1000 + 10_000) * 3 * 32 * 32 + (2 * 1000 + 10_000) * 8


def test_the_estimate_grows_with_batch_size_image_area_and_precision():
    base = estimated_model_bytes(spec(batch_size=128), CIFAR10)
    assert estimated_model_bytes(spec(batch_size=256), CIFAR10) > base
    assert estimated_model_bytes(spec(batch_size=128), DataShape(3, 64, 10_000)) > base
    assert estimated_model_bytes(spec(batch_size=128, precision="bf16"), CIFAR10) < base
    weights_grads_momentum = MODEL_MEMORY["cnn8"].params * 4 * 3
    assert base > weights_grads_momentum + MODEL_MEMORY["cnn8"].per_sample["fp32"] * 128


def test_a_measured_peak_replaces_the_estimate_for_jobs_of_the_same_shape():
    measured, job = MeasuredMemory(), spec(train_size=1000, seed=1)
    estimated = job_need(job, CIFAR10, measured)
    assert estimated == CUDA_CONTEXT_BYTES + data_bytes(job, CIFAR10) + estimated_model_bytes(job, CIFAR10)
    peak = data_bytes(job, CIFAR10) + 300 * 2**20
    assert measured.record(job, CIFAR10, peak) == 300 * 2**20
    same_shape = spec(train_size=5000, seed=2, loss="ce")
    assert job_need(same_shape, CIFAR10, measured) == CUDA_CONTEXT_BYTES + data_bytes(same_shape, CIFAR10) + 300 * 2**20
    other_batch = spec(train_size=1000, batch_size=64)
    assert job_need(other_batch, CIFAR10, measured) == CUDA_CONTEXT_BYTES + data_bytes(other_batch, CIFAR10) + \
        estimated_model_bytes(other_batch, CIFAR10)
    measured.record(job, CIFAR10, peak - 2**20)  # a smaller peak later: the largest seen stays
    assert measured.record(job, CIFAR10, 0) == 300 * 2**20


def test_the_activation_table_holds_what_the_models_save():
    """MODEL_MEMORY's rows are bench/activation_memory.py's measurement (the smaller models; the
    script checks all with --check)."""
    run = subprocess.run([sys.executable, "bench/activation_memory.py", "--check", "--models", "cnn4", "cnn8"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_workers_own_process_packs_without_torch():
    """The worker's long-lived process (worker.app: slots, admission, memory estimates) never imports torch."""
    code = ("import sys, worker.app\nfrom worker.dispatch import current_packer\n"
            "print(current_packer().capacity().device, sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    device, torch_modules = run.stdout.split()
    assert device in ("cpu", "cuda") and torch_modules == "[]", run.stdout + run.stderr
