"""A real browser for the dashboard's tests: Playwright driving Debian's `chromium`, headless,
against the real stack of tests/e2e/conftest.py (uvicorn, a Celery worker, Redis, PostgreSQL, S3).

- `browser`: one Chromium per module (Playwright's own browser download is never used; the
  `chromium` package is: `apt-get install chromium`, as scripts/setup.sh does).
- `visit(width)`: a fresh browser context (its own cookies) and page at that viewport width,
  based at the live API's URL. Every request it makes is checked: one to a host other than
  127.0.0.1 or localhost is aborted and fails the test, as does a console error, an uncaught
  script error or an asset (/static/) that does not load.
- `ui_user`: a user of the live API (`.key`, `.http`, an httpx client with their key).
- `sign_in(page, key)`, `fits(page)`, `screenshot(page, name)` (under var/screenshots/),
  `wait_for(page, predicate, timeout_s, what)`.
"""

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Request, Route, sync_playwright

from tests.conftest import ROOT
from tests.e2e.conftest import live_user

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
SCREENSHOTS = ROOT / "var" / "screenshots"
WIDTHS = (1280, 390)
HEIGHT = 900


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("the browser tests need Debian's chromium: `apt-get install chromium` (scripts/setup.sh does)")
    return path


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright, chromium_path: str) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path, headless=True)
    yield browser
    browser.close()


@dataclass
class Visit:
    """A browser context and its page, with what went wrong in them."""

    context: BrowserContext
    page: Page
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _guard(visit: Visit) -> None:
    def route(route: Route, request: Request) -> None:
        host = urlsplit(request.url).hostname
        if request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            route.continue_()
        else:
            visit.problems.append(f"a request left the host: {request.method} {request.url}")
            route.abort()

    def console(message) -> None:  # type: ignore[no-untyped-def]
        # A page answered 404 on purpose logs "Failed to load resource"; assets are checked below.
        if message.type == "error" and "Failed to load resource" not in message.text:
            visit.problems.append(f"console error on {visit.page.url}: {message.text}")

    def response(response) -> None:  # type: ignore[no-untyped-def]
        if "/static/" in response.url and response.status != 200:
            visit.problems.append(f"asset {response.url} answered {response.status}")

    visit.context.route("**/*", route)
    visit.context.on("request", lambda request: visit.requests.append(request.url))
    visit.context.on("response", response)
    visit.page.on("console", console)
    visit.page.on("pageerror", lambda error: visit.problems.append(f"script error on {visit.page.url}: {error}"))


@pytest.fixture
def visit(browser: Browser, api: str) -> Iterator[Callable[..., Visit]]:
    opened: list[Visit] = []

    def open_visit(width: int = WIDTHS[0]) -> Visit:
        context = browser.new_context(base_url=api, viewport={"width": width, "height": HEIGHT})
        context.set_default_timeout(30_000)
        visit = Visit(context, context.new_page())
        _guard(visit)
        opened.append(visit)
        return visit

    yield open_visit
    problems = [problem for v in opened for problem in v.problems]
    for v in opened:
        v.context.close()
    assert not problems, "\n".join(problems)
    assert all(urlsplit(url).hostname in LOCAL_HOSTS for v in opened for url in v.requests
               if not url.startswith(("data:", "blob:")))


@dataclass(frozen=True)
class UiUser:
    key: str
    http: httpx.Client


@pytest.fixture(scope="module")
def ui_user(api: str, e2e_env: dict[str, str]) -> Iterator[UiUser]:
    headers = live_user(api, e2e_env, "dashboard")
    with httpx.Client(base_url=api, headers=headers, timeout=30) as http:
        yield UiUser(headers["Authorization"].removeprefix("Bearer "), http)


def sign_in(page: Page, key: str) -> None:
    page.goto("/ui/login")
    page.fill("input[name=api_key]", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/jobs")


def fits(page: Page) -> bool:
    """Nothing on the page is wider than the window (no sideways scrolling)."""
    return page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"] if page.viewport_size else 0
    path = SCREENSHOTS / f"{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_for(page: Page, predicate: Callable[[], bool], timeout_s: float, what: str | Callable[[], str]) -> None:
    """Poll the page (page.wait_for_function would evaluate a string, which the pages' CSP forbids)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"waited {timeout_s}s for {what() if callable(what) else what}"
        page.wait_for_timeout(200)
