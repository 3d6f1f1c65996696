"""A small typed client of the noisyfit HTTP API (v1), built on httpx.

    with NoisyfitClient("http://localhost:8000", api_key) as nf:
        job = nf.submit_job({"dataset": "mnist", "loss": "nce+rce", "noise": {"type": "symmetric", "rate": 0.4}})
        for event in nf.events(job["id"]):
            print(event)
        nf.download(job["id"], "result.json", "runs/")

Every method returns the API's JSON as plain data; an error answer raises `ApiError`, a
server that cannot be reached raises `ConnectionFailed`.
"""

import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
RECONNECTS = 5  # in a row, without an event between
RECONNECT_DELAY_S = 1.0
IDLE_TIMEOUT_S = 120.0  # a live stream without a byte for this long is reopened

Json = dict[str, Any]


class ClientError(Exception):
    """Anything that kept a request from getting an answer."""


class ConnectionFailed(ClientError):
    """The API could not be reached, or did not answer in time."""


class ApiError(ClientError):
    """The API answered with an error: `{"error": {"code", "message", "field"}}`."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" (field: {self.field})" if self.field else ""
        return " ".join(f"{self.message}{where} [HTTP {self.status} {self.code}]".split())

    @classmethod
    def from_response(cls, response: httpx.Response) -> "ApiError":
        try:
            error = response.json()["error"]
            return cls(response.status_code, str(error["code"]), str(error["message"]), error.get("field"))
        except (ValueError, KeyError, TypeError):
            pass
        body = " ".join(response.text.split())[:200]
        message = response.reason_phrase or "error"
        return cls(response.status_code, "http_error", f"{message}: {body}" if body else message)


@dataclass(frozen=True)
class ServerSentEvent:
    """One message of a text/event-stream."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


def parse_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Messages from the lines of an event stream (the WHATWG rules: `field: value` lines,
    a blank line ends a message, `:` starts a comment, data lines join with newlines). A
    `retry` field holds from where it appears, with or without data beside it."""
    data: list[str] = []
    event, event_id, retry = "", None, None
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            if data:
                yield ServerSentEvent("\n".join(data), event or "message", event_id, retry)
            data, event = [], ""
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            event_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)


class NoisyfitClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ):
        headers = {"Accept": "application/json", "User-Agent": "noisyfit-client"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        self._idle = httpx.Timeout(timeout, read=max(timeout, IDLE_TIMEOUT_S))

    def __enter__(self) -> "NoisyfitClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # Jobs

    def submit_job(self, spec: Json, idempotency_key: str | None = None) -> Json:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/v1/jobs", json=spec, headers=headers)

    def get_job(self, job_id: str) -> Json:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def list_jobs(self, status: str | None = None, cursor: str | None = None, limit: int | None = None) -> Json:
        params = {k: v for k, v in {"status": status, "cursor": cursor, "limit": limit}.items() if v is not None}
        return self._json("GET", "/v1/jobs", params=params)

    def wait(self, job_id: str, poll: float = 2.0, timeout: float | None = None) -> Json:
        """Poll until the job is succeeded, failed or cancelled; return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
            time.sleep(poll)

    def metrics(self, job_id: str, after: str | None = None) -> Json:
        params = {"after": after} if after is not None else {}
        return self._json("GET", f"/v1/jobs/{job_id}/metrics", params=params)

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Json]:
        """The job's metric events, live, until its `done` event.

        A dropped or silent connection reconnects with Last-Event-ID, so no event is lost or
        repeated; a stream that ends without `done` reconnects unless the job has finished.
        """
        delay, failures = RECONNECT_DELAY_S, 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            try:
                path = f"/v1/jobs/{job_id}/events"
                with self._http.stream("GET", path, headers=headers, timeout=self._idle) as response:
                    if response.is_error:
                        response.read()
                        raise ApiError.from_response(response)
                    for message in parse_sse(response.iter_lines()):
                        if message.event == "refused":  # the key was revoked or the job deleted
                            error = json.loads(message.data)["error"]
                            raise ApiError(error["status"], error["code"], error["message"], error.get("field"))
                        failures = 0
                        delay = message.retry / 1000 if message.retry is not None else delay
                        last_event_id = message.id if message.id is not None else last_event_id
                        event = _event(message)
                        yield event
                        if event.get("type") == "done":
                            return
            except httpx.ReadTimeout:
                pass  # quiet for IDLE_TIMEOUT_S: a proxy may have dropped it silently
            except httpx.TransportError as error:
                failures += 1
                if failures > RECONNECTS:
                    raise ConnectionFailed(f"lost the event stream of job {job_id}: {error}") from None
                time.sleep(delay)
                continue
            if self.get_job(job_id)["status"] in TERMINAL:
                return
            time.sleep(delay)

    def cancel(self, job_id: str) -> Json:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def artifacts(self, job_id: str) -> list[Json]:
        """The job's artifacts, each at least {"name": ...}."""
        listing = self._json("GET", f"/v1/jobs/{job_id}/artifacts")
        items = listing.get("artifacts", []) if isinstance(listing, dict) else listing
        return [item if isinstance(item, dict) else {"name": item} for item in items]

    def download(self, job_id: str, name: str, dest: str | os.PathLike) -> Path:
        """Save an artifact to `dest` (a file, or an existing folder to put it in); return its path.

        A redirect to a presigned URL is followed without the API key (httpx drops the
        Authorization header when the origin changes). The file appears only once complete."""
        dest = Path(dest)
        target = dest / name if dest.is_dir() else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}", follow_redirects=True) as response:
                if response.is_error:
                    response.read()
                    raise ApiError.from_response(response)
                with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as part:
                    try:
                        for chunk in response.iter_bytes():
                            part.write(chunk)
                    except BaseException:
                        part.close()
                        os.unlink(part.name)
                        raise
            os.replace(part.name, target)
        except httpx.TransportError as error:
            raise ConnectionFailed(f"download of {name} from {self.base_url} failed: {error}") from None
        return target

    # Sweeps

    def submit_sweep(self, base: Json, grid: dict[str, list] | None = None, preset: str | None = None) -> Json:
        body: Json = {"base": base}
        if grid is not None:
            body["grid"] = grid
        if preset is not None:
            body["preset"] = preset
        return self._json("POST", "/v1/sweeps", json=body)

    def get_sweep(self, sweep_id: str) -> Json:
        return self._json("GET", f"/v1/sweeps/{sweep_id}")

    def sweep_table(self, sweep_id: str, format: Literal["json", "csv", "markdown"] = "json") -> Any:
        """The sweep's table: rows as JSON, or CSV or Markdown text."""
        response = self._request("GET", f"/v1/sweeps/{sweep_id}/table", params={"format": format})
        return response.json() if format == "json" else response.text

    def cancel_sweep(self, sweep_id: str) -> Json:
        return self._json("POST", f"/v1/sweeps/{sweep_id}/cancel")

    # Data sets and catalog

    def upload_dataset(self, path: str | os.PathLike, name: str) -> Json:
        path = Path(path)
        with path.open("rb") as file:
            return self._json("POST", "/v1/datasets", data={"name": name}, files={"file": (path.name, file)})

    def list_datasets(self) -> Json:
        return self._json("GET", "/v1/datasets")

    def get_dataset(self, dataset_id: str) -> Json:
        return self._json("GET", f"/v1/datasets/{dataset_id}")

    def create_version(
        self, dataset_id: str, *, from_job: str | None = None, action: Literal["relabel", "drop"] | None = None,
        min_score: float | None = None, changes: list[list[int]] | None = None, drop: list[int] | None = None,
        name: str | None = None, retrain: bool | Json = False,
    ) -> Json:
        """A new version of `dataset_id` (yours, or a built-in data set's name): from a job's
        suspects, or from your `changes` ([index, label] pairs) and `drop` (indices). With
        `retrain` (true, or spec fields to override) the answer's `job` trains on it."""
        body = {"from_job": from_job, "action": action, "min_score": min_score, "changes": changes, "drop": drop,
                "name": name}
        body = {key: value for key, value in body.items() if value is not None}
        if retrain is not False:
            body["retrain"] = retrain
        return self._json("POST", f"/v1/datasets/{dataset_id}/versions", json=body)

    def dataset_changes(self, dataset_id: str) -> Json:
        return self._json("GET", f"/v1/datasets/{dataset_id}/changes")

    def lineage(self, dataset_id: str) -> Json:
        return self._json("GET", f"/v1/datasets/{dataset_id}/lineage")

    def catalog(self) -> Json:
        return self._json("GET", "/v1/catalog")

    # Plumbing

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else {}

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ConnectionFailed(f"cannot reach the noisyfit API at {self.base_url}: {error}") from None
        if response.is_error:
            raise ApiError.from_response(response)
        return response


def _event(message: ServerSentEvent) -> Json:
    try:
        event = json.loads(message.data)
    except ValueError:
        event = {"data": message.data}
    if not isinstance(event, dict):
        event = {"data": event}
    if "type" not in event and message.event != "message":
        event["type"] = message.event
    return event
