"""Deleting a data set while jobs are submitted on it (or versions made of it), as real
concurrent requests to a real uvicorn, on PostgreSQL and on SQLite: one side wins cleanly,
every time.

Either the delete wins (204) and every submission is a 422 naming `dataset`, or some job
wins (201) and the delete is a 409 naming it while the data set stays; never a deleted data
set with a job queued on it (which would fail later, on a worker).
"""

import io
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.reliability.conftest import Stack

ROUNDS = 8
SUBMITTERS = 3


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def race_stack(request: pytest.FixtureRequest, make_stack: Callable[..., Stack],
               tmp_path_factory: pytest.TempPathFactory) -> Stack:
    if request.param == "postgresql":
        return make_stack()
    database: Path = tmp_path_factory.mktemp("race-sqlite") / "noisyfit.db"
    return make_stack(env={"NOISYFIT_DATABASE_URL": f"sqlite:///{database}"})


def tiny_npz() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), y_train=np.arange(20) % 2,
             x_test=rng.integers(0, 256, (4, 8, 8), dtype=np.uint8), y_test=np.arange(4) % 2)
    return buffer.getvalue()


def race(url: str, headers: dict[str, str],
         requests: dict[str, tuple[str, str, dict | None]]) -> dict[str, httpx.Response]:
    """Send every request (key → method, path, JSON body) at once, each from its own thread and
    client, released together by a barrier; the answers by key."""
    answers: dict[str, httpx.Response] = {}
    barrier = threading.Barrier(len(requests))

    def send(key: str, method: str, path: str, body: dict | None) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            barrier.wait()
            answers[key] = http.request(method, path, json=body)

    threads = [threading.Thread(target=send, args=(key, *request)) for key, request in requests.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return answers


def test_delete_racing_submissions_lets_one_side_win(race_stack: Stack) -> None:
    owner = race_stack.client("racer")
    headers = dict(owner.headers)
    wins: Counter[str] = Counter()
    for _ in range(ROUNDS):
        uploaded = owner.post("/v1/datasets", data={"name": "raced"}, files={"file": ("d.npz", tiny_npz())})
        assert uploaded.status_code == 201, uploaded.text
        dataset = uploaded.json()["id"]
        answers = race(race_stack.url, headers, {
            "delete": ("DELETE", f"/v1/datasets/{dataset}", None),
            **{f"job{i}": ("POST", "/v1/jobs", {"dataset": dataset, "loss": "ce", "epochs": 1, "seed": i})
               for i in range(SUBMITTERS)},
        })
        delete = answers.pop("delete")
        created = [r.json()["id"] for r in answers.values() if r.status_code == 201]
        refused = [r for r in answers.values() if r.status_code != 201]
        assert all(r.status_code == 422 and r.json()["error"]["field"] == "dataset" for r in refused), \
            [r.text for r in refused]
        still_there = owner.get(f"/v1/datasets/{dataset}").status_code
        if delete.status_code == 204:
            assert created == [] and still_there == 404, (created, still_there)
            wins["delete"] += 1
        else:
            assert delete.status_code == 409, delete.text
            assert created and any(job_id in delete.json()["error"]["message"] for job_id in created), delete.text
            assert still_there == 200
            wins["jobs"] += 1
        for job_id in created:
            assert owner.get(f"/v1/jobs/{job_id}").json()["spec"]["dataset"] == dataset
            owner.post(f"/v1/jobs/{job_id}/cancel")
    assert sum(wins.values()) == ROUNDS, wins


def test_delete_racing_new_versions_lets_one_side_win(race_stack: Stack) -> None:
    """Versions of a data set being made while it is deleted: either the delete wins and every
    version is a 404 that left nothing, or versions win and the delete is a 409 naming one."""
    owner = race_stack.client("versioner")
    headers = dict(owner.headers)
    wins: Counter[str] = Counter()
    for _ in range(ROUNDS):
        uploaded = owner.post("/v1/datasets", data={"name": "raced"}, files={"file": ("d.npz", tiny_npz())})
        dataset = uploaded.json()["id"]
        answers = race(race_stack.url, headers, {
            "delete": ("DELETE", f"/v1/datasets/{dataset}", None),
            **{f"v{i}": ("POST", f"/v1/datasets/{dataset}/versions", {"changes": [[i, 1]]}) for i in range(SUBMITTERS)},
        })
        delete = answers.pop("delete")
        made = [r.json()["id"] for r in answers.values() if r.status_code == 201]
        assert all(r.status_code == 404 for r in answers.values() if r.status_code != 201), \
            [r.text for r in answers.values()]
        listed = [d["id"] for d in owner.get("/v1/datasets").json()["datasets"]]
        if delete.status_code == 204:
            assert made == [] and listed == [], (made, listed)
            wins["delete"] += 1
        else:
            assert delete.status_code == 409 and any(v in delete.json()["error"]["message"] for v in made), delete.text
            assert sorted(listed) == sorted([dataset, *made])
            wins["versions"] += 1
        for dataset_id in [*made, dataset]:
            owner.delete(f"/v1/datasets/{dataset_id}")
    assert sum(wins.values()) == ROUNDS, wins


LIMIT = 5
CONCURRENT_SUBMISSIONS = 40


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def limited_stack(request: pytest.FixtureRequest, make_stack: Callable[..., Stack],
                  tmp_path_factory: pytest.TempPathFactory) -> Stack:
    env = {"NOISYFIT_MAX_ACTIVE_JOBS_PER_USER": str(LIMIT)}
    if request.param == "sqlite":
        env["NOISYFIT_DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('limit-sqlite') / 'noisyfit.db'}"
    return make_stack(env=env)


def test_the_active_job_limit_holds_under_concurrent_submissions(limited_stack: Stack) -> None:
    """The count and the insert happen under the user's lock: 40 submissions at once never
    leave more than the limit queued, and every other answer is the 429 that says so."""
    user = limited_stack.client("crowd")
    headers = dict(user.headers)
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(CONCURRENT_SUBMISSIONS)

    def submit(seed: int) -> None:
        with httpx.Client(base_url=limited_stack.url, headers=headers, timeout=120) as http:
            barrier.wait()
            answers.append(http.post("/v1/jobs", json={"dataset": "fashion-mnist", "epochs": 1, "seed": seed}))

    threads = [threading.Thread(target=submit, args=(seed,)) for seed in range(CONCURRENT_SUBMISSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    codes = Counter(r.status_code for r in answers)
    assert codes == {201: LIMIT, 429: CONCURRENT_SUBMISSIONS - LIMIT}, codes
    assert all(r.json()["error"]["code"] == "too_many_active_jobs" for r in answers if r.status_code == 429)
    listed = user.get("/v1/jobs", params={"limit": 200}).json()["jobs"]
    assert len([job for job in listed if job["status"] in ("queued", "running")]) == LIMIT
