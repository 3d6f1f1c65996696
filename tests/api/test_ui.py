"""The dashboard (/ui) as the server answers it: sign-in, the session cookie, CSRF, isolation,
the jobs list's filters and pages, the job page. tests/e2e/ui/ drives the same pages in a browser."""

import re
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert, update
from sqlmodel import Session

from api.ui.session import COOKIE
from shared.db import get_engine
from shared.jobs import new_job
from shared.models import Job, JobStatus, utcnow
from shared.settings import Settings
from tests.conftest import Headers, csrf_token, ui_sign_in

SPEC = {"dataset": "mnist", "noise": {"type": "symmetric", "rate": 0.4}, "loss": "nce+rce", "epochs": 2,
        "train_size": 500, "lr": 0.05}
HTML = {"Accept": "text/html"}


class Forms(HTMLParser):
    """The inputs, links and asset URLs of a page."""

    def __init__(self, html: str):
        super().__init__()
        self.inputs: list[dict[str, Any]] = []
        self.urls: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        fields = dict(attrs)
        if tag == "input":
            self.inputs.append(fields)
        self.urls += [value for name, value in attrs if name in ("href", "src", "action") and value]

    def value(self, name: str) -> str:
        return next(str(i["value"]) for i in self.inputs if i.get("name") == name)


@pytest.fixture
def browser(app: FastAPI) -> TestClient:
    """A client of its own (its own cookie jar), as a browser: it asks for pages."""
    with TestClient(app, headers=HTML) as client:
        yield client


def key_of(headers: Headers) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def sign_in(browser: TestClient, key: str) -> Any:
    page = browser.get("/ui/login")
    token = csrf_token(page.text)
    return browser.post("/ui/login", data={"api_key": key, "csrf_token": token}, follow_redirects=False)


@pytest.fixture
def signed_in(browser: TestClient, user_headers: Headers) -> TestClient:
    assert sign_in(browser, key_of(user_headers)).status_code == 303
    return browser


def csrf(browser: TestClient, path: str = "/ui/jobs") -> str:
    return csrf_token(browser.get(path).text)


def test_the_sign_in_page_asks_for_one_field_named_api_key(browser: TestClient):
    page = browser.get("/ui/login")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    visible = [i for i in Forms(page.text).inputs if i.get("type") != "hidden"]
    assert [i["name"] for i in visible] == ["api_key"]
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_signing_in_sets_a_signed_httponly_strict_cookie_that_holds_no_key(browser: TestClient, user_headers):
    key = key_of(user_headers)
    response = sign_in(browser, key)
    assert response.status_code == 303 and response.headers["location"] == "/ui/jobs"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace(
        "Strict", "strict") and "Path=/ui" in cookie
    assert key not in cookie and key[3:20] not in cookie
    jobs = browser.get("/ui/jobs")
    assert jobs.status_code == 200 and "Sign out" in jobs.text and key not in jobs.text


def test_a_wrong_key_shows_the_form_again_with_what_to_do(browser: TestClient):
    response = sign_in(browser, "nf_not-a-key")
    assert response.status_code == 401 and "unknown or revoked" in response.text
    assert "nf_not-a-key" not in response.text
    assert browser.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_a_sign_in_without_the_forms_token_is_refused(browser: TestClient, user_headers):
    browser.get("/ui/login")
    response = browser.post("/ui/login", data={"api_key": key_of(user_headers)}, follow_redirects=False)
    assert response.status_code == 403 and "security token" in response.text
    assert browser.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_pages_lead_to_sign_in_and_back(browser: TestClient, user_headers):
    response = browser.get("/ui/jobs?status=running", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstatus%3Drunning"
    page = browser.get(response.headers["location"])
    assert Forms(page.text).value("next") == "/ui/jobs?status=running"
    token = csrf_token(page.text)
    signed = browser.post("/ui/login", data={"api_key": key_of(user_headers), "csrf_token": token,
                                             "next": "/ui/jobs?status=running"}, follow_redirects=False)
    assert signed.headers["location"] == "/ui/jobs?status=running"


@pytest.mark.parametrize("target", ["https://elsewhere.example/", "//elsewhere.example/ui/", "/v1/jobs"])
def test_sign_in_never_leads_off_the_dashboard(browser: TestClient, user_headers, target: str):
    token = csrf_token(browser.get("/ui/login").text)
    response = browser.post("/ui/login", data={"api_key": key_of(user_headers), "csrf_token": token,
                                               "next": target}, follow_redirects=False)
    assert response.headers["location"] == "/ui/jobs"


def test_a_tampered_cookie_is_no_session(signed_in: TestClient):
    value = signed_in.cookies.get(COOKIE)
    payload, mac = value.split(".")
    signed_in.cookies.clear()
    signed_in.cookies.set(COOKIE, payload + "." + mac[:-2] + ("AA" if not mac.endswith("AA") else "BB"), path="/ui")
    assert signed_in.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_a_session_ends_when_its_ttl_passes(app: FastAPI, settings: Settings, user_headers):
    from api.ui.session import UiSession, decode, encode, signing_key

    key = signing_key(settings)
    old = UiSession("n" * 32, 1, int((utcnow() - timedelta(seconds=settings.session_ttl_s + 1)).timestamp()))
    assert decode(encode(old, key), key, settings.session_ttl_s) is None
    fresh = UiSession("n" * 32).signed_in_as(1)
    assert decode(encode(fresh, key), key, settings.session_ttl_s) == fresh
    assert decode(encode(fresh, b"another secret"), key, settings.session_ttl_s) is None


def test_a_revoked_keys_session_ends_on_its_next_request(browser: TestClient, client: TestClient, admin_headers):
    created = client.post("/v1/api-keys", json={"name": "revoked"}, headers=admin_headers).json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    job = client.post("/v1/jobs", json=SPEC, headers=headers).json()
    assert sign_in(browser, created["key"]).status_code == 303
    assert browser.get(f"/ui/jobs/{job['id']}").status_code == 200
    assert client.delete(f"/v1/api-keys/{created['id']}", headers=admin_headers).status_code == 200
    page = browser.get(f"/ui/jobs/{job['id']}", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")
    metrics = browser.get(f"/ui/jobs/{job['id']}/metrics", headers={"Accept": "application/json"})
    assert metrics.status_code == 401 and metrics.json()["error"]["code"] == "sign_in_required"
    assert browser.get("/ui/login").status_code == 200  # the sign-in form, not a loop back to the jobs


def test_signing_out_needs_the_token_and_ends_the_session(signed_in: TestClient):
    assert signed_in.post("/ui/logout", follow_redirects=False).status_code == 403
    assert signed_in.get("/ui/jobs", follow_redirects=False).status_code == 200
    out = signed_in.post("/ui/logout", data={"csrf_token": csrf(signed_in)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert signed_in.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_a_cancel_needs_the_sessions_token(signed_in: TestClient, client: TestClient, user_headers, make_user):
    job = client.post("/v1/jobs", json=SPEC, headers=user_headers).json()
    refused = signed_in.post(f"/ui/jobs/{job['id']}/cancel", follow_redirects=False)
    assert refused.status_code == 403 and "security token" in refused.text
    other = ui_sign_in(TestClient(signed_in.app, headers=HTML), key_of(make_user("other")))
    stale = signed_in.post(f"/ui/jobs/{job['id']}/cancel", data={"csrf_token": csrf(other)}, follow_redirects=False)
    assert stale.status_code == 403  # another session's token
    assert client.get(f"/v1/jobs/{job['id']}", headers=user_headers).json()["status"] == "queued"
    done = signed_in.post(f"/ui/jobs/{job['id']}/cancel", data={"csrf_token": csrf(signed_in)},
                          follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/ui/jobs/{job['id']}"
    assert client.get(f"/v1/jobs/{job['id']}", headers=user_headers).json()["status"] == "cancelled"


def test_another_users_job_answers_404_on_every_dashboard_path(signed_in: TestClient, client: TestClient, make_user):
    theirs = client.post("/v1/jobs", json=SPEC, headers=make_user("bob")).json()["id"]
    for path in ("", "/metrics", "/events", "/artifacts/result.json"):
        assert signed_in.get(f"/ui/jobs/{theirs}{path}").status_code == 404, path
    page = signed_in.get(f"/ui/jobs/{theirs}")
    assert "Not found" in page.text and page.headers["content-type"].startswith("text/html")
    as_json = signed_in.get(f"/ui/jobs/{theirs}/metrics", headers={"Accept": "application/json"})
    assert as_json.json()["error"]["code"] == "not_found"
    cancel = signed_in.post(f"/ui/jobs/{theirs}/cancel", data={"csrf_token": csrf(signed_in)})
    assert cancel.status_code == 404
    assert signed_in.get("/ui/no-such-page").status_code == 404


def test_the_jobs_list_filters_by_status_data_set_and_loss(signed_in: TestClient, client: TestClient, user_headers):
    ids = {name: client.post("/v1/jobs", json={**SPEC, **changes}, headers=user_headers).json()["id"]
           for name, changes in {"mnist_apl": {}, "fashion_ce": {"dataset": "fashion-mnist", "loss": "ce"},
                                 "mnist_ce": {"loss": "ce"}}.items()}
    client.post(f"/v1/jobs/{ids['mnist_ce']}/cancel", headers=user_headers)

    def listed(query: str) -> set[str]:
        page = signed_in.get(f"/ui/jobs?{query}")
        assert page.status_code == 200, page.text
        return set(re.findall(r'data-job="(job_[0-9a-f]+)"', page.text)) & set(ids.values())

    assert listed("") == set(ids.values())
    assert listed("dataset=fashion-mnist") == {ids["fashion_ce"]}
    assert listed("loss=NCE%2BRCE") == {ids["mnist_apl"]}
    assert listed("loss=ce&dataset=mnist") == {ids["mnist_ce"]}
    assert listed("status=cancelled") == {ids["mnist_ce"]}
    assert listed("status=&dataset=&loss=") == set(ids.values())
    bad = signed_in.get("/ui/jobs?status=done")
    assert bad.status_code == 422 and "queued" in bad.text
    assert signed_in.get("/ui/jobs?loss=xyz").status_code == 422


def test_the_jobs_list_pages_through_10000_jobs_newest_first(
    browser: TestClient, client: TestClient, admin_headers, settings: Settings,
):
    created = client.post("/v1/api-keys", json={"name": "busy"}, headers=admin_headers).json()
    spec = client.post("/v1/jobs", json=SPEC, headers={"Authorization": f"Bearer {created['key']}"}).json()["spec"]
    now = utcnow()
    rows = []
    for i in range(10_000):
        job = new_job(created["user_id"], spec)
        # Ten jobs a timestamp: ties are ordered by id, as the API's cursor orders them.
        rows.append({**job.model_dump(), "created_at": now - timedelta(seconds=1 + i // 10),
                     "status": JobStatus.succeeded})
    with Session(get_engine(settings.database_url)) as session:
        session.execute(insert(Job), rows)
        session.commit()
    assert sign_in(browser, created["key"]).status_code == 303

    seen, path = [], "/ui/jobs"
    while path:
        page = browser.get(path)
        assert page.status_code == 200
        seen += re.findall(r'data-job="(job_[0-9a-f]+)"', page.text)
        older = re.search(r'rel="next" href="([^"]+)"', page.text)
        path = older.group(1).replace("&amp;", "&") if older else None
    stored = {r["id"]: (r["created_at"], r["id"]) for r in rows}
    assert len(seen) == len(set(seen)) == 10_001  # and the one submitted first
    assert set(seen) >= set(stored)
    order = [stored[i] for i in seen if i in stored]
    assert order == sorted(order, reverse=True)


def test_the_job_page_marks_the_values_that_differ_from_the_preset(signed_in: TestClient, client: TestClient,
                                                                    user_headers):
    job = client.post("/v1/jobs", json=SPEC, headers=user_headers).json()
    page = signed_in.get(f"/ui/jobs/{job['id']}").text
    marked = dict(re.findall(r'<tr class="differs">\s*<th scope="row" data-label="Field"><code>([\w.]+)</code></th>'
                             r'.*?<td data-label="Preset">([^<]+)</td>', page, re.S))
    assert marked == {"epochs": "50", "train_size": "60000", "lr": "0.01"}
    assert 'data-events="/ui/jobs/' in page and 'data-epochs="2"' in page


def test_a_failed_jobs_page_shows_its_error_and_what_to_do(signed_in: TestClient, client: TestClient,
                                                          user_headers, settings: Settings):
    job = client.post("/v1/jobs", json=SPEC, headers=user_headers).json()
    error = {"code": "diverged", "message": "the loss became NaN at epoch 3; lower lr (0.05) or set grad_clip"}
    with Session(get_engine(settings.database_url)) as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(status=JobStatus.failed, error=error))
        session.commit()
    page = signed_in.get(f"/ui/jobs/{job['id']}").text
    assert "diverged" in page and "lower lr (0.05) or set grad_clip" in page and "What to do" in page
    assert "Cancel job" not in page


def test_every_asset_a_page_names_is_served_from_this_host(signed_in: TestClient, client: TestClient,
                                                         user_headers):
    job = client.post("/v1/jobs", json=SPEC, headers=user_headers).json()
    for path in ("/ui/login", "/ui/jobs", f"/ui/jobs/{job['id']}"):
        for url in Forms(signed_in.get(path).text).urls:
            assert url.startswith(("/", "#")) and not url.startswith("//"), (path, url)
            if url.startswith("/static/"):
                assert signed_in.get(url).status_code == 200, url
    assert signed_in.get("/static/vendor/uplot/LICENSE").status_code == 200


def test_the_dashboards_root_leads_to_the_jobs(signed_in: TestClient):
    for path in ("/ui", "/ui/"):
        response = signed_in.get(path)
        assert response.status_code == 200 and response.url.path == "/ui/jobs", path
