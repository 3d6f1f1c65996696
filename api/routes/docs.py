"""/docs (Swagger UI) and /redoc, built from the assets vendored in api/static, so they work offline."""

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
STATIC_URL = "/static"
SWAGGER_UI = f"{STATIC_URL}/vendor/swagger-ui"
REDOC = f"{STATIC_URL}/vendor/redoc"
FAVICON = f"{SWAGGER_UI}/favicon-32x32.png"

router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


def _root(request: Request) -> str:
    """The path prefix a proxy serves the API under (uvicorn --root-path), as FastAPI's own docs use it."""
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=root + request.app.openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url=root + FAVICON,
        swagger_ui_parameters={"validatorUrl": None},  # else it shows a badge fetched from validator.swagger.io
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=root + request.app.openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{REDOC}/redoc.standalone.js",
        redoc_favicon_url=root + FAVICON,
        with_google_fonts=False,
    )
