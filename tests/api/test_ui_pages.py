"""The dashboard's compare, sweep, submit and data-set pages as the server answers them (the
sign-in, jobs list and job page are in test_ui.py; tests/e2e/ui/ drives all of them in a browser)."""

import io
import json
import random
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import update
from sqlmodel import Session

from shared import compare
from shared.db import get_engine
from shared.jobs import METRICS_FILE
from shared.models import Job, JobStatus
from shared.settings import Settings
from shared.store import artifact_key, get_store
from shared.stream import get_stream
from tests.conftest import Headers, csrf_token, ui_sign_in

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
    assert [job["thinned"] for job in aligned["jobs"]] == [False, False]
    narrow = compare.align([a, b], most=2)
    assert narrow["epochs"] == [1, 3] and [job["thinned"] for job in narrow["jobs"]] == [True, True]


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
    assert "tick them on" in signed_in.get("/ui/compare").text  # no ids: how to choose


# ---------------------------------------------------------------- sweeps


def finish_jobs(settings: Settings, results: dict[str, dict[str, Any]]) -> None:
    """Mark jobs succeeded with these results, as a worker would."""
    with Session(get_engine(settings.database_url)) as session:
        for job_id, result in results.items():
            session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.succeeded, result=result))
        session.commit()


GRID = {"loss": ["ce", "nce+rce"], "noise.rate": [0.4, 0.2], "seed": [0, 1]}


@pytest.fixture
def finished_sweep(client: TestClient, user_headers: Headers, settings: Settings) -> dict[str, Any]:
    """A 2 × 2 grid over two seeds, seven of its eight jobs succeeded with random accuracies."""
    sweep = client.post("/v1/sweeps", json={"base": {**SPEC, "validation_split": 0.2}, "grid": GRID},
                        headers=user_headers).json()
    rng = random.Random(sweep["id"])
    finish_jobs(settings, {job_id: {"final_test_accuracy": rng.uniform(0.3, 0.9), "final_val_accuracy": rng.uniform(0.2, 0.8)}
                           for job_id in sweep["jobs"][:-1]})
    return sweep


def grid_cells(html: str) -> list[dict[str, str]]:
    return [dict(re.findall(r'(data-[\w-]+)="([^"]*)"', attrs)) | {"text": " ".join(re.sub(r"<[^>]+>", " ", body).split())}
            for attrs, body in re.findall(r'<td class="cell[^"]*"([^>]*)>(.*?)</td>', html, re.S)]


def test_the_sweep_grid_shows_the_tables_figures_with_the_best_marked(signed_in: TestClient, client: TestClient,
                                                                     user_headers: Headers, finished_sweep):
    table = client.get(f"/v1/sweeps/{finished_sweep['id']}/table", headers=user_headers).json()
    best = client.get(f"/v1/sweeps/{finished_sweep['id']}", headers=user_headers).json()["best"]
    page = signed_in.get(f"/ui/sweeps/{finished_sweep['id']}")
    assert page.status_code == 200, page.text
    assert re.findall(r"data-value='([^']+)'", page.text) == ["0.4", "0.2"]  # the swept value, in the grid's order
    assert re.findall(r'<tr data-line="([^"]+)"', page.text) == ["ce", "nce+rce"]
    cells = grid_cells(page.text)
    assert len(cells) == len(table) == 4
    for cell, row in zip(cells, table):  # the table's order is the grid's: loss, then noise.rate
        assert float(cell["data-mean"]) == row["mean"] and float(cell["data-val-mean"]) == row["val_mean"]
        assert cell.get("data-std") == (repr(row["std"]) if row["std"] is not None else None)
        shown = f"{100 * row['mean']:.2f}" + (f" ± {100 * row['std']:.2f}" if row["std"] is not None else "")
        assert cell["text"].startswith(shown), (cell["text"], shown)
        assert f"{row['n']} of {len(row['runs'])} runs" in cell["text"]
        assert ("★" in cell["text"]) == (row["cell"] == best["cell"])
    assert best["by"] == "validation" and "by noisy validation" in page.text
    for row in table:  # a cell of two runs (seeds) leads to their curves compared
        assert f'href="/ui/compare?ids={"%2C".join(r["id"] for r in row["runs"])}"' in page.text


def test_the_sweeps_list_and_a_sweeps_downloads(signed_in: TestClient, client: TestClient, user_headers: Headers,
                                                finished_sweep):
    listed = signed_in.get("/ui/sweeps").text
    assert f'data-sweep="{finished_sweep["id"]}"' in listed and "7 / 8" in listed
    csv = signed_in.get(f"/ui/sweeps/{finished_sweep['id']}/table?format=csv")
    assert csv.status_code == 200 and csv.text == client.get(
        f"/v1/sweeps/{finished_sweep['id']}/table?format=csv", headers=user_headers).text
    assert "attachment" in csv.headers["content-disposition"]


def test_another_users_sweep_is_not_found(signed_in: TestClient, client: TestClient, make_user):
    theirs = client.post("/v1/sweeps", json={"base": SPEC, "grid": {"seed": [0, 1]}}, headers=make_user("bob")).json()
    for path in ("", "/table?format=csv"):
        assert signed_in.get(f"/ui/sweeps/{theirs['id']}{path}").status_code == 404, path
    assert signed_in.post(f"/ui/sweeps/{theirs['id']}/cancel", data={"csrf_token": csrf(signed_in)}).status_code == 404
    assert theirs["id"] not in signed_in.get("/ui/sweeps").text


def csrf(browser: TestClient, path: str = "/ui/jobs") -> str:
    return csrf_token(browser.get(path).text)


# ---------------------------------------------------------------- submit


def form_values(html: str) -> dict[str, str]:
    values = dict(re.findall(r'<input id="(\w+)" name="\w+" type="text"[^>]*?value="([^"]*)"', html, re.S))
    for name, options in re.findall(r'<select id="(\w+)" name="\w+".*?>(.*?)</select>', html, re.S):
        chosen = re.search(r'<option value="([^"]+)" selected', options)
        values[name] = chosen.group(1) if chosen else ""
    return values


def test_the_submit_form_shows_the_presets_and_the_formula(signed_in: TestClient):
    page = signed_in.get("/ui/submit")
    assert page.status_code == 200
    assert form_values(page.text)["dataset"] == "fashion-mnist" and "α · NCE + β · RCE" in page.text
    assert 'id="alpha-hint">preset: 1<' in page.text and 'id="beta-hint">preset: 10<' in page.text  # mnist family
    preset = signed_in.get("/ui/submit/preset?dataset=cifar100&loss=nce%2Brce&noise_type=symmetric&noise_rate=0.4",
                           headers=JSON).json()
    assert (preset["alpha"], preset["beta"], preset["epochs"]) == (10.0, 0.1, 200)
    single = signed_in.get("/ui/submit/preset?dataset=mnist&loss=gce&noise_type=none", headers=JSON).json()
    assert single["takes_beta"] is False and single["formula"][0].startswith("GCE")
    wrong = signed_in.get("/ui/submit/preset?dataset=mnist&loss=nce%2Bce&noise_type=none", headers=JSON).json()
    assert wrong["error"]["field"] == "loss" and "not robust" in wrong["error"]["message"]


@pytest.mark.parametrize(("field", "value", "says"), [
    ("noise_rate", "0.95", "rate"), ("epochs", "0", "greater than or equal to 1"), ("epochs", "ten", "whole number"),
    ("loss", "nce+nce", "twice"), ("alpha", "-1", "greater than 0"), ("train_size", "5", "at least 100"),
])
def test_a_refused_value_is_shown_at_its_field_with_the_values_kept(signed_in: TestClient, client: TestClient,
                                                                    user_headers: Headers, field: str, value: str,
                                                                    says: str):
    values = {"dataset": "mnist", "loss": "nce+rce", "noise_type": "symmetric", "noise_rate": "0.4", "alpha": "",
              "beta": "2", "epochs": "3", "train_size": "500", "validation_split": "0.1", "seed": "7", field: value}
    before = client.get("/v1/jobs", headers=user_headers).json()["jobs"]
    page = signed_in.post("/ui/submit", data={**values, "csrf_token": csrf(signed_in, "/ui/submit")},
                          follow_redirects=False)
    assert page.status_code == 422, page.text
    error = re.search(rf'<p class="field-error" id="{field}-error" data-error-for="{field}" role="alert">([^<]+)</p>',
                      page.text)
    assert error and says in error.group(1), page.text
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', page.text)
    assert form_values(page.text) == values
    assert client.get("/v1/jobs", headers=user_headers).json()["jobs"] == before


def test_a_submitted_form_makes_the_job_as_post_v1_jobs_would(signed_in: TestClient, client: TestClient,
                                                            user_headers: Headers):
    form = {"dataset": "mnist", "loss": "NCE+RCE", "noise_type": "asymmetric", "noise_rate": "0.3", "alpha": "",
            "beta": "", "epochs": "3", "train_size": "500", "validation_split": "0.1", "seed": "7"}
    refused = signed_in.post("/ui/submit", data=form, follow_redirects=False)
    assert refused.status_code == 403  # no CSRF token
    sent = signed_in.post("/ui/submit", data={**form, "csrf_token": csrf(signed_in, "/ui/submit")},
                          follow_redirects=False)
    assert sent.status_code == 303 and sent.headers["location"].startswith("/ui/jobs/job_")
    job = client.get(f"/v1/jobs/{sent.headers['location'].rsplit('/', 1)[1]}", headers=user_headers).json()
    expected = client.post("/v1/jobs", headers=user_headers, json={
        "dataset": "mnist", "loss": "nce+rce", "noise": {"type": "asymmetric", "rate": 0.3}, "epochs": 3,
        "train_size": 500, "validation_split": 0.1, "seed": 7}).json()
    assert job["spec"] == expected["spec"]
    copy = form_values(signed_in.get(f"/ui/submit?from={job['id']}").text)
    assert copy["loss"] == "nce+rce" and copy["noise_type"] == "asymmetric" and copy["epochs"] == "3"


# ---------------------------------------------------------------- data sets


def upload(client: TestClient, headers: Headers, labels: list[int], classes: int = 3, colour: bool = False) -> str:
    """An uploaded data set of random 12×12 images; its id."""
    rng = np.random.default_rng(len(labels))
    shape = (len(labels), 3, 12, 12) if colour else (len(labels), 12, 12)
    arrays = {"x_train": rng.integers(0, 256, shape, dtype=np.uint8), "y_train": np.array(labels),
              "x_test": rng.integers(0, 256, (classes, *shape[1:]), dtype=np.uint8), "y_test": np.arange(classes)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    response = client.post("/v1/datasets", data={"name": "dots"}, files={"file": ("dots.npz", buffer.getvalue())},
                           headers=headers)
    assert response.status_code == 201, response.text
    UPLOADED[response.json()["id"]] = arrays
    return response.json()["id"]


UPLOADED: dict[str, dict[str, np.ndarray]] = {}


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def counts_shown(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-label="Samples" data-count="(\d+)"', html)]


def test_an_uploads_page_counts_its_classes_and_shows_its_images(signed_in: TestClient, client: TestClient,
                                                                  user_headers: Headers):
    labels = [0] * 12 + [1] * 5 + [2] * 13
    ds = upload(client, user_headers, labels, colour=True)
    page = signed_in.get(f"/ui/datasets/{ds}")
    assert page.status_code == 200, page.text
    assert counts_shown(page.text) == [12, 5, 13]
    shown = [int(i) for i in re.findall(rf'src="/ui/datasets/{ds}/images/(\d+)"', page.text)]
    assert shown == [i for k in range(3) for i in [j for j, y in enumerate(labels) if y == k][:8]]
    image = signed_in.get(f"/ui/datasets/{ds}/images/13")
    assert image.headers["content-type"] == "image/png"
    assert (pixels(image.content) == UPLOADED[ds]["x_train"][13].transpose(1, 2, 0)).all()
    assert signed_in.get(f"/ui/datasets/{ds}/images/{len(labels)}").status_code == 404
    one_class = signed_in.get(f"/ui/datasets/{ds}?cls=1").text
    assert re.findall(rf'/ui/datasets/{ds}/images/(\d+)"', one_class) == ["12", "13", "14", "15", "16"]
    listed = signed_in.get("/ui/datasets").text
    assert f'data-dataset="{ds}"' in listed and 'data-dataset="fashion-mnist"' in listed


def test_a_versions_page_shows_its_own_labels_over_its_roots_images(signed_in: TestClient, client: TestClient,
                                                                    user_headers: Headers):
    labels = [0] * 11 + [1] * 10 + [2] * 10
    ds = upload(client, user_headers, labels)
    made = client.post(f"/v1/datasets/{ds}/versions", json={"changes": [[3, 2], [4, 1]], "drop": [0]},
                       headers=user_headers)
    assert made.status_code == 201, made.text
    version = made.json()["id"]
    page = signed_in.get(f"/ui/datasets/{version}").text
    assert counts_shown(page) == [8, 11, 11]
    assert f'href="/ui/datasets/{ds}"' in page and "2 relabelled, 1 dropped" in page
    first = signed_in.get(f"/ui/datasets/{version}/images/0").content  # the root's sample 1: sample 0 was dropped
    assert (pixels(first) == UPLOADED[ds]["x_train"][1]).all()
    assert f'href="/ui/datasets/{version}"' in signed_in.get(f"/ui/datasets/{ds}").text  # versions made from it


def test_a_builtin_data_sets_page_reads_the_hosts_copy(signed_in: TestClient):
    page = signed_in.get("/ui/datasets/fashion-mnist")
    assert page.status_code == 200
    counts = counts_shown(page.text)
    assert counts == [6000] * 10  # Fashion-MNIST's training set is balanced
    image = pixels(signed_in.get("/ui/datasets/fashion-mnist/images/0").content)
    assert image.shape == (28, 28) and image.dtype == np.uint8 and image.max() > 0
    assert "no copy" in signed_in.get("/ui/datasets/cifar10").text


def test_another_users_data_set_is_not_found(signed_in: TestClient, client: TestClient, make_user):
    theirs = upload(client, make_user("bob"), [0, 1, 2] * 10)
    for path in ("", "/images/0"):
        assert signed_in.get(f"/ui/datasets/{theirs}{path}").status_code == 404, path
    assert theirs not in signed_in.get("/ui/datasets").text
    assert signed_in.get("/ui/datasets/no-such-set").status_code == 404


# ---------------------------------------------------------------- mislabels


def trained_job(client: TestClient, headers: Headers, settings: Settings, dataset: str, rows: list[tuple],
                flagged: list[int] | None = None) -> str:
    """A job on `dataset` marked succeeded, with the artifacts a worker leaves: noisy_labels.npz
    (every sample trained on, with the labels of `rows`) and suspected_mislabels.csv of `rows`
    (index, noisy_label, predicted, confidence), ranked in their order."""
    job = submit(client, headers, dataset=dataset, noise={"type": "none", "rate": 0.0}, train_size=30)
    samples = UPLOADED[dataset]["y_train"].copy()
    for index, label, _, _ in rows:
        samples[index] = label
    header = "index,noisy_label,predicted,confidence,loss,rank" + (",self_confidence,margin,flagged" if flagged else "")
    lines = [header] + [f"{i},{y},{p},{c},{9 - rank},{rank}" + (f",0.1,-0.5,{flagged[rank - 1]}" if flagged else "")
                        for rank, (i, y, p, c) in enumerate(rows, 1)]
    store = get_store(settings)
    store.put_bytes(artifact_key(job, "suspected_mislabels.csv"), ("\n".join(lines) + "\n").encode())
    buffer = io.BytesIO()
    np.savez(buffer, noisy=samples, clean=UPLOADED[dataset]["y_train"], corrupted=samples != UPLOADED[dataset]["y_train"],
             train_indices=np.arange(len(samples)), val_indices=np.arange(0))
    store.put_bytes(artifact_key(job, "noisy_labels.npz"), buffer.getvalue())
    quality = {"noise_rate": {"estimate": 0.21, "low": 0.19, "high": 0.23}, "noise_rate_true": 0.2, "flagged": 9,
               "precision": 0.9, "recall": 0.88, "f1": 0.89} if flagged else None
    finish_jobs(settings, {job: {"final_test_accuracy": 0.5, "label_quality": quality}})
    return job


ROWS = [(4, 1, 0, 0.97), (12, 0, 1, 0.9), (7, 0, 0, 0.6), (25, 2, 1, 0.55), (13, 1, 1, 0.99)]


def suspects_shown(html: str) -> list[tuple[int, int, int]]:
    return [tuple(map(int, found)) for found in
            re.findall(r'data-index="(\d+)" data-label="(\d+)" data-predicted="(\d+)"', html)]


def test_a_jobs_mislabels_page_lists_its_suspects_by_rank_filtered_by_class(
    signed_in: TestClient, client: TestClient, user_headers: Headers, settings: Settings,
):
    ds = upload(client, user_headers, [0] * 10 + [1] * 10 + [2] * 10)
    job = trained_job(client, user_headers, settings, ds, ROWS)
    page = signed_in.get(f"/ui/jobs/{job}/mislabels")
    assert page.status_code == 200, page.text
    assert suspects_shown(page.text) == [(4, 1, 0), (12, 0, 1), (25, 2, 1)]  # predicted ≠ given, by rank
    assert f'src="/ui/datasets/{ds}/images/4"' in page.text and "97.0 %" in page.text
    assert suspects_shown(signed_in.get(f"/ui/jobs/{job}/mislabels?label=0").text) == [(12, 0, 1)]
    assert [i for i, _, _ in suspects_shown(signed_in.get(f"/ui/jobs/{job}/mislabels?show=all").text)] == [4, 12, 7, 25, 13]
    flagged = trained_job(client, user_headers, settings, ds, ROWS, flagged=[0, 1, 1, 0, 0])
    with_report = signed_in.get(f"/ui/jobs/{flagged}/mislabels").text
    assert suspects_shown(with_report) == [(12, 0, 1), (7, 0, 0)]
    assert "estimates 21.0 %" in with_report and "of those it flags 88.0 % (precision 90.0 %)" in with_report
    assert "Review the suspected mislabels" in signed_in.get(f"/ui/jobs/{job}").text
    queued = submit(client, user_headers)
    assert "its suspects are scored when it succeeds" in signed_in.get(f"/ui/jobs/{queued}/mislabels").text


def test_decisions_make_a_version_of_the_jobs_data_set(signed_in: TestClient, client: TestClient,
                                                       user_headers: Headers, settings: Settings):
    ds = upload(client, user_headers, [0] * 11 + [1] * 10 + [2] * 10)
    job = trained_job(client, user_headers, settings, ds, ROWS)
    token = csrf(signed_in, f"/ui/jobs/{job}/mislabels")
    decisions = json.dumps({"changes": [[4, 0], [25, 1]], "drop": [12]})
    assert signed_in.post(f"/ui/jobs/{job}/mislabels/version", data={"decisions": decisions},
                          follow_redirects=False).status_code == 403
    made = signed_in.post(f"/ui/jobs/{job}/mislabels/version",
                          data={"decisions": decisions, "name": "reviewed", "csrf_token": token}, follow_redirects=False)
    assert made.status_code == 303 and made.headers["location"].startswith("/ui/datasets/ds_"), made.text
    version = made.headers["location"].rsplit("/", 1)[1]
    changes = client.get(f"/v1/datasets/{version}/changes", headers=user_headers).json()
    assert changes["relabel"] == [[4, 0], [25, 1]] and changes["drop"] == [12] and changes["source_job"] == job
    described = client.get(f"/v1/datasets/{version}", headers=user_headers).json()
    assert described["name"] == "reviewed" and described["parent_id"] == ds and described["train_samples"] == 30
    for bad, says in [("", "mark at least one"), ("[1, 2]", "not {"), (json.dumps({"changes": [[4, 7]]}), "not a class")]:
        refused = signed_in.post(f"/ui/jobs/{job}/mislabels/version", data={"decisions": bad, "csrf_token": token})
        assert refused.status_code == 422 and says in refused.text, (bad, refused.text)


def test_another_users_mislabels_are_not_found(signed_in: TestClient, client: TestClient, settings: Settings,
                                               make_user):
    bob = make_user("bob")
    theirs = trained_job(client, bob, settings, upload(client, bob, [0, 1, 2] * 10), ROWS)
    assert signed_in.get(f"/ui/jobs/{theirs}/mislabels").status_code == 404
    made = signed_in.post(f"/ui/jobs/{theirs}/mislabels/version",
                          data={"decisions": '{"drop": [4]}', "csrf_token": csrf(signed_in)})
    assert made.status_code == 404
    assert signed_in.get(f"/ui/submit?from={theirs}").status_code == 404


def test_every_new_page_names_only_this_hosts_assets_and_sends_the_csp(
    signed_in: TestClient, client: TestClient, user_headers: Headers, settings: Settings, finished_sweep,
):
    ds = upload(client, user_headers, [0, 1, 2] * 10)
    job = trained_job(client, user_headers, settings, ds, ROWS)
    pages = ["/ui/compare", f"/ui/compare?ids={','.join(finished_sweep['jobs'][:3])}", "/ui/sweeps",
             f"/ui/sweeps/{finished_sweep['id']}", "/ui/submit", "/ui/datasets", f"/ui/datasets/{ds}",
             "/ui/datasets/fashion-mnist", f"/ui/jobs/{job}/mislabels"]
    for path in pages:
        page = signed_in.get(path)
        assert page.status_code == 200, (path, page.text)
        assert "script-src 'self'" in page.headers["content-security-policy"] and "<script>" not in page.text, path
        assert " style=" not in page.text, path  # the CSP allows no inline style
        urls = re.findall(r'(?:href|src|action)="([^"]+)"', page.text)
        assert urls and all(url.startswith(("/", "#")) and not url.startswith("//") for url in urls), (path, urls)
        for url in {url for url in urls if url.startswith("/static/")}:
            assert signed_in.get(url.replace("&amp;", "&")).status_code == 200, url


def test_images_are_cached_under_the_temporary_folder_where_data_dir_cannot_be_written(tmp_path, monkeypatch):
    from shared import samples

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the data folder should be")
    monkeypatch.setattr(samples.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert samples.cache_folder(blocked) == tmp_path / "tmp" / "noisyfit-ui-cache"
    assert samples.cache_folder(tmp_path / "data") == tmp_path / "data" / "ui-cache"


def test_a_select_sweeps_grid_has_a_line_per_loss_setting(signed_in: TestClient, client: TestClient,
                                                          user_headers: Headers, settings: Settings):
    grid = {"loss,alpha,beta": [["ce", None, None], ["nce+rce", 1.0, 10.0]], "seed": [0, 1]}
    sweep = client.post("/v1/sweeps", json={"base": {**SPEC, "validation_split": 0.2}, "grid": grid},
                        headers=user_headers).json()
    finish_jobs(settings, {job_id: {"final_test_accuracy": 0.5 + i / 100, "final_val_accuracy": 0.4 + i / 100}
                           for i, job_id in enumerate(sweep["jobs"])})
    page = signed_in.get(f"/ui/sweeps/{sweep['id']}").text
    assert re.findall(r'<tr data-line="([^"]+)"', page) == ["ce, preset, preset", "nce+rce, 1, 10"]
    assert re.findall(r"data-value='([^']+)'", page) == ["null"]  # one column: nothing else is swept
    assert "Recommended (by validation alone)" in page and "nce+rce, alpha 1, beta 10" in page
