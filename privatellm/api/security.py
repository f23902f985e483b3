"""Who may call the API, and how large a request may be before its body is read."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response, Security
from fastapi.security import APIKeyHeader

from privatellm.api.errors import error_response
from privatellm.config import ApiSettings


def authorizer(api_key: str) -> Any:
    """Returns the dependency that refuses a request without the key (none set: all pass)."""
    header = APIKeyHeader(name="Authorization", auto_error=False, description="Bearer KEY")

    # A default, not Annotated[...]: this module's annotations are strings, and `header` is local.
    def authorize(authorization: str | None = Security(header)) -> None:
        if not api_key:
            return
        given = (authorization or "").encode()
        # Both forms are compared, always, in constant time: OpenAI clients send
        # "Bearer KEY"; PrivateGPT clients send the configured secret as the raw header.
        bearer = hmac.compare_digest(given, f"Bearer {api_key}".encode())
        raw = hmac.compare_digest(given, api_key.encode())
        if not (bearer or raw):
            raise HTTPException(401, "missing or wrong API key (Authorization: Bearer KEY)")

    return authorize


def limit_upload_size(app: FastAPI, limits: ApiSettings) -> None:
    """Refuses an ingest request by its declared size before its body is read."""
    most = int((limits.max_upload_mb * limits.max_files + 1) * 1024 * 1024)

    @app.middleware("http")
    async def limit(request: Request, call_next: Any) -> Response:
        declared = request.headers.get("content-length", "")
        ingest = request.url.path.startswith("/v1/ingest")
        if ingest and declared.isdigit() and int(declared) > most:
            return error_response(413, f"request body over {most // (1024 * 1024)} MB")
        response: Response = await call_next(request)
        return response
