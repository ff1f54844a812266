"""Every error the API answers, as JSON `{"error": code, "message": text}`: one table
from domain error to (HTTP status, error code), installed as the exception handlers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from imageblur.batches.model import BatchRefused
from imageblur.corrections import (
    DuplicateRegion,
    InvalidCorrection,
    InvalidRegions,
    ReasonRequired,
    TooManyRegions,
)
from imageblur.domain import (
    BackendUnavailable,
    IdempotencyKeyReused,
    ImageblurError,
    InvalidImage,
    NotFound,
    NotInReview,
    NotReady,
    NotSupported,
    OriginalGone,
    Overloaded,
    RenderFailed,
    Rendering,
    StaleRevision,
    VideoRefused,
)
from imageblur.logs import get_logger
from imageblur.upload_options import InvalidOption, OptionNotAllowed, ReviewUnavailable

log = get_logger(__name__)


# The most specific class of an error decides. An `InvalidImage` carries its own 4xx and
# code (413 too_large, 415 unsupported_media_type, ...); the entry is its fallback.
class Rejected(ImageblurError):  # noqa: N818 - an HTTP-level refusal with its own status
    """A request the API refuses before any use case runs: missing precondition, wrong
    role, a body too large."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code


class BodyTooSlow(StarletteHTTPException):
    """A request body slower than its floor (middleware/body_deadline.py): raised from
    `receive` into the route reading the body, so the route's own cleanup runs (nothing
    stored), and answered `408 upload_too_slow`. An `HTTPException`, because FastAPI
    turns any other exception out of a body it parses into `400`."""

    def __init__(self, received: int, elapsed_s: float, min_bytes_per_s: int) -> None:
        super().__init__(
            408,
            f"the request body came too slowly: {received} bytes in {elapsed_s:.0f} s, "
            f"below the floor of {min_bytes_per_s} bytes/s",
            headers={"Connection": "close"},
        )


ERROR_TABLE: dict[type[ImageblurError], tuple[int, str]] = {
    Rejected: (400, "bad_request"),
    BatchRefused: (422, "invalid_batch"),
    InvalidImage: (400, "invalid_image"),
    VideoRefused: (400, "invalid_video"),
    InvalidCorrection: (400, "invalid_json"),
    InvalidRegions: (422, "invalid_regions"),
    ReasonRequired: (422, "reason_required"),
    TooManyRegions: (422, "too_many_regions"),
    DuplicateRegion: (422, "duplicate_region"),
    ReviewUnavailable: (422, "review_unavailable"),
    InvalidOption: (422, "invalid_option"),
    OptionNotAllowed: (403, "option_not_allowed"),
    StaleRevision: (412, "stale_revision"),
    OriginalGone: (409, "original_gone"),
    NotInReview: (409, "not_in_review"),
    NotSupported: (409, "not_supported"),
    IdempotencyKeyReused: (409, "idempotency_key_reused"),
    Rendering: (409, "rendering"),
    RenderFailed: (409, "render_failed"),
    NotFound: (404, "not_found"),
    NotReady: (409, "not_ready"),
    Overloaded: (503, "overloaded"),
    BackendUnavailable: (503, "unavailable"),
}
RETRY_AFTER_S = 5
# 408: only a body slower than the floor (middleware/body_deadline.py) is answered so.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 408: "upload_too_slow"}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def error_response(
    status: int, code: str, message: str, *, field: str | None = None, **headers: str
) -> JSONResponse:
    """The error body; `field`: the option an upload's refusal is about."""
    if status == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    body = {"error": code, "message": message} | ({"field": field} if field else {})
    return JSONResponse(body, status_code=status, headers=headers or None)


def status_and_code(exc: ImageblurError) -> tuple[int, str]:
    if isinstance(exc, InvalidImage | VideoRefused | Rejected | BatchRefused):
        return exc.http_status, exc.code
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    raise LookupError(type(exc).__name__)  # pragma: no cover - only tabled ones come here


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageblurError)
    status, code = status_and_code(exc)
    message = (
        exc.message if isinstance(exc, InvalidImage | VideoRefused | BatchRefused) else str(exc)
    )
    if isinstance(exc, BackendUnavailable):
        log.warning("backend.unavailable", backend=exc.backend, error=str(exc))
        message = f"the {exc.backend} is unavailable; retry later"
    elif isinstance(exc, Overloaded):
        log.warning("api.overloaded", error=str(exc))
    field = exc.field if isinstance(exc, InvalidOption | OptionNotAllowed) else None
    return error_response(status, code, message, field=field)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return error_response(422, "invalid_request", details or "invalid request")


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), **headers)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("http.internal_error", path=request.url.path)
    # Answered outside the middlewares (Starlette's last resort), so the request id is
    # added here; it is what an operator looks up in the log line above.
    request_id = getattr(request.state, "request_id", None)
    headers = {"X-Request-ID": request_id} if isinstance(request_id, str) else {}
    return error_response(500, "internal_error", "internal error; it has been logged", **headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this path (RFC 9110: a 405 lists them all),
    not only those of the first route that matched the path: each method is tried
    against the routes, as the router itself would. HEAD goes with GET (middleware/head.py)."""
    allowed = {
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    }
    if "GET" in allowed:
        allowed.add("HEAD")
    return [method for method in _METHODS if method in allowed]


def install_error_handlers(app: FastAPI) -> None:
    for error in ERROR_TABLE:
        app.add_exception_handler(error, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _internal)
