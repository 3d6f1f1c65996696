"""The OpenAPI document and the pages that show it: short operation ids, and /docs and /redoc
that load every asset from the API itself (they work offline)."""

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from fastapi.testclient import TestClient

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
MAX_WORDS = 4
CONTENT_TYPES = {  # by the asset's suffix; Python < 3.12 without /etc/mime.types calls .js application/javascript
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".json": ("application/json",),
}
PAGES = {"/docs": b"SwaggerUIBundle", "/redoc": b"spec-url"}  # what the page's script must define or read


@pytest.fixture(scope="module")
def schema(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in schema["paths"].items() for method, op in item.items()
            if method in METHODS]


def test_the_openapi_document_loads(schema: dict[str, Any]):
    """A 3.x document whose every operation schemathesis can read and whose every $ref resolves."""
    assert schema["openapi"].startswith("3.") and schema["info"]["title"] == "noisyfit"
    loaded = [result.ok() for result in schemathesis.openapi.from_dict(schema).get_all_operations()]
    assert len(loaded) == len(operations(schema)) > 0
    refs = set(_refs(schema))
    assert refs, "no $ref at all: the walk is broken"
    for ref in refs:
        node = schema
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def _refs(node: Any) -> list[str]:
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    if not isinstance(node, dict):
        return []
    own = [node["$ref"]] if "$ref" in node else []
    return own + [ref for value in node.values() for ref in _refs(value)]


def test_operation_ids_are_short_unique_snake_case_names(schema: dict[str, Any]):
    """`create_job`, not FastAPI's default `create_job_v1_jobs_post`: no path, no method in it."""
    ids = [op["operationId"] for _method, _path, op in operations(schema)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for method, path, op in operations(schema):
        name = op["operationId"]
        assert SNAKE_CASE.fullmatch(name), (method, path, name)
        assert len(name.split("_")) <= MAX_WORDS, (method, path, name)
        assert not name.endswith(f"_{method}") and "v1" not in name, (method, path, name)


class _Links(HTMLParser):
    """The URLs a page loads: src and href attributes, Redoc's spec-url, Swagger UI's `url:`."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]

    def handle_data(self, data: str) -> None:
        self.urls += re.findall(r"\burl:\s*'([^']*)'", data)


@pytest.mark.parametrize("page", PAGES)
def test_docs_pages_load_only_local_assets(client: TestClient, page: str):
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert not re.findall(r"https?://[^\s\"'<>]*", response.text), "the page loads from another host"
    links = _Links()
    links.feed(response.text)
    assert "/openapi.json" in links.urls and any(url.endswith(".js") for url in links.urls), links.urls
    for url in links.urls:
        assert not urlsplit(url).netloc and url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex("."):]
        assert asset.headers["content-type"].split(";")[0] in CONTENT_TYPES[suffix], (url, asset.headers["content-type"])
        if suffix == ".js":
            assert PAGES[page] in asset.content, f"{url} is not the script {page} needs"


def test_a_missing_asset_answers_404_in_the_error_shape(client: TestClient):
    response = client.get("/static/vendor/swagger-ui/nothing.js")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
