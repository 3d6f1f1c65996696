"""Checking an upload in a child process, so that no archive can take the API's memory or CPU.

    API: copy the upload to a private folder ──> python -m shared.upload_sandbox (child)
    child: RLIMIT_AS, RLIMIT_CPU on itself ──> shared.uploads.read_upload ──> data.npz beside
           the upload ──> one line of JSON: the data set's description, or the error
    API: reads that line (and the file's size); stores data.npz

Whatever the archive holds (a zip bomb that passes the ratio check, millions of members, a
decoder's worst case), the child runs out of address space (a MemoryError: 413) or CPU time
(killed: 413) and the API's memory stays where it was. At most `at_once` children run at a
time, so the machine's memory is bounded too.
"""

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import BadDataset, UploadTooLarge
from shared.uploads import UploadLimits, read_upload, row_columns

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
WALL_FACTOR = 3  # a child may wait for a CPU on a busy machine: wall-clock limit = this × cpu_s + 10 s
_ROOT = str(Path(__file__).resolve().parent.parent)
_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


@dataclass(frozen=True)
class Sandbox:
    memory_bytes: int  # the child's address space
    cpu_s: int
    at_once: int

    @classmethod
    def of(cls, settings: "Settings") -> "Sandbox":
        return cls(settings.upload_check_memory_bytes, settings.upload_check_cpu_s, settings.upload_checks_at_once)


def check_upload(source: Path, target: Path, limits: UploadLimits, sandbox: Sandbox) -> dict[str, Any]:
    """Validate and normalise the upload at `source` in a bounded child process, which writes the
    normalised data set to `target` (.npz). Returns the DatasetRow columns (shared.uploads.row_columns);
    raises BadDataset, or UploadTooLarge when the upload needs more than the sandbox allows."""
    command = [sys.executable, "-m", __name__, str(source), str(target), json.dumps(asdict(limits)),
               str(sandbox.memory_bytes), str(sandbox.cpu_s)]
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
    with _slot(sandbox.at_once):
        try:
            done = subprocess.run(command, capture_output=True, env=env, timeout=WALL_FACTOR * sandbox.cpu_s + 10)
        except subprocess.TimeoutExpired as exc:
            raise UploadTooLarge(f"checking the file took longer than {exc.timeout:.0f} s; upload less data") from exc
    return _reply(done, sandbox)


def _reply(done: subprocess.CompletedProcess, sandbox: Sandbox) -> dict[str, Any]:
    if done.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise UploadTooLarge(f"checking the file took more than {sandbox.cpu_s} s of CPU time; upload less data "
                             "(fewer or smaller images)")
    try:
        reply = json.loads(done.stdout.decode().splitlines()[-1])
    except (UnicodeDecodeError, IndexError, ValueError):
        log.error("the upload checker stopped with %s: %s", done.returncode, done.stderr.decode(errors="replace")[-2000:])
        raise BadDataset(f"the file could not be checked (the checker stopped with status {done.returncode}); "
                         "check that it is an .npz or a .zip of images, or upload it again") from None
    if "error" in reply:
        kind = UploadTooLarge if reply["error"] == UploadTooLarge.code else BadDataset
        raise kind(reply["message"])
    return reply["dataset"]


class _slot:
    """One of `at_once` places to run a check in; waits for a free one."""

    def __init__(self, at_once: int):
        with _slots_lock:
            self.semaphore = _slots.setdefault(at_once, threading.BoundedSemaphore(at_once))

    def __enter__(self) -> None:
        self.semaphore.acquire()

    def __exit__(self, *_: object) -> None:
        self.semaphore.release()


# ---------------------------------------------------------------- the child


def main(source: str, target: str, limits: str, memory_bytes: str, cpu_s: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (int(memory_bytes), int(memory_bytes)))
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_s), int(cpu_s) + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        with open(source, "rb") as file:
            arrays = read_upload(file, UploadLimits(**json.loads(limits)))
        import numpy as np

        np.savez(target, **arrays)
        reply: dict[str, Any] = {"dataset": row_columns(arrays)}
    except BadDataset as exc:
        reply = {"error": exc.code, "message": exc.message}
    except MemoryError:
        reply = {"error": UploadTooLarge.code, "message": f"checking the file needs more than {int(memory_bytes)} "
                                                           "bytes of memory; upload less data"}
    except Exception as exc:  # a reader's bug must not pass for a good file, nor stop the API
        log.exception("unexpected error while checking an upload")
        reply = {"error": BadDataset.code, "message": f"the file cannot be read as a data set ({type(exc).__name__}: "
                                                      f"{exc}); check that it is an .npz or a .zip of images"}
    print(json.dumps(reply))


if __name__ == "__main__":
    main(*sys.argv[1:])
