"""Data sets that stay on a worker's device across its jobs: one long-lived process, the holder,
keeps them there and lends them to the training processes.

    first job ──> the worker starts the holder (forked from the fork server: the data sets are in
                  its host memory already, worker.warm)
    a training process: borrow(lender, "cifar10", data_dir)
        ──> the holder copies that data set's uint8 images to its device at the first ask, and keeps them
        <── the same device memory, as tensors of the training process (torch's CUDA IPC; on a CPU,
            shared memory)
    the job's images: the lent ones when it trains on the whole training set (no copy), else its
    samples gathered from them on the device (worker.runner.prepare_data); its labels are its own

Why a process of its own: a training process exits when its job ends, handing back its memory,
and device memory lives no longer than the process that allocated it; the fork server cannot
hold it either (a process forked from one that started CUDA cannot use CUDA). So the memory is
the holder's, and jobs map it. The holder never frees what it lent: a data set, once asked for,
stays on the device until the worker stops (built-in data sets only: Fashion-MNIST 47 MiB, a
CIFAR 150 MiB, and the holder's CUDA context).

A GPU worker lends by default (NOISYFIT_RESIDENT_DATA=auto); `on` makes a CPU worker lend too,
through shared memory, which gains nothing over the fork server's copy-on-write pages but runs
the same processes and protocol. Anything going wrong on the way (no holder, it died, a data set
it cannot load, a reply that does not come) leaves the job to copy its own images, as before:
slower, never wrong, and logged. Nothing may write into lent images: every job reads them.

This module is imported by the worker's long-lived process, which never imports torch: torch is
imported only where the holder serves.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import tempfile
import threading
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from shared.catalog import DATASETS

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 120.0  # a first ask copies the data set to the device: seconds at most
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Lender:
    """Where a training process finds its worker's holder: a Unix socket, and the key that
    opens it (the holder serves nobody else)."""

    address: str
    authkey: bytes

    @classmethod
    def new(cls) -> Lender:
        """On Linux an abstract socket (no file, gone with the holder); elsewhere a file in a temporary folder."""
        name = f"noisyfit-holder-{secrets.token_hex(8)}"
        address = f"\0{name}" if sys.platform == "linux" else os.path.join(tempfile.mkdtemp(prefix=name), "socket")
        return cls(address, secrets.token_bytes(32))


@dataclass(frozen=True)
class LentImages:
    """A built-in data set's uint8 images [N, C, H, W], in the holder's device memory."""

    name: str
    x_train: Tensor
    x_test: Tensor


def lends(setting: str, device: str) -> bool:
    """Whether a worker on `device` keeps its data sets in a holder (NOISYFIT_RESIDENT_DATA)."""
    return setting == "on" or (setting == "auto" and device == "cuda")


def start_holder(context: BaseContext, device: str, target: Callable[..., None] | None = None) -> tuple[BaseProcess, Lender]:
    """Start a holder of data sets on `device` in a process of `context`, running `target`
    (serve, or a caller's wrapper of it taking the same arguments); returns once it listens."""
    lender = Lender.new()
    ready, told = context.Pipe(duplex=False)
    process = context.Process(target=target or serve, args=(lender, device, told), name="data-holder", daemon=True)
    process.start()
    told.close()
    try:
        if not ready.poll(START_TIMEOUT_S):
            raise TimeoutError(f"the data holder did not start listening within {START_TIMEOUT_S:g} s")
        ready.recv()
    except BaseException:
        process.kill()
        raise
    finally:
        ready.close()
    return process, lender


def serve(lender: Lender, device: str, ready: Connection) -> None:
    """The holder: lend data sets on `device` to whoever knows the key, until killed."""
    import torch.multiprocessing  # noqa: F401  registers torch's pickling of tensors as shared memory

    held: dict[tuple[str, str], LentImages] = {}
    lock = threading.Lock()
    with Listener(lender.address, family="AF_UNIX", authkey=lender.authkey) as listener:
        ready.send(os.getpid())
        ready.close()
        while True:
            try:
                connection = listener.accept()
            except Exception as exc:  # a caller without the key, or one that hung up: not ours to serve
                log.warning("the data holder refused a connection: %s", exc)
                continue
            threading.Thread(target=_lend, args=(connection, held, lock, device), daemon=True).start()


def _lend(connection: Connection, held: dict[tuple[str, str], LentImages], lock: threading.Lock, device: str) -> None:
    with connection:
        try:
            name, data_dir = connection.recv()
            with lock:
                if (name, data_dir) not in held:
                    held[name, data_dir] = _to_device(name, data_dir, device)
                    log.info("the data holder keeps %s on %s", name, device)
            reply: LentImages | str = held[name, data_dir]
        except Exception as exc:
            reply = f"{type(exc).__name__}: {exc}"
        try:
            connection.send(reply)
        except (OSError, EOFError):
            pass  # the training process is gone; it had copied its own or ended
    if device.startswith("cuda"):
        import torch

        torch.cuda.ipc_collect()  # forget what ended jobs were lent (the images stay): bookkeeping, not memory


def _to_device(name: str, data_dir: str, device: str) -> LentImages:
    from worker.datasets import load_dataset  # torch: only in the holder

    dataset = load_dataset(name, data_dir)
    x_train, x_test = dataset.x_train.to(device), dataset.x_test.to(device)
    if x_train.device.type == "cpu":  # lent as shared memory: moved there once, not at every lending
        x_train, x_test = x_train.share_memory_(), x_test.share_memory_()
    return LentImages(name, x_train, x_test)


def borrow(lender: Lender | None, name: str, data_dir: str | os.PathLike[str]) -> LentImages | None:
    """The images of the built-in data set `name`, lent by the holder; None (logged) when there is
    no holder or it cannot lend them: the job then copies its own."""
    if lender is None or name not in DATASETS:
        return None
    try:
        with Client(lender.address, family="AF_UNIX", authkey=lender.authkey) as connection:
            connection.send((name, str(Path(data_dir).resolve())))
            if not connection.poll(REPLY_TIMEOUT_S):
                raise TimeoutError(f"no reply within {REPLY_TIMEOUT_S:g} s")
            reply: Any = connection.recv()
    except Exception as exc:
        log.warning("the data holder could not be reached (%s); this job copies its own images of %s", exc, name)
        return None
    if not isinstance(reply, LentImages):
        log.warning("the data holder cannot lend %s (%s); this job copies its own images", name, reply)
        return None
    return reply
