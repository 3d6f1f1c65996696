"""What a job spends to get its images onto the device: its own copy against the data holder's
lent images (worker/resident.py), measured side by side in one run.

A worker's jobs are processes forked from a server that keeps the data set in host memory and
never touched CUDA (worker.warm); here they are forked the same way from this process, which
loaded the data set and did not start CUDA. Each job process starts its CUDA context first (not
timed: every job pays it either way), then times its images prepared and on the device
(worker.runner.prepare_data, then .to(device), synchronised), and reports the device memory it
allocated for them. Own copy: the host gathers the job's samples and copies them over. Lent: the
holder, started once, copied the data set to the device at the first ask; a job maps it.

    python bench/resident_data.py --device cuda --jobs 5                   # CIFAR-10-shaped, 50,000 + 10,000
    python bench/resident_data.py --device cuda --train-size 25000         # a subset: gathered on the device
    python bench/resident_data.py --device cpu --per-batch 200 --jobs 2    # the code path on a CPU
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.spec import JobSpec, resolve_spec  # noqa: E402
from worker.datasets import LoadedData, load_dataset  # noqa: E402
from worker.resident import Lender, borrow, start_holder  # noqa: E402
from worker.runner import make_labels, prepare_data  # noqa: E402

FORK = multiprocessing.get_context("fork")  # as from the fork server: the data set in memory, no CUDA yet
MIB = 2**20


def write_cifar10(folder: Path, per_batch: int, n_test: int) -> None:
    """CIFAR-10's python batches of random images (the speed does not depend on them)."""
    rng = np.random.default_rng(0)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)

    def write(name: str, obj: object) -> None:
        (batches / name).write_bytes(pickle.dumps(obj, protocol=4))

    for i in range(1, 6):
        write(f"data_batch_{i}", {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                                  "labels": rng.integers(0, 10, per_batch).tolist()})
    write("test_batch", {"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, n_test).tolist()})
    write("batches.meta", {"label_names": [f"class {i}" for i in range(10)]})


def job(dataset: LoadedData, data_dir: Path, train_size: int | None, device: str, lender: Lender | None,
        reply: Connection) -> None:
    """One job's process: its CUDA context, then its images onto the device, timed."""
    import torch

    torch.zeros(1, device=device)
    labels = make_labels(resolve_spec(JobSpec(dataset="cifar10", train_size=train_size)), dataset)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    allocated = torch.cuda.memory_allocated() if device.startswith("cuda") else 0
    started = time.perf_counter()
    images = borrow(lender, "cifar10", data_dir)
    if lender is not None and images is None:
        raise RuntimeError("the holder lent nothing: see its log above")
    data = prepare_data(dataset, labels, images).to(device)
    synchronize()
    seconds = time.perf_counter() - started
    held = (torch.cuda.memory_allocated() - allocated) if device.startswith("cuda") else 0
    reply.send((seconds, held, data.x_train.shape[0]))


def run_jobs(dataset: LoadedData, data_dir: Path, args: argparse.Namespace,
             lender: Lender | None) -> list[tuple[float, int, int]]:
    out = []
    for _ in range(args.jobs):
        replies, reply = FORK.Pipe(duplex=False)
        process = FORK.Process(target=job, args=(dataset, data_dir, args.train_size, args.device, lender, reply))
        process.start()
        reply.close()
        out.append(replies.recv())
        process.join()
        if process.exitcode:
            raise SystemExit(f"a job process failed with exit code {process.exitcode}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--jobs", type=int, default=5, help="job processes of each kind")
    parser.add_argument("--per-batch", type=int, default=10_000, help="images per CIFAR-10 training batch (5 of them)")
    parser.add_argument("--test-size", type=int, default=10_000)
    parser.add_argument("--train-size", type=int, default=None, help="a job's samples (default: all)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        write_cifar10(data_dir, args.per_batch, args.test_size)
        dataset = load_dataset("cifar10", data_dir)
        holder, lender = start_holder(multiprocessing.get_context("forkserver"), args.device)
        try:
            own = run_jobs(dataset, data_dir, args, None)
            first = run_jobs(dataset, data_dir, argparse.Namespace(**{**vars(args), "jobs": 1}), lender)
            lent = run_jobs(dataset, data_dir, args, lender)
        finally:
            holder.kill()
            holder.join()
    size = dataset.x_train.numel() + dataset.x_test.numel()
    print(f"cifar10-shaped, {len(dataset.x_train)} + {len(dataset.x_test)} images ({size / MIB:.0f} MiB uint8), "
          f"jobs of {own[0][2]} training samples, {args.device}, {args.jobs} jobs each way (medians):")
    for name, rows in (("own copy", own), ("lent, the holder's first ask", first), ("lent", lent)):
        print(f"  {name:30} {statistics.median(r[0] for r in rows) * 1000:8.1f} ms   "
              f"device memory of the job {statistics.median(r[1] for r in rows) / MIB:6.0f} MiB")
    ratio = statistics.median(r[0] for r in own) / statistics.median(r[0] for r in lent)
    print(f"images on the device, a job's own copy against lent ones: {ratio:.1f}x the time")


if __name__ == "__main__":
    main()
