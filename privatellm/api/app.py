"""The HTTP API: `create_app(service)` returns a FastAPI app over a Service.

Routes translate HTTP to Service calls and back; no retrieval or ingestion logic lives here.
Handlers are plain functions, so FastAPI runs them (and the streams they return) in its thread
pool, never on the event loop; the Service's ModelGate lets one answer use the model at a time.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from privatellm.api import schemas as s
from privatellm.engines import Message, Sampling
from privatellm.errors import (
    ConfigError,
    EmbeddingMismatchError,
    LoaderError,
    ModelBusyError,
    ModelError,
    NotFoundError,
    PrivateLLMError,
    StoreLockedError,
)
from privatellm.loaders import file_hash
from privatellm.service import Reply, Service
from privatellm.types import Answer, FileOutcome, IngestReport
from privatellm.uploads import Upload, safe_filename

log = logging.getLogger("privatellm.api")

# Context answers also carry their sources in brief in this header: clients that keep only the
# message (LangChain's ChatOpenAI, with include_response_headers=True) can still read them.
SOURCES_HEADER = "X-PrivateLLM-Sources"
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".text")
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
Collection = Annotated[str | None, Query(description="Collection (default: the configured one).")]


def create_app(service: Service) -> FastAPI:
    """Returns the API app serving service (models load on first use)."""
    # FastAPIOffline: the same /docs page, its scripts served from here instead of a CDN.
    app = FastAPIOffline(
        title="privatellm",
        description="Private document Q&A: OpenAI- and PrivateGPT-compatible.",
        version=_version(),
    )
    _handle_errors(app)
    _limit_uploads(app, service)
    guard = [Depends(_authorizer(service.settings.api.api_key))]
    model = _model_id(service)
    routes = _Routes(service, model)

    app.get("/health", tags=["health"])(_health)
    app.post("/v1/chat/completions", dependencies=guard, tags=["completions"])(routes.chat)
    app.post("/v1/completions", dependencies=guard, tags=["completions"])(routes.completions)
    app.post("/v1/chunks", dependencies=guard, tags=["context"])(routes.chunks)
    app.post("/v1/ingest/file", dependencies=guard, tags=["ingestion"])(routes.ingest_file)
    app.post("/v1/ingest/text", dependencies=guard, tags=["ingestion"])(routes.ingest_text)
    app.get("/v1/ingest/list", dependencies=guard, tags=["ingestion"])(routes.ingest_list)
    app.delete("/v1/ingest/{doc_id}", dependencies=guard, tags=["ingestion"])(routes.delete)
    app.post("/v1/summarize", dependencies=guard, tags=["summarize"])(routes.summarize)
    app.post("/v1/embeddings", dependencies=guard, tags=["embeddings"])(routes.embeddings)
    app.get("/v1/models", dependencies=guard, tags=["models"])(routes.models)
    return app


def _health() -> s.Health:
    """Liveness, without authentication (for load balancers and compose healthchecks)."""
    return s.Health()


class _Routes:
    """The handlers, bound to one service."""

    def __init__(self, service: Service, model: str) -> None:
        self.service = service
        self.model = model

    # -- answering --------------------------------------------------------------------------------

    def chat(self, body: s.ChatBody, collection: Collection = None) -> Response:
        """Chat: the last user message is the question; with use_context, answered from the
        documents with sources. A leading system message is the system prompt."""
        messages = [m for m in body.messages if m.content is not None]
        system = messages[0].content if messages and messages[0].role == "system" else None
        users = [i for i, m in enumerate(messages) if m.role == "user"]
        if not users:
            raise ConfigError("messages: there must be a user message")
        question = messages[users[-1]]
        if not body.use_context:
            chat: list[Message] = [{"role": m.role, "content": m.content or ""} for m in messages]
            return self._plain(body, chat)
        history: list[Message] = [
            {"role": m.role, "content": m.content or ""}
            for m in messages[: users[-1]]
            if m.role != "system"
        ]
        reply = self.service.ask(
            question.content or "",
            _pick(body.collection, collection),
            history,
            sources=_docs(body.context_filter),
            sampling=_sampling(body),
            system=system,
        )
        return self._cited(body, reply)

    def completions(self, body: s.CompletionsBody, collection: Collection = None) -> Response:
        """One prompt, optionally with a system prompt; same answers and shapes as chat."""
        if not body.use_context:
            chat: list[Message] = [{"role": "user", "content": body.prompt}]
            if body.system_prompt:
                chat.insert(0, {"role": "system", "content": body.system_prompt})
            return self._plain(body, chat, text=True)
        reply = self.service.ask(
            body.prompt,
            _pick(body.collection, collection),
            sources=_docs(body.context_filter),
            sampling=_sampling(body),
            system=body.system_prompt,
        )
        return self._cited(body, reply, text=True)

    def _plain(self, body: s._Generation, chat: list[Message], text: bool = False) -> Response:
        pieces = iter(self.service.chat(chat, _sampling(body)))
        stream = _started(pieces)
        if body.stream:
            return _sse(self._chunks(stream, None, lambda: None), getattr(pieces, "close", None))
        content = "".join(stream)
        prompt_tokens = sum(self.service.count_tokens(m["content"]) for m in chat)
        return _json(
            self._completion(content, None, None, self._usage(prompt_tokens, content), text)
        )

    def _cited(self, body: s._Generation, reply: Reply, text: bool = False) -> Response:
        stream = _started(iter(reply))
        sources = [s.Chunk.of(h) for h in reply.passages] if body.include_sources else None
        headers = {SOURCES_HEADER: _sources_header(sources)} if sources is not None else None
        if body.stream:
            return _sse(self._chunks(stream, sources, reply.answer), reply.close, headers)
        for _ in stream:
            pass
        answer = reply.answer()
        completion = 0 if answer.abstained else self.service.count_tokens(answer.text)
        usage = s.Usage(
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=completion,
            total_tokens=reply.prompt_tokens + completion,
        )
        return _json(self._completion(answer.text, sources, answer, usage, text), headers)

    def _completion(
        self,
        content: str,
        sources: list[s.Chunk] | None,
        answer: Answer | None,
        usage: s.Usage,
        text: bool,
    ) -> s.OpenAICompletion:
        choice = s.OpenAIChoice(
            finish_reason="stop",
            message=s.OpenAIMessage(role="assistant", content=content),
            text=content if text else None,
            sources=sources,
            cited=[c.n for c in answer.citations] if answer else None,
            abstained=answer.abstained if answer else None,
        )
        return s.OpenAICompletion(model=self.model, choices=[choice], usage=usage)

    def _chunks(
        self, pieces: Iterable[str], sources: list[s.Chunk] | None, finish: Any
    ) -> Iterator[str]:
        """Yields the SSE events of a streamed answer: deltas, a final chunk, [DONE]."""
        completion_id = s.OpenAICompletion(model=self.model, choices=[]).id
        for piece in pieces:
            delta = s.OpenAIChoice(delta=s.OpenAIDelta(content=piece), sources=sources)
            yield _event(self._chunk(completion_id, delta))
        answer: Answer | None = finish()
        last = s.OpenAIChoice(
            delta=s.OpenAIDelta(),
            finish_reason="stop",
            sources=sources,
            cited=[c.n for c in answer.citations] if answer else None,
            abstained=answer.abstained if answer else None,
        )
        yield _event(self._chunk(completion_id, last))
        yield "data: [DONE]\n\n"

    def _chunk(self, completion_id: str, choice: s.OpenAIChoice) -> s.OpenAICompletion:
        return s.OpenAICompletion(
            id=completion_id, object="completion.chunk", model=self.model, choices=[choice]
        )

    def _usage(self, prompt_tokens: int, content: str) -> s.Usage:
        completion = self.service.count_tokens(content)
        return s.Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            total_tokens=prompt_tokens + completion,
        )

    # -- context ----------------------------------------------------------------------------------

    def chunks(self, body: s.ChunksBody, collection: Collection = None) -> s.ListResponse:
        """The passages most relevant to text, best first, with their neighbours if asked."""
        name = _pick(body.collection, collection)
        hits = self.service.retrieve(
            body.text, name, top_k=body.limit, sources=_docs(body.context_filter)
        )
        data = []
        for hit in hits:
            before, after = self.service.neighbours(hit, body.prev_next_chunks, name)
            wanted = body.prev_next_chunks > 0
            data.append(s.Chunk.of(hit, before if wanted else None, after if wanted else None))
        return s.ListResponse(model=self.model, data=data)

    # -- ingestion --------------------------------------------------------------------------------

    def ingest_file(self, file: list[UploadFile], collection: Collection = None) -> s.ListResponse:
        """Ingest uploaded files (one or several `file` parts); each gets its document."""
        limits = self.service.settings.api
        if len(file) > limits.max_files:
            raise HTTPException(413, f"at most {limits.max_files} files per request")
        most = int(limits.max_upload_mb * 1024 * 1024)
        uploads = []
        for part in file:
            data = part.file.read(most + 1)
            if len(data) > most:
                raise HTTPException(413, f"{part.filename}: over {limits.max_upload_mb:g} MB")
            uploads.append(Upload(part.filename or "upload", data))
        return self._ingest(uploads, collection)

    def ingest_text(self, body: s.IngestTextBody, collection: Collection = None) -> s.ListResponse:
        """Ingest text under a file name (".txt" is added unless it names a text format)."""
        name = safe_filename(body.file_name)
        if not name.lower().endswith(TEXT_SUFFIXES):
            name += ".txt"
        upload = Upload(name, body.text.encode("utf-8"))
        return self._ingest([upload], _pick(body.collection, collection))

    def _ingest(self, uploads: list[Upload], collection: str | None) -> s.ListResponse:
        report = self.service.ingest_uploads(uploads, collection)
        by_id = {r.id: r for r in self.service.documents(collection)}
        docs, errors = [], []
        for upload, outcome in zip(uploads, _by_upload(uploads, report), strict=True):
            record = by_id.get(file_hash(upload.data)[:16])
            if outcome.outcome in ("failed", "skipped") or record is None:
                errors.append(outcome)
            else:
                docs.append(s.IngestedDoc.of(record))
        if not docs:
            unsupported = all(e.outcome == "skipped" for e in errors)
            reasons = "; ".join(f"{e.path}: {e.detail}" for e in errors)
            raise HTTPException(415 if unsupported else 422, reasons or "nothing was ingested")
        # The good files are ingested; the others are listed with their reasons.
        failed = [s.IngestError(file_name=e.path, error=e.detail) for e in errors]
        return s.ListResponse(model=self.model, data=docs, errors=failed or None)

    def ingest_list(self, collection: Collection = None) -> s.ListResponse:
        """The documents in the collection (none yet in a fresh default collection)."""
        fresh = (
            collection is None
            and self.service.settings.collection not in self.service.collections()
        )
        records = [] if fresh else self.service.documents(collection)
        return s.ListResponse(model=self.model, data=[s.IngestedDoc.of(r) for r in records])

    def delete(self, doc_id: str, collection: Collection = None) -> s.ListResponse:
        """Delete one document by its id (404 if there is none)."""
        if not any(r.id == doc_id for r in self.service.documents(collection)):
            raise NotFoundError(f"no document with id {doc_id!r}")
        record = self.service.remove(doc_id, collection)
        return s.ListResponse(model=self.model, data=[s.IngestedDoc.of(record)])

    # -- summaries, embeddings, models ------------------------------------------------------------

    def summarize(self, body: s.SummarizeBody, collection: Collection = None) -> Response:
        """A summary of text, or of documents (use_context: the filter's documents, or the
        passages retrieved for prompt)."""
        if body.use_context:
            pieces = self.service.summarize_documents(
                _docs(body.context_filter),
                _pick(body.collection, collection),
                query=body.prompt,
                instructions=body.instructions,
            )
        elif body.text:
            instructions = body.instructions or body.prompt
            pieces = self.service.summarize_text(body.text, instructions)
        else:
            raise ConfigError("give text to summarize, or use_context: true")
        pieces = iter(pieces)
        stream = _started(pieces)
        if body.stream:
            return _sse(self._chunks(stream, None, lambda: None), getattr(pieces, "close", None))
        return _json(s.SummarizeResponse(summary="".join(stream)))

    def embeddings(self, body: s.EmbeddingsBody) -> s.EmbeddingsResponse:
        """OpenAI embeddings of a string or a list of strings, as floats or base64."""
        texts = body.texts()
        if not texts or len(texts) > 2048:
            raise ConfigError("input: give 1 to 2048 strings")
        vectors, tokens = self.service.embed(texts)
        data = [
            s.Embedding(index=i, embedding=_encode(v, body.encoding_format))
            for i, v in enumerate(vectors)
        ]
        return s.EmbeddingsResponse(
            model=self.service.embedder.name,
            data=data,
            usage=s.Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    def models(self) -> s.ModelList:
        """The one model this server answers with."""
        return s.ModelList(data=[s.Model(id=self.model)])


# -- helpers ---------------------------------------------------------------------------------------


def _pick(body_value: str | None, query_value: str | None) -> str | None:
    return body_value or query_value


def _started(pieces: Iterator[str]) -> Iterator[str]:
    """Returns pieces after pulling the first one now: the model is waited for (or found busy)
    while an HTTP status can still say so, not after a stream has begun."""
    first = next(pieces, None)
    return chain([first] if first is not None else [], pieces)


def _docs(context_filter: s.ContextFilter | None) -> list[str] | None:
    if context_filter is None or context_filter.docs_ids is None:
        return None
    if not context_filter.docs_ids:
        raise ConfigError("context_filter.docs_ids is empty: give document ids, or null for all")
    return context_filter.docs_ids


def _sampling(body: s._Generation) -> Sampling:
    return Sampling(body.max_tokens, body.temperature, body.top_p, body.stops())


def _by_upload(uploads: Sequence[Upload], report: IngestReport) -> list[FileOutcome]:
    """Returns one outcome per upload, in order (the report names them as sent)."""
    outcomes = list(report.outcomes)
    picked = []
    for upload in uploads:
        index = next((i for i, o in enumerate(outcomes) if o.path == upload.name), None)
        missing = FileOutcome(upload.name, "failed", "not ingested")
        picked.append(outcomes.pop(index) if index is not None else missing)
    return picked


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":  # what the openai client asks for by default
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


def _event(completion: s.OpenAICompletion) -> str:
    return f"data: {completion.model_dump_json()}\n\n"


def _sources_header(sources: list[s.Chunk]) -> str:
    """Returns the sources in brief, as ASCII JSON: [{n, doc_id, file_name, page, score}]."""
    brief = [
        {
            "n": n,
            "doc_id": c.document.doc_id,
            "file_name": (c.document.doc_metadata or {}).get("file_name"),
            "page": (c.document.doc_metadata or {}).get("page_label"),
            "score": c.score,
        }
        for n, c in enumerate(sources, 1)
    ]
    return json.dumps(brief, separators=(",", ":"))


def _sse(
    events: Iterator[str], on_close: Any = None, headers: dict[str, str] | None = None
) -> StreamingResponse:
    def guarded() -> Iterator[str]:
        try:
            yield from events
        except PrivateLLMError as e:  # mid-stream: the status is sent, so say it in the stream
            yield f"data: {_error_body(str(e), 'server_error').model_dump_json()}\n\n"
        finally:
            if on_close is not None:
                on_close()

    return StreamingResponse(guarded(), media_type="text/event-stream", headers=headers)


def _json(model: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), headers=headers)


def _model_id(service: Service) -> str:
    engine = service.settings.engine
    if engine.kind == "fake":
        return "fake"
    if engine.model.startswith("bundled:"):
        return engine.model.removeprefix("bundled:")
    return Path(engine.model).stem


def _version() -> str:
    from importlib.metadata import version

    return version("privatellm")


# -- security --------------------------------------------------------------------------------------


def _authorizer(api_key: str) -> Any:
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


def _limit_uploads(app: FastAPI, service: Service) -> None:
    """Refuses an ingest request by its declared size before its body is read."""
    limits = service.settings.api
    most = int((limits.max_upload_mb * limits.max_files + 1) * 1024 * 1024)

    @app.middleware("http")
    async def limit(request: Request, call_next: Any) -> Response:
        declared = request.headers.get("content-length", "")
        ingest = request.url.path.startswith("/v1/ingest")
        if ingest and declared.isdigit() and int(declared) > most:
            return _error(413, f"request body over {most // (1024 * 1024)} MB")
        response: Response = await call_next(request)
        return response


# -- errors ----------------------------------------------------------------------------------------


def _error_body(message: str, kind: str) -> s.ErrorBody:
    return s.ErrorBody(error=s.ErrorDetail(message=message, type=kind))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = ERROR_TYPES.get(status, "server_error")
    body = _error_body(message, kind).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def _handle_errors(app: FastAPI) -> None:
    """Every error leaves as an OpenAI-style body: {"error": {"message", "type", ...}}."""

    @app.exception_handler(ModelBusyError)
    async def busy(_: Request, e: ModelBusyError) -> JSONResponse:
        status = 429 if e.queue_full else 503
        return _error(status, str(e), {"Retry-After": str(e.retry_after)})

    @app.exception_handler(PrivateLLMError)
    async def expected(_: Request, e: PrivateLLMError) -> JSONResponse:
        status = next(code for kind, code in STATUS if isinstance(e, kind))
        if status >= 500:
            log.error("%s", e)
        return _error(status, str(e))

    @app.exception_handler(StarletteHTTPException)
    async def http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail), dict(e.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return _error(422, f"{where}: {first['msg']}")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, f"internal error ({type(e).__name__}); details are in the server log")
