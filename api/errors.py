"""Every error the API answers has one shape: {"error": {"code", "message", "field"}}.

`describe` maps each kind of exception to (status, code, message, field) in one place;
`install` registers the one handler for all of them.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from shared.dataset_service import StorageQuotaExceeded
from shared.jobs import Conflict, InvalidCursor, LimitError, NotFound, QueueUnavailable, ServiceError
from shared.errors import SpecError
from shared.store import BadArtifactName, ObjectMissing, StoreUnavailable
from shared.stream import StreamUnavailable
from shared.uploads import BadDataset


class ApiError(HTTPException):
    """An error raised by the HTTP layer itself (auth, sizes); an HTTPException so that it
    passes through FastAPI's body parsing unchanged."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(self.status, message, headers)
        self.field = field


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class RequestTooLarge(ApiError):
    status, code = 413, "request_too_large"


_SERVICE_STATUS: dict[type[ServiceError], int] = {
    NotFound: 404, Conflict: 409, LimitError: 429, InvalidCursor: 422, QueueUnavailable: 503,
    StorageQuotaExceeded: 413,
}
_HTTP_CODES = {
    400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
    415: "unsupported_media_type",
}

Described = tuple[int, str, str, str | None]


def describe(exc: Exception) -> Described:
    match exc:
        case ApiError():
            return exc.status_code, exc.code, str(exc.detail), exc.field
        case HTTPException():
            return exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail), None
        case ServiceError():
            status = next((s for cls, s in _SERVICE_STATUS.items() if isinstance(exc, cls)), 400)
            return status, exc.code, exc.message, exc.field
        case SpecError():
            return 422, "invalid_spec", exc.message, exc.field
        case BadDataset():
            return 400, exc.code, exc.message, exc.field
        case BadArtifactName():
            return 422, "invalid_artifact_name", str(exc), "name"
        case ObjectMissing():
            return 404, "not_found", "no such artifact; GET /v1/jobs/{id}/artifacts lists them", "name"
        case StreamUnavailable():
            return 503, "stream_unavailable", f"{exc}; job status (GET /v1/jobs/{{id}}) still answers", None
        case StoreUnavailable():
            return 503, "store_unavailable", f"{exc}; retry later", None
    raise TypeError(f"no error mapping for {type(exc).__name__}")


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


async def _handle(_request: Request, exc: Exception) -> JSONResponse:
    status, code, message, field = describe(exc)
    headers = getattr(exc, "headers", None) or {}
    if status == 503:
        headers = {**headers, "Retry-After": "5"}
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


async def _handle_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Pydantic's errors in the one shape: the first as the error, all under `details`."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    body_model = body_field.field_info.annotation if body_field is not None else None
    details = [_validation_detail(err, body_model) for err in exc.errors()]
    first = details[0]
    return JSONResponse(
        error_body("validation_error", first["message"], first["field"], details=details), status_code=422
    )


def _validation_detail(err: dict[str, Any], body_model: Any) -> dict[str, Any]:
    where, *path = err["loc"] or ("body",)
    field = ".".join(str(p) for p in path) or None
    message = err["msg"]
    if err["type"] == "extra_forbidden" and where == "body":
        allowed = _fields_at(body_model, [str(p) for p in path[:-1]])
        message = f"unknown field {path[-1]!r}" + (f"; allowed fields: {', '.join(allowed)}" if allowed else "")
    elif err["type"] == "missing":
        message = f"{where} field {field!r} is required" if field else f"a {where} is required"
    elif where != "body":
        message = f"{where} parameter {field!r}: {message}"
    return {"field": field, "message": message}


def _fields_at(model: Any, path: list[str]) -> list[str]:
    """The fields allowed where an unknown one was sent, following `path` through nested models."""
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        model = next((a for a in getattr(annotation, "__args__", ()) if isinstance(a, type)), annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def install(app: FastAPI) -> None:
    for kind in (HTTPException, ServiceError, SpecError, BadDataset, BadArtifactName, ObjectMissing,
                 StreamUnavailable, StoreUnavailable):
        app.add_exception_handler(kind, _handle)
    app.add_exception_handler(RequestValidationError, _handle_validation)
