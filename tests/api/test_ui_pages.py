"""The dashboard's compare, sweep, submit and data-set pages as the server answers them (the
sign-in, jobs list and job page are in test_ui.py; tests/e2e/ui/ drives all of them in a browser)."""

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared import compare
from shared.jobs import METRICS_FILE
from shared.settings import Settings
from shared.store import artifact_key, get_store
from shared.stream import get_stream
from tests.conftest import Headers, ui_sign_in

SPEC = {"dataset": "mnist", "noise": {"type": "symmetric", "rate": 0.4}, "loss": "nce+rce", "epochs": 2,
        "train_size": 500, "lr": 0.05}
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}


def key_of(headers: Headers) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def signed_in(app, user_headers: Headers) -> TestClient:
    with TestClient(app, headers=HTML) as browser:
        yield ui_sign_in(browser, key_of(user_headers))


def submit(client: TestClient, headers: Headers, **changes: Any) -> str:
    response = client.post("/v1/jobs", json={**SPEC, **changes}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def epoch_lines(epochs: range, **figures: Callable[[int], float]) -> bytes:
    return "".join(json.dumps({"type": "epoch", "epoch": e, **{k: f(e) for k, f in figures.items()}}) + "\n"
                   for e in epochs).encode()


# ---------------------------------------------------------------- compare


def test_differing_fields_compare_values_not_spellings():
    specs = [{"a": 1, "noise": {"rate": 0.4, "type": "symmetric"}, "flag": True, "only_here": 1},
             {"a": 1.0, "noise": {"rate": 0.2, "type": "symmetric"}, "flag": 1},
             {"a": 1, "noise": {"rate": 0.4, "type": "symmetric"}, "flag": True}]
    assert compare.differing_fields(specs) == ["noise.rate", "flag", "only_here"]
    assert compare.differing_fields(specs[:1] * 3) == []


def test_curves_keep_the_last_of_a_repeated_epoch_and_thin_long_runs_evenly():
    events = [{"type": "epoch", "epoch": e, "test_acc": e / 1000} for e in range(1, 601)]
    events += [{"type": "step", "epoch": 3, "loss": 9.0}, {"type": "epoch", "epoch": 2, "test_acc": 0.5}]
    curves = compare.curves_of("job_1", events, max_points=100)
    assert curves.thinned and len(curves.epochs) == 100 and curves.epochs[0] == 1 and curves.epochs[-1] == 600
    gaps = {b - a for a, b in zip(curves.epochs, curves.epochs[1:])}
    assert gaps <= {6, 7}  # evenly spread
    assert curves.values["test_acc"][1] == pytest.approx(curves.epochs[1] / 1000)
    assert set(curves.values) == {"test_acc"}  # figures no event has are left out
    short = compare.curves_of("job_2", events[:3] + events[-2:])
    assert short.epochs == [1, 2, 3] and short.values["test_acc"] == [0.001, 0.5, 0.003] and not short.thinned


def test_aligned_curves_share_epochs_with_gaps_as_null():
    a = compare.curves_of("job_a", [{"type": "epoch", "epoch": e, "test_acc": 0.1 * e} for e in (1, 2, 3)])
    b = compare.curves_of("job_b", [{"type": "epoch", "epoch": e, "test_acc": 0.2} for e in (1, 2)])
    aligned = compare.align([a, b])
    assert aligned["epochs"] == [1, 2, 3]
    assert [job["test_acc"] for job in aligned["jobs"]] == [[0.1, 0.2, 0.3], [0.2, 0.2, None]]
    assert len(compare.align([a, b], most=2)["epochs"]) == 2


@pytest.mark.parametrize("ids", [[], ["job_1"], ["job_1,job_1"], [f"job_{i:x}" for i in range(201)], ["nope,job_1"]])
def test_a_compare_needs_2_to_200_job_ids(ids: list[str]):
    with pytest.raises(compare.SpecError) as refused:
        compare.parse_ids(ids)
    assert refused.value.field == "ids"


def test_the_compare_page_lists_exactly_the_fields_that_differ(signed_in: TestClient, client: TestClient,
                                                               user_headers: Headers):
    first = submit(client, user_headers)
    same_but_seed = submit(client, user_headers, seed=3)
    other_rate = submit(client, user_headers, noise={"type": "symmetric", "rate": 0.2})
    page = signed_in.get(f"/ui/compare?ids={first}&ids={same_but_seed}")
    assert page.status_code == 200, page.text
    assert re.findall(r'data-field="([^"]+)"', page.text) == ["seed"]
    page = signed_in.get(f"/ui/compare?ids={first},{same_but_seed},{other_rate}").text
    assert re.findall(r'data-field="([^"]+)"', page) == ["noise.rate", "seed"]
    assert re.findall(r'<tr data-job="(job_[0-9a-f]+)"', page) == [first, same_but_seed, other_rate]
    assert "the 1 field" not in page and "fields every job shares" in page


def test_the_compare_metrics_read_the_stored_file_and_else_the_stream(signed_in: TestClient, client: TestClient,
                                                                     user_headers: Headers, settings: Settings):
    stored, streamed, empty = (submit(client, user_headers) for _ in range(3))
    get_store(settings).put_bytes(artifact_key(stored, METRICS_FILE),
                                  epoch_lines(range(1, 4), test_acc=lambda e: e / 10, memorized=lambda e: 0.05))
    get_stream(settings).publish(streamed, {"type": "step", "epoch": 1, "loss": 2.0},
                                 {"type": "epoch", "epoch": 1, "test_acc": 0.123456, "train_loss": 1.5})
    answer = signed_in.get(f"/ui/compare/metrics?ids={stored},{streamed},{empty}", headers=JSON)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["epochs"] == [1, 2, 3] and data["active"] is True
    by_id = {job["id"]: job for job in data["jobs"]}
    assert by_id[stored]["test_acc"] == [0.1, 0.2, 0.3] and by_id[stored]["memorized"] == [0.05] * 3
    assert by_id[streamed]["test_acc"] == [0.1235, None, None] and by_id[streamed]["train_loss"] == [1.5, None, None]
    assert set(by_id[empty]) == {"id", "thinned"}


def test_a_compare_of_a_sweep_takes_its_jobs(signed_in: TestClient, client: TestClient, user_headers: Headers):
    sweep = client.post("/v1/sweeps", json={"base": SPEC, "grid": {"seed": [0, 1, 2]}}, headers=user_headers).json()
    page = signed_in.get(f"/ui/compare?sweep={sweep['id']}")
    assert page.status_code == 200, page.text
    assert re.findall(r'<tr data-job="(job_[0-9a-f]+)"', page.text) == sweep["jobs"]
    assert re.findall(r'data-field="([^"]+)"', page.text) == ["seed"]


def test_another_users_jobs_and_sweeps_are_not_found_in_a_compare(signed_in: TestClient, client: TestClient,
                                                                  user_headers: Headers, make_user):
    ours = submit(client, user_headers)
    bob = make_user("bob")
    theirs = submit(client, bob)
    sweep = client.post("/v1/sweeps", json={"base": SPEC, "grid": {"seed": [0, 1]}}, headers=bob).json()["id"]
    for path in (f"/ui/compare?ids={ours},{theirs}", f"/ui/compare/metrics?ids={ours},{theirs}",
                 f"/ui/compare?sweep={sweep}"):
        assert signed_in.get(path).status_code == 404, path
    assert signed_in.get(f"/ui/compare?ids={ours}").status_code == 422
