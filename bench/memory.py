"""Peak memory of a real API process per kind of request, normal and hostile.

    NOISYFIT_ADMIN_TOKEN=... python bench/memory.py [--only upload] [--upload-mib 512]

For each kind, a fresh `uvicorn api.main:app` starts with the NOISYFIT_* settings of the
environment (database, Redis, object store must be running), is warmed (a key, a list, the
catalog), and sent one request. The table shows the API's resident-memory high-water mark
(VmHWM of /proc/PID/status) after the warm-up and after the request, and the peak resident
memory of its child processes (the upload checker, sampled every 20 ms). What a kind
created is cancelled or deleted afterwards; jobs go to a Redis prefix of this run, which no
worker reads, and its keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from load import free_port, start, wait_healthy

SPEC = {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.4}, "loss": "nce+rce",
        "epochs": 1, "train_size": 1000}
MiB = 2**20


@dataclass
class Row:
    kind: str
    status: int
    idle_mib: float
    peak_mib: float
    child_mib: float
    seconds: float


Request = Callable[[httpx.Client], httpx.Response]


def _cifar100_matrix(digits: int) -> list[list[float]]:
    """A valid 100×100 transition matrix (0.6 on the diagonal) whose numbers are written with many digits."""
    off = round(0.4 / 99, digits)
    return [[round(1 - 99 * off, digits) if i == j else off for j in range(100)] for i in range(100)]


def sweep_at_byte_limit(max_bytes: int) -> dict:
    base = {**SPEC, "dataset": "cifar100", "noise": {"type": "transition", "matrix": _cifar100_matrix(15)}}
    seeds = max_bytes // len(json.dumps(base)) - 1
    return {"base": base, "grid": {"seed": list(range(seeds))}}


def npz_upload(unpacked_mib: int, fill: str) -> bytes:
    """x_train of `unpacked_mib` MiB, NHWC uint8 32×32×3: random (a file as large as it unpacks),
    or mostly zero (about 90:1 with deflate, under the zip-bomb ratio)."""
    n = unpacked_mib * MiB // (32 * 32 * 3)
    rng = np.random.default_rng(0)
    if fill == "random":
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    else:
        x = np.zeros((n, 32, 32, 3), np.uint8)
        x[:, ::4, ::4, 0] = 1
    buffer = io.BytesIO()
    save = np.savez if fill == "random" else np.savez_compressed
    save(buffer, x_train=x, y_train=np.arange(n) % 10, x_test=x[:1000], y_test=np.arange(1000) % 10)
    return buffer.getvalue()


def kinds(args: argparse.Namespace) -> dict[str, Callable[[], Request]]:
    """Each kind prepares its body first (not timed, not in the API) and returns the request."""
    def json_body(path: str, value: object) -> Callable[[], Request]:
        def prepare() -> Request:
            body = value if isinstance(value, bytes) else json.dumps(value).encode()
            return lambda client: client.post(path, content=body, headers={"Content-Type": "application/json"})
        return prepare

    def upload(name: str, mib: int, fill: str) -> Callable[[], Request]:
        def prepare() -> Request:
            data = npz_upload(mib, fill)
            return lambda client: client.post("/v1/datasets", data={"name": name}, files={"file": (f"{name}.npz", data)})
        return prepare

    junk = [[]] * 38_000  # ~150 KiB of empty lists: each a new object in every copy
    wide_matrix = [[0.001] * 130] * 1000  # ~1 MiB: a valid shape
    return {
        "job submit": json_body("/v1/jobs", SPEC),
        "sweep, 1000 cells (the cell limit)": json_body(
            "/v1/sweeps", {"base": SPEC, "grid": {"loss": ["ce", "nce+rce"], "seed": list(range(500))}}),
        "sweep, specs at max_sweep_bytes": json_body("/v1/sweeps", sweep_at_byte_limit(args.max_sweep_bytes)),
        "hostile sweep: 150 KiB junk x 1000": json_body(
            "/v1/sweeps", {"base": {**SPEC, "junk": junk}, "grid": {"seed": list(range(1000))}}),
        "hostile sweep: 1 MiB base x 1000": json_body("/v1/sweeps", {
            "base": {**SPEC, "noise": {"type": "transition", "matrix": wide_matrix}}, "grid": {"seed": list(range(1000))}}),
        "hostile JSON: 1 MiB of nesting": json_body("/v1/sweeps", b"[" * (MiB - 2) + b"]"),
        f"upload, {args.upload_mib} MiB file": upload("big", args.upload_mib, "random"),
        f"upload bomb: {args.bomb_mib} MiB unpacked": upload("bomb", args.bomb_mib, "zeros"),
    }


def measure(kind: str, prepare: Callable[[], Request], env: dict[str, str], admin: str, folder: Path) -> Row:
    request = prepare()
    port = free_port()
    api = start([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level", "warning"],
                folder / "uvicorn.log", env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, api)
        key = httpx.post(f"{url}/v1/api-keys", json={"name": "memory"},
                         headers={"Authorization": f"Bearer {admin}"}, timeout=30).json()["key"]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=900) as client:
            client.get("/v1/jobs").raise_for_status()
            client.get("/v1/catalog").raise_for_status()
            idle = _hwm(api.pid)
            children = _ChildPeak(api.pid)
            began = time.perf_counter()
            response = request(client)
            seconds = time.perf_counter() - began
            children.stop()
            peak = _hwm(api.pid)
            _clean_up(client, response)
        return Row(kind, response.status_code, idle / MiB, peak / MiB, children.peak / MiB, seconds)
    finally:
        if api.poll() is None:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(60)


def _clean_up(client: httpx.Client, response: httpx.Response) -> None:
    if response.status_code != 201:
        return
    created = response.json()
    path = response.request.url.path
    if path == "/v1/jobs":
        client.post(f"/v1/jobs/{created['id']}/cancel")
    elif path == "/v1/sweeps":
        client.post(f"/v1/sweeps/{created['id']}/cancel")
    else:
        client.delete(f"/v1/datasets/{created['id']}")


class _ChildPeak:
    """The largest resident memory of any child of `pid`, sampled in a thread."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._done = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.02):
            for child in Path(f"/proc/{self.pid}/task").glob("*/children"):
                for pid in child.read_text().split():
                    self.peak = max(self.peak, _rss(int(pid)))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _status(pid: int, field: str) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return next((int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":")), 0)


def _hwm(pid: int) -> int:
    return _status(pid, "VmHWM")


def _rss(pid: int) -> int:
    return _status(pid, "VmRSS")




def render(rows: list[Row]) -> str:
    lines = [f"| {'request':<38} | status | API idle MiB | API peak MiB | growth MiB | checker peak MiB | s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        child = f"{r.child_mib:.0f}" if r.child_mib else "–"
        lines.append(f"| {r.kind:<38} | {r.status} | {r.idle_mib:.0f} | {r.peak_mib:.0f} | "
                     f"{r.peak_mib - r.idle_mib:.0f} | {child} | {r.seconds:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--admin-token", default=os.environ.get("NOISYFIT_ADMIN_TOKEN", ""))
    parser.add_argument("--only", help="run the kinds whose name holds this text")
    parser.add_argument("--upload-mib", type=int, default=500, help="the large upload's size (under the 512 MiB limit)")
    parser.add_argument("--bomb-mib", type=int, default=1000, help="what the bomb unpacks to")
    args = parser.parse_args(argv)
    if not args.admin_token:
        parser.error("an admin token is needed (--admin-token or NOISYFIT_ADMIN_TOKEN)")
    from shared.settings import Settings

    args.max_sweep_bytes = Settings().max_sweep_bytes
    prefix = f"{os.environ.get('NOISYFIT_REDIS_KEY_PREFIX', '')}bench-memory-{secrets.token_hex(3)}:"
    env = {**os.environ, "NOISYFIT_ADMIN_TOKEN": args.admin_token, "NOISYFIT_REDIS_KEY_PREFIX": prefix,
           "NOISYFIT_MAX_ACTIVE_JOBS_PER_USER": "100000", "NOISYFIT_REAPER_INTERVAL_S": "0"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        try:
            for kind, prepare in kinds(args).items():
                if args.only and args.only not in kind:
                    continue
                rows.append(measure(kind, prepare, env, args.admin_token, Path(folder)))
                print(render(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
        finally:
            _delete_keys(prefix)
    print(render(rows))
    return 0


def _delete_keys(prefix: str) -> None:
    import redis

    from shared.settings import Settings

    client = redis.Redis.from_url(Settings().redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


if __name__ == "__main__":
    sys.exit(main())
