"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis): whatever a
client sends, as a user and as the admin, the API never answers 5xx and never raises.

The app runs in-process (ASGI) with the isolated settings (a queue no worker reads), so the
jobs that fuzzing creates are never trained. A bounded number of examples per operation.
"""

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from shared.store import artifact_key, get_store
from tests.reliability.conftest import TINY_SPEC, User

EXAMPLES = 40


@pytest.fixture(scope="module")
def fuzz_schema(api: TestClient) -> Any:
    """`api` ran the app's lifespan (settings, tables, bucket) before the schema is loaded."""
    return schemathesis.openapi.from_asgi("/openapi.json", api.app)


@pytest.fixture
def fuzz_user(api: TestClient, user: Any, admin_headers: dict[str, str]) -> dict[str, Any]:
    """A fresh user per operation (fuzzing DELETE /v1/api-keys/{id} revokes keys at random),
    owning a finished job with an artifact and a finished sweep, so that fuzzed requests can
    also name things that exist (and a built-in data set, which everyone may make versions of)."""
    owner: User = user("fuzzer")
    job = api.post("/v1/jobs", json=TINY_SPEC, headers=owner.headers).json()["id"]
    api.post(f"/v1/jobs/{job}/cancel", headers=owner.headers)
    get_store(api.app.state.settings).put_bytes(artifact_key(job, "result.json"), b"{}")
    sweep = api.post("/v1/sweeps", json={"base": TINY_SPEC, "grid": {"seed": [0, 1]}}, headers=owner.headers)
    sweep_id = sweep.json()["id"] if sweep.status_code == 201 else None
    if sweep_id:
        api.post(f"/v1/sweeps/{sweep_id}/cancel", headers=owner.headers)
    ids = {"job_id": job, "sweep_id": sweep_id, "dataset_id": "fashion-mnist"}  # a built-in data set: versions of it
    return {"user": owner.headers, "admin": admin_headers, "ids": ids}


def _grounded(case: Any, ground_body: bool, ground_ids: bool, ids: dict[str, Any]) -> Any:
    """Half the cases keep schemathesis' values; the rest sit on a valid spec or a real id, so
    that fuzzing reaches past the first 422/404 into the service code."""
    if ground_body and isinstance(case.body, dict):
        if "dataset" in case.body or case.path == "/v1/jobs":
            case.body = {**TINY_SPEC, **case.body, "dataset": "fashion-mnist"}
        elif "base" in case.body:
            case.body = {**case.body, "base": {**TINY_SPEC, **(case.body["base"] if isinstance(case.body["base"], dict) else {})}}
    if ground_ids and case.path_parameters:
        case.path_parameters = {k: ids.get(k) or v for k, v in case.path_parameters.items()}
    return case


def _operations() -> list[str]:
    from api.main import create_app

    paths = create_app().openapi()["paths"]
    return [f"{method.upper()} {path}" for path, methods in paths.items() for method in methods]


@pytest.mark.parametrize("operation", _operations())
def test_api_never_answers_5xx(operation: str, fuzz_schema: Any, fuzz_user: dict[str, Any]) -> None:
    method, path = operation.split(" ", 1)
    found = fuzz_schema[path][method].ok() if hasattr(fuzz_schema[path][method], "ok") else fuzz_schema[path][method]
    who = "admin" if path.startswith("/v1/api-keys") else "user"

    @given(case=found.as_strategy(), ground_body=st.booleans(), ground_ids=st.booleans())
    @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case: Any, ground_body: bool, ground_ids: bool) -> None:
        case = _grounded(case, ground_body, ground_ids, fuzz_user["ids"])
        response = case.call(headers={**(case.headers or {}), **fuzz_user[who]})
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code < 300 and "json" in response.headers.get("content-type", ""):
            case.validate_response(response, checks=[response_schema_conformance])

    fuzz()
