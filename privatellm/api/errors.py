"""How errors leave the API: every one as an OpenAI-style body, {"error": {"message", "type"}},
with the HTTP status its kind of failure calls for."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from privatellm.api import schemas as s
from privatellm.errors import (
    ConfigError,
    EmbeddingMismatchError,
    LoaderError,
    ModelBusyError,
    ModelError,
    NotFoundError,
    PrivateLLMError,
    StoreLockedError,
    first_invalid,
)

log = logging.getLogger("privatellm.api")

# First match wins: subclasses before their bases.
STATUS: list[tuple[type[PrivateLLMError], int]] = [
    (NotFoundError, 404),
    (StoreLockedError, 409),
    (EmbeddingMismatchError, 409),
    (ConfigError, 400),
    (LoaderError, 422),
    (ModelError, 500),
    (PrivateLLMError, 400),
]
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def error_body(message: str, kind: str) -> s.ErrorBody:
    """Returns the OpenAI-style error body."""
    return s.ErrorBody(error=s.ErrorDetail(message=message, type=kind))


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Returns an error body with its HTTP status."""
    kind = ERROR_TYPES.get(status, "server_error")
    body = error_body(message, kind).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Makes every error leave app as an error body: privatellm's, HTTP's, validation's, bugs'."""

    @app.exception_handler(ModelBusyError)
    async def busy(_: Request, e: ModelBusyError) -> JSONResponse:
        status = 429 if e.queue_full else 503
        return error_response(status, str(e), {"Retry-After": str(e.retry_after)})

    @app.exception_handler(PrivateLLMError)
    async def expected(_: Request, e: PrivateLLMError) -> JSONResponse:
        status = next(code for kind, code in STATUS if isinstance(e, kind))
        if status >= 500:
            log.error("%s", e)
        return error_response(status, str(e))

    @app.exception_handler(StarletteHTTPException)
    async def http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), dict(e.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(422, first_invalid(e.errors()))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error")
        message = f"internal error ({type(e).__name__}); details are in the server log"
        return error_response(500, message)
