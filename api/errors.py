"""Every error the API answers has one shape: {"error": {"code", "message", "field"}}.

Our errors carry their code and status (shared/errors.py); `error_parts` reads them, and
gives Starlette's own HTTP errors a code; `install` registers the one handler for both.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from shared.errors import NoisyfitError

_HTTP_CODES = {
    400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
    415: "unsupported_media_type",
}

ErrorParts = tuple[int, str, str, str | None, dict[str, str]]


def error_parts(exc: Exception) -> ErrorParts:
    """(status, code, message, field, headers) of an error: ours carry them; Starlette's own
    (an unknown route, a wrong method) get a code from their status."""
    if isinstance(exc, NoisyfitError):
        return exc.status, exc.code, exc.message, exc.field, getattr(exc, "headers", {})
    if isinstance(exc, HTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return exc.status_code, code, str(exc.detail), None, dict(exc.headers or {})
    raise TypeError(f"no error mapping for {type(exc).__name__}")


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


async def _handle(_request: Request, exc: Exception) -> JSONResponse:
    status, code, message, field, headers = error_parts(exc)
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
    for kind in (HTTPException, NoisyfitError):
        app.add_exception_handler(kind, _handle)
    app.add_exception_handler(RequestValidationError, _handle_validation)
