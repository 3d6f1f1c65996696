"""The dashboard in a real browser (Chromium) against the real stack: signing in and out, live
charts and statuses, isolation between users, revoked keys, CSRF, phone and desktop widths,
and no request to any other host (the `visit` fixture fails a test on one)."""

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import FINISHED, Workers, wait_for_status
from tests.e2e.ui.conftest import WIDTHS, UiUser, Visit, fits, screenshot, sign_in, wait_for

LIVE_JOB = {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.4}, "loss": "nce+rce",
            "epochs": 2, "train_size": 500, "seed": 0, "lr": 0.02}
ACCURACY_CHART = "#charts figure:first-child"


def submit(http: httpx.Client, **changes: Any) -> str:
    response = http.post("/v1/jobs", json={**LIVE_JOB, **changes})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def live_job(ui_user: UiUser, workers: Workers) -> str:
    """A tiny job (2 epochs of 500 samples), submitted once the worker is up; not waited for."""
    workers.ensure_running()
    return submit(ui_user.http)


@pytest.fixture(scope="module")
def finished_job(live_job: str, ui_user: UiUser) -> str:
    assert wait_for_status(ui_user.http, live_job, FINISHED, timeout_s=300)["status"] == "succeeded"
    return live_job


def points(visit: Visit) -> int:
    return int(visit.page.get_attribute(ACCURACY_CHART, "data-points") or 0)


def test_a_request_to_another_host_is_caught(visit: Callable[..., Visit]):
    """The guard every test runs under: a request that leaves the host is aborted and reported."""
    view = visit()
    view.page.set_content('<img src="http://example.com/tracker.png" alt="">')
    view.page.wait_for_timeout(300)
    caught = [p for p in view.problems if "example.com/tracker.png" in p]
    assert caught and "a request left the host" in caught[0]
    view.problems.clear()
    view.requests.clear()


def test_sign_in_and_sign_out(visit: Callable[..., Visit], ui_user: UiUser):
    page = visit().page
    page.goto("/ui/jobs")
    assert "/ui/login" in page.url and page.locator("input[name=api_key]").count() == 1
    sign_in(page, ui_user.key)
    assert page.get_by_role("button", name="Sign out").is_visible()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "noisyfit_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and ui_user.key not in cookie["value"]
    assert "noisyfit_session" not in page.evaluate("document.cookie")  # no script can read it
    assert ui_user.key not in page.content()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login")
    page.goto("/ui/jobs")
    assert "/ui/login" in page.url


def test_a_wrong_key_is_refused_at_the_field(visit: Callable[..., Visit]):
    page = visit().page
    page.goto("/ui/login")
    page.fill("input[name=api_key]", "nf_wrong")
    page.click("button[type=submit]")
    assert "unknown or revoked" in page.locator("#login-error").inner_text()
    assert page.locator("input[name=api_key]").get_attribute("aria-invalid") == "true"


def test_a_running_jobs_chart_and_status_update_without_a_reload(visit: Callable[..., Visit], ui_user: UiUser,
                                                                   live_job: str):
    job_view, list_view = visit(), visit()
    sign_in(job_view.page, ui_user.key)
    job_view.page.goto(f"/ui/jobs/{live_job}")
    sign_in(list_view.page, ui_user.key)
    row = f'tr[data-job="{live_job}"]'
    first_status = list_view.page.get_attribute(row, "data-status")
    for view in (job_view, list_view):
        view.page.evaluate("window.stillTheSamePage = true")
    seen = [points(job_view)]
    assert seen[0] < LIVE_JOB["epochs"] and first_status in ("queued", "running"), (
        "the job finished before its page was open; nothing live left to see")
    while seen[-1] < LIVE_JOB["epochs"]:
        wait_for(job_view.page, lambda: points(job_view) > seen[-1], 240, f"more than {seen[-1]} points")
        seen.append(points(job_view))
    job_view.page.wait_for_selector('#job-head[data-status="succeeded"]', timeout=60_000)
    job_view.page.wait_for_selector('#job-artifacts a:text("result.json")', timeout=30_000)
    list_view.page.wait_for_selector(f'{row}[data-status="succeeded"]', timeout=60_000)
    for view in (job_view, list_view):
        assert view.page.evaluate("window.stillTheSamePage === true"), "the page was reloaded"
    assert seen == sorted(seen) and seen[-1] == LIVE_JOB["epochs"] and len(seen) >= 2
    for series in ("clean test accuracy", "accuracy on the noisy training labels"):
        assert job_view.page.locator(f'{ACCURACY_CHART} .u-legend :text("{series}")').count() == 1
    labels = job_view.page.locator(f"{ACCURACY_CHART} .u-axis").first.inner_text()
    assert "." not in labels  # whole-number epoch ticks


def test_another_users_job_is_not_found(visit: Callable[..., Visit], api: str, e2e_env: dict[str, str],
                                        live_job: str):
    from tests.e2e.conftest import live_user

    other = live_user(api, e2e_env, "someone-else")["Authorization"].removeprefix("Bearer ")
    page = visit().page
    sign_in(page, other)
    response = page.goto(f"/ui/jobs/{live_job}")
    assert response is not None and response.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()
    assert page.request.get(f"/ui/jobs/{live_job}/metrics").status == 404
    assert live_job not in page.goto("/ui/jobs").text()


def test_a_revoked_keys_session_is_refused(visit: Callable[..., Visit], api: str, e2e_env: dict[str, str]):
    admin = {"Authorization": f"Bearer {e2e_env['NOISYFIT_ADMIN_TOKEN']}"}
    created = httpx.post(f"{api}/v1/api-keys", json={"name": "soon-revoked"}, headers=admin, timeout=30).json()
    page = visit().page
    sign_in(page, created["key"])
    assert httpx.delete(f"{api}/v1/api-keys/{created['id']}", headers=admin, timeout=30).status_code == 200
    page.reload()
    assert "/ui/login" in page.url
    assert page.request.get("/ui/jobs", headers={"Accept": "application/json"}).status == 401


def test_a_cancel_without_the_csrf_token_is_refused(visit: Callable[..., Visit], ui_user: UiUser, finished_job: str):
    job = submit(ui_user.http, epochs=50)
    page = visit().page
    sign_in(page, ui_user.key)
    page.goto(f"/ui/jobs/{job}")
    for form in ({}, {"csrf_token": "forged"}):
        refused = page.request.post(f"/ui/jobs/{job}/cancel", form=form)
        assert refused.status == 403 and "security token" in refused.text()
    assert ui_user.http.get(f"/v1/jobs/{job}").json()["cancel_requested"] is False
    page.get_by_role("button", name="Cancel job").click()
    assert wait_for_status(ui_user.http, job, FINISHED, timeout_s=120)["status"] == "cancelled"
    head = page.locator("#job-head")
    wait_for(page, lambda: head.get_attribute("data-status") == "cancelled", 30,
             lambda: f"the page to show the job cancelled without a reload; it shows {head.inner_text()!r}")


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_the_width_and_is_saved_as_a_screenshot(visit: Callable[..., Visit], ui_user: UiUser,
                                                                finished_job: str, width: int):
    view = visit(width)
    page = view.page
    page.goto("/ui/login")
    assert fits(page), "the sign-in page"
    screenshot(page, "login")
    sign_in(page, ui_user.key)
    assert fits(page), "the jobs list"
    screenshot(page, "jobs")
    page.goto(f"/ui/jobs/{finished_job}")
    wait_for(page, lambda: points(view) == LIVE_JOB["epochs"], 30, "the charts")
    wait_for(page, lambda: page.evaluate("document.querySelector('img.plot').complete"), 30, "the plot")
    assert fits(page), "the job page"
    screenshot(page, "job")
    page.goto("/ui/jobs/job_0000000000")
    assert fits(page), "the not-found page"
    screenshot(page, "not-found")
