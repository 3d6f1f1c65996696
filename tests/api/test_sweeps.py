"""/v1/sweeps: a grid becomes jobs all or nothing; status, table, formats, plot and cancel follow the jobs."""

import csv
import io
import math
import secrets
import threading

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.main import create_app
from shared import jobs
from shared.db import get_engine
from shared.models import JobStatus
from shared.settings import Settings
from shared.spec import SpecError
from shared.stream import get_stream
from shared.sweep_service import derive_status
from shared.sweeps import kendall_tau_b, spec_bytes

BASE = {"dataset": "mnist", "noise": {"type": "symmetric", "rate": 0.2}, "epochs": 2}
GRID = {"loss": ["ce", "nce+rce"], "noise.rate": [0.4], "seed": [0, 1, 2]}


def post_sweep(client: TestClient, headers: dict, **body) -> dict:
    response = client.post("/v1/sweeps", json={"base": BASE, **body}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def finish(settings: Settings, job_id: str, status: JobStatus, accuracy: float | None = None,
           val: float | None = None) -> None:
    """What a worker does: take the job, then end it (with a result when it succeeded)."""
    with Session(get_engine(settings.database_url)) as session:
        assert jobs.start_attempt(session, job_id, "test-worker", settings)
        if status != JobStatus.running:
            result = None if accuracy is None else {"final_test_accuracy": accuracy, "best_test_accuracy": accuracy,
                                                    "final_val_accuracy": val}
            assert jobs.finish(session, job_id, "test-worker", status, settings, result=result)


def test_a_grid_becomes_one_queued_job_per_cell_with_the_dotted_fields_set(client: TestClient, user_headers):
    grid = {"loss": ["ce", "gce"], "noise.rate": [0.2, 0.4], "seed": [0, 1]}
    sweep = post_sweep(client, user_headers, grid=grid)

    assert sweep["id"].startswith("sw_") and sweep["status"] == "queued" and sweep["total"] == 8
    assert sweep["counts"]["queued"] == 8 and sweep["grid"] == grid and sweep["base"] == BASE
    specs = []
    for job_id in sweep["jobs"]:
        job = client.get(f"/v1/jobs/{job_id}", headers=user_headers).json()
        assert job["sweep_id"] == sweep["id"] and job["status"] == "queued"
        specs.append((job["spec"]["loss"], job["spec"]["noise"]["rate"], job["spec"]["seed"]))
        assert job["spec"]["noise"]["type"] == "symmetric" and job["spec"]["epochs"] == 2
    assert specs == [(l, r, s) for l in ("ce", "gce") for r in (0.2, 0.4) for s in (0, 1)], "in grid order"
    assert [row["cell"] for row in sweep["table"]] == [
        {"loss": l, "noise.rate": r} for l in ("ce", "gce") for r in (0.2, 0.4)]
    assert all(row["n"] == 0 and row["mean"] is None and len(row["runs"]) == 2 for row in sweep["table"])
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=user_headers).json() == sweep


def test_one_bad_cell_refuses_the_whole_sweep_naming_the_cell_and_field(client: TestClient, user_headers):
    grid = {"loss": ["ce", "nce+rce"], "noise.rate": [0.4, 0.95], "seed": [0]}
    response = client.post("/v1/sweeps", json={"base": BASE, "grid": grid}, headers=user_headers)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_spec" and error["field"] == "cells[1].noise.rate"
    assert "cell 1 of 4 (loss=ce, noise.rate=0.95, seed=0)" in error["message"] and "below 0.9" in error["message"]
    assert client.get("/v1/jobs", headers=user_headers).json()["jobs"] == []
    assert client.get("/v1/sweeps", headers=user_headers).json()["sweeps"] == []


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"grid": {"lossy": ["ce"]}}, "grid.lossy", "not a field of the job spec"),
    ({"grid": {"loss": []}}, "grid.loss", "non-empty list"),
    ({}, "grid", "a grid"),
    ({"preset": "table9"}, "preset", "table2"),
    ({"grid": {"loss": ["ce"]}, "seeds": [0]}, "seeds", '"seed": [0, 1, 2]'),
    ({"preset": "alpha-beta", "seeds": [0]}, "cells[0].beta", "single term"),  # the base's loss is ce
])
def test_a_grid_that_cannot_expand_is_refused_before_anything_is_stored(
        client: TestClient, user_headers, body, field, words):
    response = client.post("/v1/sweeps", json={"base": BASE, **body}, headers=user_headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and words in error["message"]
    assert client.get("/v1/jobs", headers=user_headers).json()["jobs"] == []


def test_a_preset_expands_to_the_papers_grid_over_the_given_seeds(client: TestClient, user_headers):
    sweep = post_sweep(client, user_headers, preset="table2", seeds=[7])
    assert sweep["total"] == 5 * 8 and sweep["grid"]["seed"] == [7]
    assert sweep["grid"]["noise.type"] == ["symmetric"] and sweep["grid"]["noise.rate"] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert len(sweep["table"]) == 40 and {row["cell"]["loss"] for row in sweep["table"]} >= {"ce", "nce+rce", "nfl+mae"}


def test_a_sweep_larger_than_the_active_job_limit_is_refused_whole(client: TestClient, user_headers, settings):
    client.post("/v1/jobs", json=BASE, headers=user_headers)
    seeds = list(range(settings.max_active_jobs_per_user))  # one more than the room left
    response = client.post("/v1/sweeps", json={"base": BASE, "grid": {"seed": seeds}}, headers=user_headers)

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "too_many_active_jobs" and error["field"] == "grid"
    assert f"has {len(seeds)} jobs" in error["message"] and f"only {len(seeds) - 1} more" in error["message"]
    assert len(client.get("/v1/jobs", headers=user_headers).json()["jobs"]) == 1
    assert client.get("/v1/sweeps", headers=user_headers).json()["sweeps"] == []


def test_the_table_is_mean_and_sample_std_of_the_succeeded_runs(client: TestClient, user_headers, settings):
    sweep = post_sweep(client, user_headers, grid=GRID)
    ce, apl = sweep["jobs"][:3], sweep["jobs"][3:]
    for job_id, accuracy in zip(ce, (0.80, 0.82, 0.84)):
        finish(settings, job_id, JobStatus.succeeded, accuracy)
    finish(settings, apl[0], JobStatus.succeeded, 0.90)
    finish(settings, apl[1], JobStatus.succeeded, 0.94)
    finish(settings, apl[2], JobStatus.failed)

    got = client.get(f"/v1/sweeps/{sweep['id']}", headers=user_headers).json()

    assert got["status"] == "partial"
    assert got["counts"] == {"queued": 0, "running": 0, "succeeded": 5, "failed": 1, "cancelled": 0}
    rows = {row["cell"]["loss"]: row for row in got["table"]}
    assert rows["ce"]["n"] == 3 and rows["ce"]["mean"] == pytest.approx(0.82)
    assert rows["ce"]["std"] == pytest.approx(0.02)  # sqrt((0.02² + 0 + 0.02²) / (3 - 1))
    assert rows["nce+rce"]["n"] == 2 and rows["nce+rce"]["mean"] == pytest.approx(0.92)
    assert rows["nce+rce"]["std"] == pytest.approx(math.sqrt(2 * 0.02**2 / 1))
    assert [run["status"] for run in rows["nce+rce"]["runs"]] == ["succeeded", "succeeded", "failed"]

    table = client.get(f"/v1/sweeps/{sweep['id']}/table", headers=user_headers)
    assert table.headers["content-type"] == "application/json" and table.json() == got["table"]

    as_csv = client.get(f"/v1/sweeps/{sweep['id']}/table", params={"format": "csv"}, headers=user_headers)
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    lines = list(csv.reader(io.StringIO(as_csv.text)))
    assert lines[0] == ["loss", "noise.rate", "mean_accuracy_fraction", "std_accuracy_fraction", "n", "runs",
                        "val_mean_accuracy_fraction", "val_std_accuracy_fraction", "best_by_validation"]
    assert lines[1][:2] == ["ce", "0.4"] and float(lines[1][2]) == pytest.approx(0.82) and lines[1][4:6] == ["3", "3"]
    assert lines[2][:2] == ["nce+rce", "0.4"] and float(lines[2][3]) == pytest.approx(0.028284271) and lines[2][4:6] == ["2", "3"]

    as_md = client.get(f"/v1/sweeps/{sweep['id']}/table", params={"format": "markdown"}, headers=user_headers)
    assert as_md.headers["content-type"] == "text/markdown; charset=utf-8"
    assert as_md.text.splitlines() == [
        "| loss \\ noise.rate | 0.4 |",
        "| --- | --- |",
        "| ce | 82.00 ± 2.00 |",
        "| nce+rce | **92.00 ± 2.83** |",
    ]
    bad = client.get(f"/v1/sweeps/{sweep['id']}/table", params={"format": "xlsx"}, headers=user_headers)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "format"


def test_a_select_sweep_recommends_the_loss_and_weights_of_the_best_noisy_validation(
        client: TestClient, user_headers, settings):
    base = {"dataset": "mnist", "noise": {"type": "symmetric", "rate": 0.4}, "train_size": 500}
    response = client.post("/v1/sweeps", json={"base": base, "preset": "select", "seeds": [0]}, headers=user_headers)
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert sweep["total"] == 14 and sweep["base"] == {**base, "epochs": 10}, "the preset's short budget"
    assert sweep["best"] is None and sweep["recommendation"] is None and sweep["validation_test_kendall_tau"] is None
    # Noisy validation prefers nce+rce at α=1, β=10; the clean test set would pick sce at α=6, β=0.1.
    for index, job_id in enumerate(sweep["jobs"]):
        spec = client.get(f"/v1/jobs/{job_id}", headers=user_headers).json()["spec"]
        assert spec["validation_split"] == 0.2 and spec["epochs"] == 10
        setting = (spec["loss"], spec["alpha"], spec["beta"])
        val = 0.7 if setting == ("nce+rce", 1.0, 10.0) else 0.5 + index / 100
        test = 0.95 if setting == ("sce", 6.0, 0.1) else 0.6 + index / 100
        finish(settings, job_id, JobStatus.succeeded, test, val)

    got = client.get(f"/v1/sweeps/{sweep['id']}", headers=user_headers).json()
    chosen = got["recommendation"]
    assert (chosen["loss"], chosen["alpha"], chosen["beta"]) == ("nce+rce", 1.0, 10.0)
    assert chosen["val_mean"] == pytest.approx(0.7) and chosen["n"] == 1
    assert got["best"]["by"] == "validation" and got["best"]["cell"] == chosen["cell"]
    ce = next(row for row in got["table"] if row["cell"]["loss"] == "ce")
    assert ce["cell"] == {"loss": "ce", "alpha": None, "beta": None, "validation_split": 0.2} and ce["n"] == 1
    assert ce["resolved"]["alpha"] == 1.0 and ce["val_mean"] == pytest.approx(0.5)
    pairs = [(row["val_mean"], row["mean"]) for row in got["table"]]
    assert got["validation_test_kendall_tau"] == pytest.approx(kendall_tau_b(*map(list, zip(*pairs))))
    assert client.get(f"/v1/sweeps/{sweep['id']}/table", headers=user_headers).json() == got["table"]
    markdown = client.get(f"/v1/sweeps/{sweep['id']}/table", params={"format": "markdown"}, headers=user_headers).text
    assert "recommended: nce+rce, alpha 1, beta 10 (noisy validation 70.00%" in markdown
    as_csv = client.get(f"/v1/sweeps/{sweep['id']}/table", params={"format": "csv"}, headers=user_headers).text
    marked = [line for line in csv.DictReader(io.StringIO(as_csv)) if line["best_by_validation"] == "1"]
    assert [(m["loss"], m["alpha"], m["beta"]) for m in marked] == [("nce+rce", "1.0", "10.0")]


def test_the_plot_is_a_png(client: TestClient, user_headers, settings):
    sweep = post_sweep(client, user_headers, grid={"loss": ["ce"], "noise.rate": [0.2, 0.4], "seed": [0]})
    finish(settings, sweep["jobs"][0], JobStatus.succeeded, 0.9)
    response = client.get(f"/v1/sweeps/{sweep['id']}/plot.png", headers=user_headers)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_cancel_stops_every_unfinished_job_and_keeps_the_finished(client: TestClient, user_headers, settings):
    sweep = post_sweep(client, user_headers, grid={"seed": [0, 1, 2, 3]})
    done, running, *waiting = sweep["jobs"]
    finish(settings, done, JobStatus.succeeded, 0.9)
    finish(settings, running, JobStatus.running)

    response = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=user_headers)

    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["counts"] == {"queued": 0, "running": 1, "succeeded": 1, "failed": 0, "cancelled": 2}
    assert cancelled["status"] == "running", "until the running job's worker stops"
    assert all(client.get(f"/v1/jobs/{j}", headers=user_headers).json()["status"] == "cancelled" for j in waiting)
    assert client.get(f"/v1/jobs/{running}", headers=user_headers).json()["cancel_requested"] is True
    with Session(get_engine(settings.database_url)) as session:
        assert jobs.finish(session, running, "test-worker", JobStatus.cancelled, settings)
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=user_headers).json()["status"] == "partial"
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=user_headers).status_code == 200, "twice is fine"


def test_another_users_sweep_answers_404_everywhere(client: TestClient, user_headers, other_user_headers):
    sweep = post_sweep(client, user_headers, grid={"seed": [0]})
    base = f"/v1/sweeps/{sweep['id']}"
    for method, path in [("GET", base), ("GET", f"{base}/table"), ("GET", f"{base}/plot.png"), ("POST", f"{base}/cancel")]:
        response = client.request(method, path, headers=other_user_headers)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
    assert client.get("/v1/sweeps", headers=other_user_headers).json()["sweeps"] == []
    listed = client.get("/v1/sweeps", headers=user_headers).json()["sweeps"]
    assert [s["id"] for s in listed] == [sweep["id"]] and listed[0]["counts"]["queued"] == 1
    assert client.get(f"/v1/jobs/{sweep['jobs'][0]}", headers=other_user_headers).status_code == 404
    assert client.get("/v1/sweeps/sw_0", headers=user_headers).status_code == 404


@pytest.mark.parametrize(("counts", "status"), [
    ({"queued": 3}, "queued"),
    ({"queued": 2, "succeeded": 1}, "running"),
    ({"running": 1, "cancelled": 2}, "running"),
    ({"succeeded": 3}, "succeeded"),
    ({"succeeded": 1, "failed": 1, "cancelled": 1}, "partial"),
    ({"failed": 1, "cancelled": 2}, "failed"),
    ({"cancelled": 3}, "cancelled"),
])
def test_the_status_of_a_sweep_follows_its_jobs(counts, status):
    assert derive_status({str(s): 0 for s in JobStatus} | counts) == status


def test_a_failure_midway_removes_the_jobs_already_created_and_the_sweep(session: Session, db_settings: Settings):
    from sqlmodel import select

    from shared.models import Job, Sweep, User
    from shared.sweep_service import create_sweep

    user = User(name="midway")
    session.add(user)
    session.commit()
    sent: list[str] = []

    def enqueue(job_id: str) -> None:
        if len(sent) == 2:
            raise ConnectionError("broker down")
        sent.append(job_id)

    with pytest.raises(jobs.QueueUnavailable):
        create_sweep(session, user.id, BASE, db_settings, grid={"seed": [0, 1, 2, 3]}, enqueue=enqueue)
    assert len(sent) == 2
    assert session.exec(select(Job).where(Job.user_id == user.id)).all() == []
    assert session.exec(select(Sweep).where(Sweep.user_id == user.id)).all() == []
    stream = get_stream(db_settings)
    assert not any(stream.client.exists(stream.key(job_id)) for job_id in sent), "the announced streams are gone"


def test_a_junk_base_is_refused_at_the_base_before_any_cell_is_built(client: TestClient, user_headers):
    junk = list(range(20_000))
    response = client.post("/v1/sweeps", json={"base": {**BASE, "junk": junk}, "grid": {"seed": list(range(1000))}},
                           headers=user_headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "base.junk" and error["message"].startswith("the base spec:")
    assert client.get("/v1/sweeps", headers=user_headers).json()["sweeps"] == []


def test_a_sweep_whose_specs_together_exceed_the_limit_is_refused_before_expanding(
        settings: Settings, make_user):
    small = settings.model_copy(update={"max_sweep_bytes": 50_000})
    headers = make_user("big-sweeps")
    matrix = [[0.9] + [0.1 / 9] * 9 if i == 0 else [0.1 / 9] * i + [0.9] + [0.1 / 9] * (9 - i) for i in range(10)]
    base = {**BASE, "noise": {"type": "transition", "matrix": matrix}}
    with TestClient(create_app(small)) as client:
        refused = client.post("/v1/sweeps", json={"base": base, "grid": {"seed": list(range(100))}}, headers=headers)
        fits = client.post("/v1/sweeps", json={"base": base, "grid": {"seed": list(range(5))}}, headers=headers)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == "grid" and "100 specs take" in error["message"] and "50000" in error["message"]
    assert fits.status_code == 201, fits.text
    assert spec_bytes(base, {"seed": list(range(100))}) > 50_000 >= spec_bytes(base, {"seed": list(range(5))})


@pytest.mark.parametrize("kind", ["limit", "bad cell"])
def test_a_refused_sweep_leaves_no_row_and_no_stream(db_settings: Settings, kind: str):
    """Two sweeps of one user race for the last room under the active-job limit (or one has a
    bad last cell): the refused one leaves no sweep, no job and no Redis stream behind."""
    from sqlmodel import select

    from shared.models import Job, Sweep, User
    from shared.sweep_service import create_sweep

    settings = db_settings.model_copy(update={"max_active_jobs_per_user": 12,
                                              "redis_key_prefix": f"{db_settings.redis_key_prefix}{secrets.token_hex(3)}:"})
    with Session(get_engine(settings.database_url)) as session:
        user = User(name="racer")
        session.add(user)
        session.commit()
        user_id = user.id
    grids = [{"seed": list(range(8))}, {"seed": list(range(8, 16))}]
    if kind == "bad cell":
        grids = [{"seed": [0, 1, 2]}, {"noise.rate": [0.2, 0.4, 0.95]}]  # 0.95: symmetric noise over 10 classes
    outcomes: list[str | BaseException] = [None, None]
    barrier = threading.Barrier(2)

    def post(i: int) -> None:
        with Session(get_engine(settings.database_url)) as session:
            barrier.wait()
            try:
                outcomes[i] = create_sweep(session, user_id, BASE, settings, grid=grids[i]).sweep.id
            except (jobs.LimitError, SpecError) as exc:
                outcomes[i] = exc

    threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    created = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(created) == 1 and len(refused) == 1, outcomes
    assert isinstance(refused[0], jobs.LimitError if kind == "limit" else SpecError)
    with Session(get_engine(settings.database_url)) as session:
        assert session.exec(select(Sweep.id).where(Sweep.user_id == user_id)).all() == created
        kept = session.exec(select(Job.id, Job.sweep_id).where(Job.user_id == user_id)).all()
    assert {sweep_id for _, sweep_id in kept} == set(created)
    stream = get_stream(settings)
    keys = set(stream.client.scan_iter(match=f"{settings.redis_key_prefix}*:events"))
    assert keys == {stream.key(job_id) for job_id, _ in kept}, "a stream for each created job, none other"
