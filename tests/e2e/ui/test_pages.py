"""The compare, sweep, submit, data-set and mislabels pages in a real browser (Chromium) against
the real stack, on one tiny sweep (2 losses × 2 noise rates, 1 epoch of 500 samples) trained by
the real worker: the compare view lists exactly the differing fields, the sweep grid's numbers
are those of GET /v1/sweeps/{id}/table, a refused form value is shown at its field, marks on the
mislabels become a CSV and a data-set version, another user gets 404 on every page, and every
page fits 1280 and 390 px (screenshots in var/screenshots/)."""

import csv
import io
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.e2e.conftest import FINISHED, Workers, live_user, wait_for_status
from tests.e2e.ui.conftest import WIDTHS, UiUser, Visit, fits, screenshot, sign_in, wait_for

BASE = {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.2}, "loss": "ce", "epochs": 1,
        "train_size": 500, "seed": 0, "lr": 0.02, "validation_split": 0.2}
GRID = {"loss": ["ce", "nce+rce"], "noise.rate": [0.2, 0.4]}


@pytest.fixture(scope="module")
def sweep(ui_user: UiUser, workers: Workers) -> dict[str, Any]:
    """The tiny sweep, every job succeeded; with `by_cell`: (loss, rate) → job id."""
    workers.ensure_running()
    response = ui_user.http.post("/v1/sweeps", json={"base": BASE, "grid": GRID})
    assert response.status_code == 201, response.text
    made = response.json()
    for job_id in made["jobs"]:
        assert wait_for_status(ui_user.http, job_id, FINISHED, timeout_s=300)["status"] == "succeeded"
    made = ui_user.http.get(f"/v1/sweeps/{made['id']}").json()
    specs = {job_id: ui_user.http.get(f"/v1/jobs/{job_id}").json()["spec"] for job_id in made["jobs"]}
    made["by_cell"] = {(spec["loss"], spec["noise"]["rate"]): job_id for job_id, spec in specs.items()}
    return made


def signed_in_page(visit: Callable[..., Visit], ui_user: UiUser, width: int = WIDTHS[0]) -> Page:
    page = visit(width).page
    sign_in(page, ui_user.key)
    return page


def test_the_sweep_grid_shows_the_tables_numbers(visit: Callable[..., Visit], ui_user: UiUser, sweep):
    page = signed_in_page(visit, ui_user)
    page.goto(f"/ui/sweeps/{sweep['id']}")
    table = ui_user.http.get(f"/v1/sweeps/{sweep['id']}/table").json()
    cells = page.locator("#sweep-grid td.cell")
    assert cells.count() == len(table) == 4
    for i, row in enumerate(table):  # the grid's order: a line per loss, a column per noise rate
        cell = cells.nth(i)
        assert float(cell.get_attribute("data-mean")) == row["mean"]
        assert float(cell.get_attribute("data-val-mean")) == row["val_mean"]
        assert cell.locator(".figure").inner_text().strip() == f"{100 * row['mean']:.2f}"  # one seed: no std
        link = cell.locator("a.figure").get_attribute("href")
        assert link == f"/ui/jobs/{row['runs'][0]['id']}"
    best = ui_user.http.get(f"/v1/sweeps/{sweep['id']}").json()["best"]
    starred = page.locator("#sweep-grid td.best")
    assert starred.count() == 1 and float(starred.get_attribute("data-val-mean")) == best["val_mean"]
    assert page.locator("#sweep-grid tbody th").all_inner_texts() == ["ce", "nce+rce"]
    charts = page.locator("#sweep-charts")
    wait_for(page, lambda: charts.get_attribute("data-lines") == "2", 30, "the sweep's chart")
    legend = page.locator("#sweep-charts figure >> nth=0").locator(".u-legend .u-series th").all_inner_texts()
    assert [label.strip() for label in legend[1:]] == ["ce", "nce+rce"]  # after the x value's
    page.goto("/ui/sweeps")
    assert page.locator(f'tr[data-sweep="{sweep["id"]}"] .progress-text').inner_text() == "4 / 4"


def test_the_compare_view_lists_exactly_the_differing_fields(visit: Callable[..., Visit], ui_user: UiUser, sweep):
    page = signed_in_page(visit, ui_user)
    chosen = [sweep["by_cell"][("ce", 0.2)], sweep["by_cell"][("ce", 0.4)]]
    for job_id in chosen:  # ticked on the jobs list
        page.check(f'input[name=ids][value="{job_id}"]')
    page.get_by_role("button", name="Compare the ticked jobs").click()
    page.wait_for_url(lambda url: "/ui/compare?" in url)
    assert page.locator("th[data-field]").evaluate_all("cells => cells.map((c) => c.dataset.field)") == ["noise.rate"]
    assert sorted(page.locator("#compare-table tbody tr").evaluate_all("rows => rows.map((r) => r.dataset.job)")) \
        == sorted(chosen)
    wait_for(page, lambda: page.get_attribute("#compare-charts", "data-loaded") == "true", 30, "the curves")
    assert page.locator("#compare-charts figure").count() == 5  # test, noisy train, memorised, loss, validation
    assert page.get_attribute("#compare-charts figure >> nth=0", "data-points") == "1"
    page.locator(f'#compare-table tr[data-job="{chosen[1]}"]').hover()  # a row picks its line out
    assert page.locator("#compare-focus").inner_text() == f"{chosen[1]}: noise.rate 0.4"
    whole = f"/ui/compare?sweep={sweep['id']}"
    page.goto(whole)
    fields = page.locator("th[data-field]").evaluate_all("cells => cells.map((c) => c.dataset.field)")
    assert {"loss", "noise.rate"} <= set(fields) and "seed" not in fields and "dataset" not in fields


def test_a_refused_value_is_shown_at_its_field(visit: Callable[..., Visit], ui_user: UiUser, sweep):
    page = signed_in_page(visit, ui_user)
    page.goto("/ui/submit")
    page.fill("#loss", "gce")
    wait_for(page, lambda: "GCE" in page.inner_text("#loss-formula"), 10, "the formula of gce")
    assert page.inner_text("#beta-hint") == "preset: not used by this loss"
    page.fill("#loss", "nce+rce")
    wait_for(page, lambda: page.inner_text("#beta-hint") == "preset: 10", 10, "the preset β of nce+rce")
    page.fill("#epochs", "0")
    page.fill("#train_size", "500")
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("#epochs-error:not([hidden])")
    assert "greater than or equal to 1" in page.inner_text("#epochs-error")
    assert page.get_attribute("#epochs", "aria-invalid") == "true"
    assert page.input_value("#loss") == "nce+rce" and page.input_value("#train_size") == "500"
    page.fill("#noise_rate", "0.95")  # said at its field before the form is sent
    page.wait_for_selector("#noise_rate-error:not([hidden])")
    assert "rate" in page.inner_text("#noise_rate-error")
    page.fill("#noise_rate", "0.2")
    page.fill("#epochs", "1")
    page.click("#submit-form button[type=submit]")
    page.wait_for_url("**/ui/jobs/job_*")
    job_id = page.url.rsplit("/", 1)[1]
    made = ui_user.http.get(f"/v1/jobs/{job_id}").json()
    assert (made["spec"]["loss"], made["spec"]["epochs"], made["spec"]["train_size"]) == ("nce+rce", 1, 500)
    assert ui_user.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200


def test_marks_on_a_jobs_mislabels_become_a_csv_and_a_version(visit: Callable[..., Visit], ui_user: UiUser, sweep):
    job_id = sweep["by_cell"][("ce", 0.4)]
    page = signed_in_page(visit, ui_user)
    page.goto(f"/ui/jobs/{job_id}")
    page.get_by_role("link", name="Review the suspected mislabels").click()
    assert "estimates" in page.inner_text("#label-quality")  # the label-quality report's summary
    cards = page.locator("li.suspect")
    assert cards.count() > 2
    first = cards.nth(0)
    wait_for(page, lambda: first.locator("img").evaluate("img => img.complete && img.naturalWidth === 28"), 30,
             "the first sample's image")
    index, predicted = first.get_attribute("data-index"), first.get_attribute("data-predicted")
    first.get_by_role("button", name="Label is wrong").click()
    cards.nth(1).get_by_role("button", name="Label is right").click()
    page.reload()  # the marks stay in the browser
    assert page.locator("li.suspect").nth(0).get_by_role("button", name="Label is wrong").get_attribute(
        "aria-pressed") == "true"
    assert page.inner_text("#decision-count").startswith("1 marked wrong, 1 marked right")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export as CSV").click()
    rows = list(csv.DictReader(io.StringIO(open(download.value.path()).read())))
    assert rows == [{"index": index, "label": predicted}]
    page.get_by_role("button", name="Make a new version of the data set").click()
    page.wait_for_url("**/ui/datasets/ds_*")
    version = page.url.rsplit("/", 1)[1]
    changes = ui_user.http.get(f"/v1/datasets/{version}/changes").json()
    assert changes["relabel"] == [[int(index), int(predicted)]] and changes["source_job"] == job_id
    counts = page.locator("td[data-count]").evaluate_all("cells => cells.map((c) => Number(c.dataset.count))")
    assert sum(counts) == BASE["train_size"]  # the samples the job trained and validated on
    wait_for(page, lambda: page.locator("ul.samples img").first.evaluate("img => img.complete && img.naturalWidth > 0"),
             30, "the version's images")


def test_another_user_gets_404_on_every_page(visit: Callable[..., Visit], api: str, e2e_env: dict[str, str],
                                             ui_user: UiUser, sweep):
    job_id = sweep["jobs"][0]
    theirs = httpx.post(f"{api}/v1/datasets/fashion-mnist/versions", json={"from_job": job_id},
                        headers={"Authorization": f"Bearer {ui_user.key}"}, timeout=60)
    assert theirs.status_code == 201, theirs.text
    other = live_user(api, e2e_env, "someone-else")["Authorization"].removeprefix("Bearer ")
    page = visit().page
    sign_in(page, other)
    for path in (f"/ui/compare?ids={job_id},{sweep['jobs'][1]}", f"/ui/sweeps/{sweep['id']}",
                 f"/ui/jobs/{job_id}/mislabels", f"/ui/datasets/{theirs.json()['id']}", f"/ui/submit?from={job_id}"):
        response = page.goto(path)
        assert response is not None and response.status == 404, path
        assert page.get_by_role("heading", name="Not found").is_visible(), path
    assert sweep["id"] not in page.goto("/ui/sweeps").text()
    assert theirs.json()["id"] not in page.goto("/ui/datasets").text()


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_the_width_and_is_saved_as_a_screenshot(visit: Callable[..., Visit], ui_user: UiUser,
                                                                sweep, width: int):
    page = signed_in_page(visit, ui_user, width)
    job_id = sweep["by_cell"][("nce+rce", 0.4)]

    def settled() -> bool:
        return page.evaluate("Array.from(document.images).every((img) => img.complete)")

    pages = {
        "sweeps": ("/ui/sweeps", None),
        "sweep": (f"/ui/sweeps/{sweep['id']}", "#sweep-charts[data-lines]"),
        "compare": (f"/ui/compare?sweep={sweep['id']}", "#compare-charts[data-loaded]"),
        "submit": ("/ui/submit", None),
        "datasets": ("/ui/datasets", None),
        "dataset": ("/ui/datasets/fashion-mnist", None),
        "mislabels": (f"/ui/jobs/{job_id}/mislabels", None),
    }
    for name, (path, ready) in pages.items():
        page.goto(path)
        if ready:
            page.wait_for_selector(ready)
        wait_for(page, settled, 30, f"the images of {path}")
        assert fits(page), f"{path} is wider than {width} px"
        screenshot(page, name)
    page.goto("/ui/submit")
    page.fill("#epochs", "0")
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("#epochs-error:not([hidden])")
    assert fits(page), "the submit form with an error"
    screenshot(page, "submit-error")
