"""The HTTP API: `create_app(service, watchers)` returns a FastAPI app over a Service.

The app is assembled here from its parts: `routes` (handlers), `streaming` (server-sent events),
`security` (API key, upload size) and `errors` (OpenAI-style error bodies).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Depends, FastAPI, Response
from fastapi_offline import FastAPIOffline

from privatellm.api import schemas as s
from privatellm.api.errors import install_error_handlers
from privatellm.api.routes import Routes
from privatellm.api.security import authorizer, limit_upload_size
from privatellm.service import Service
from privatellm.watching import FolderWatcher


def create_app(service: Service, watchers: Sequence[FolderWatcher] = ()) -> FastAPI:
    """Returns the API app serving service (models load on first use) and reporting how the
    watchers' folders stand; it neither starts nor stops the watchers."""
    # FastAPIOffline: the same /docs page, its scripts served from here instead of a CDN.
    app = FastAPIOffline(
        title="privatellm",
        description="Private document Q&A: OpenAI- and PrivateGPT-compatible.",
        version=_version(),
    )
    install_error_handlers(app)
    limit_upload_size(app, service.settings.api)
    guard = [Depends(authorizer(service.settings.api.api_key))]
    routes = Routes(service, service.chat_models.default, watchers)

    app.get("/health", tags=["health"])(_health)
    app.post("/v1/chat/completions", dependencies=guard, tags=["completions"])(routes.chat)
    app.post("/v1/completions", dependencies=guard, tags=["completions"])(routes.completions)
    app.post("/v1/chunks", dependencies=guard, tags=["context"])(routes.chunks)
    app.post("/v1/ingest/file", dependencies=guard, tags=["ingestion"])(routes.ingest_file)
    app.post("/v1/ingest/text", dependencies=guard, tags=["ingestion"])(routes.ingest_text)
    app.get("/v1/ingest/list", dependencies=guard, tags=["ingestion"])(routes.ingest_list)
    app.get("/v1/ingest/watch", dependencies=guard, tags=["ingestion"])(routes.watched)
    app.delete("/v1/ingest/{doc_id}", dependencies=guard, tags=["ingestion"])(routes.delete)
    app.get(
        "/v1/documents/{doc_id}/pages/{page}.png",
        dependencies=guard,
        tags=["context"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )(routes.page_image)
    app.post("/v1/summarize", dependencies=guard, tags=["summarize"])(routes.summarize)
    app.post("/v1/embeddings", dependencies=guard, tags=["embeddings"])(routes.embeddings)
    app.get("/v1/models", dependencies=guard, tags=["models"])(routes.models)
    return app


def _health() -> s.Health:
    """Liveness, without authentication (for load balancers and compose healthchecks)."""
    return s.Health()


def _version() -> str:
    from importlib.metadata import version

    return version("privatellm")
