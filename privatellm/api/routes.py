"""The API's handlers: HTTP in, Service calls, HTTP out. No retrieval or ingestion logic here.

Handlers are plain functions, so FastAPI runs them (and the streams they return) in its thread
pool, never on the event loop; the Service's gate lets one answer use the model at a time.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from fastapi import HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from privatellm.answering import Reply
from privatellm.api import schemas as s
from privatellm.api.streaming import (
    SOURCES_HEADER,
    answer_fields,
    completion_events,
    event_stream,
    pull_first,
    sources_header,
)
from privatellm.engines import Message, Sampling
from privatellm.errors import ConfigError, NotFoundError
from privatellm.service import Service
from privatellm.types import Answer
from privatellm.uploads import Upload, safe_filename
from privatellm.watching import FolderWatcher

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".text")
CollectionParam = Annotated[
    str | None, Query(description="Collection (default: the configured one).")
]

HighlightParam = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9]{1,9}-[0-9]{1,9}$",
        description="START-END: character offsets into the page's text (a chunk's start and "
        "end) to mark on the image.",
    ),
]


class Routes:
    """The handlers, bound to one service, the model name it answers as by default, and the
    watchers keeping its folders in step."""

    def __init__(
        self, service: Service, model: str, watchers: Sequence[FolderWatcher] = ()
    ) -> None:
        self.service = service
        self.model = model
        self.watchers = tuple(watchers)

    def _answering(self, requested: str | None) -> tuple[Service, str]:
        """Returns the service answering a request and its model's name: the registered chat
        model the request names, else the configured one (OpenAI clients send names of their
        own, such as 'gpt-4o', that must keep working)."""
        found = self.service.registry.find(requested) if requested else None
        if found is None or found.role != "chat":
            return self.service.for_model(None), self.model  # counted among the loaded ones
        return self.service.for_model(found.name), found.name

    # -- answering --------------------------------------------------------------------------------

    def chat(self, body: s.ChatBody, collection: CollectionParam = None) -> Response:
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
            return self._uncited(body, chat)
        service, model = self._answering(body.model)
        history: list[Message] = [
            {"role": m.role, "content": m.content or ""}
            for m in messages[: users[-1]]
            if m.role != "system"
        ]
        reply = service.ask(
            question.content or "",
            body.collection or collection,
            history,
            sources=_filter_doc_ids(body.context_filter),
            sampling=_sampling(body),
            system=system,
            answer_mode=body.answer_mode,
        )
        return self._cited(body, reply, service, model)

    def completions(self, body: s.CompletionsBody, collection: CollectionParam = None) -> Response:
        """One prompt, optionally with a system prompt; same answers and shapes as chat."""
        if not body.use_context:
            chat: list[Message] = [{"role": "user", "content": body.prompt}]
            if body.system_prompt:
                chat.insert(0, {"role": "system", "content": body.system_prompt})
            return self._uncited(body, chat, text=True)
        service, model = self._answering(body.model)
        reply = service.ask(
            body.prompt,
            body.collection or collection,
            sources=_filter_doc_ids(body.context_filter),
            sampling=_sampling(body),
            system=body.system_prompt,
            answer_mode=body.answer_mode,
        )
        return self._cited(body, reply, service, model, text=True)

    def _uncited(self, body: s._Generation, chat: list[Message], text: bool = False) -> Response:
        """Returns the model's own reply to chat, no documents involved."""
        service, model = self._answering(body.model)
        pieces = iter(service.chat(chat, _sampling(body)))
        stream = pull_first(pieces)
        if body.stream:
            events = completion_events(model, stream, None, lambda: None)
            return event_stream(events, getattr(pieces, "close", None))
        content = "".join(stream)
        prompt_tokens = sum(service.count_tokens(m["content"]) for m in chat)
        usage = self._usage(prompt_tokens, service.count_tokens(content))
        return _json(self._completion(model, content, None, None, usage, text))

    def _cited(
        self,
        body: s._Generation,
        reply: Reply,
        service: Service,
        model: str,
        text: bool = False,
    ) -> Response:
        """Returns an answer from the documents, with its sources if the body asks for them."""
        stream = pull_first(iter(reply))
        sources = [s.Chunk.of(h) for h in reply.passages] if body.include_sources else None
        headers = {SOURCES_HEADER: sources_header(sources)} if sources is not None else None
        if body.stream:
            events = completion_events(model, stream, sources, reply.answer)
            return event_stream(events, reply.close, headers)
        for _ in stream:
            pass
        answer = reply.answer()
        completion = 0 if answer.abstained else service.count_tokens(answer.text)
        usage = self._usage(reply.prompt_tokens, completion)
        return _json(self._completion(model, answer.text, sources, answer, usage, text), headers)

    @staticmethod
    def _completion(
        model: str,
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
            **answer_fields(answer),
        )
        return s.OpenAICompletion(model=model, choices=[choice], usage=usage)

    @staticmethod
    def _usage(prompt_tokens: int, completion_tokens: int) -> s.Usage:
        return s.Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    # -- context ----------------------------------------------------------------------------------

    def chunks(self, body: s.ChunksBody, collection: CollectionParam = None) -> s.ListResponse:
        """The passages most relevant to text, best first, with their neighbours if asked."""
        name = body.collection or collection
        hits = self.service.retrieve(
            body.text, name, top_k=body.limit, sources=_filter_doc_ids(body.context_filter)
        )
        data = []
        for hit in hits:
            before, after = self.service.neighbours(hit, body.prev_next_chunks, name)
            wanted = body.prev_next_chunks > 0
            data.append(s.Chunk.of(hit, before if wanted else None, after if wanted else None))
        return s.ListResponse(model=self.model, data=data)

    def page_image(
        self,
        doc_id: str,
        page: int,
        highlight: HighlightParam = None,
        collection: CollectionParam = None,
    ) -> Response:
        """A PNG of one page (from 1) of a PDF document, a character range of its text marked."""
        span = None
        if highlight is not None:
            start, end = (int(n) for n in highlight.split("-"))
            span = (start, end)
        png = self.service.page_image(doc_id, page, span, collection)
        return Response(content=png, media_type="image/png")

    # -- ingestion --------------------------------------------------------------------------------

    def ingest_file(
        self, file: list[UploadFile], collection: CollectionParam = None
    ) -> s.ListResponse:
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

    def ingest_text(
        self, body: s.IngestTextBody, collection: CollectionParam = None
    ) -> s.ListResponse:
        """Ingest text under a file name (".txt" is added unless it names a text format)."""
        name = safe_filename(body.file_name)
        if not name.lower().endswith(TEXT_SUFFIXES):
            name += ".txt"
        upload = Upload(name, body.text.encode("utf-8"))
        return self._ingest([upload], body.collection or collection)

    def _ingest(self, uploads: list[Upload], collection: str | None) -> s.ListResponse:
        report = self.service.ingest_uploads(uploads, collection)
        by_id = {r.id: r for r in self.service.documents(collection)}
        docs, errors = [], []
        for outcome in report.outcomes:  # one per upload, in order
            record = by_id.get(outcome.doc_id)
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

    def ingest_list(self, collection: CollectionParam = None) -> s.ListResponse:
        """The documents in the collection (none yet in a fresh default collection)."""
        fresh = (
            collection is None
            and self.service.settings.collection not in self.service.collections()
        )
        records = [] if fresh else self.service.documents(collection)
        return s.ListResponse(model=self.model, data=[s.IngestedDoc.of(r) for r in records])

    def delete(self, doc_id: str, collection: CollectionParam = None) -> s.ListResponse:
        """Delete one document by its id (404 if there is none)."""
        if not any(r.id == doc_id for r in self.service.documents(collection)):
            raise NotFoundError(f"no document with id {doc_id!r}")
        record = self.service.remove(doc_id, collection)
        return s.ListResponse(model=self.model, data=[s.IngestedDoc.of(record)])

    def watched(self) -> s.WatchList:
        """The folders kept in step (ingest.watch in the settings) and how each stands."""
        return s.WatchList(data=[s.WatchedFolder.of(w.state()) for w in self.watchers])

    # -- summaries, embeddings, models ------------------------------------------------------------

    def summarize(self, body: s.SummarizeBody, collection: CollectionParam = None) -> Response:
        """A summary of text, or of documents (use_context: the filter's documents, or the
        passages retrieved for prompt)."""
        if body.use_context:
            pieces = self.service.summarize_documents(
                _filter_doc_ids(body.context_filter),
                body.collection or collection,
                query=body.prompt,
                instructions=body.instructions,
            )
        elif body.text:
            instructions = body.instructions or body.prompt
            pieces = self.service.summarize_text(body.text, instructions)
        else:
            raise ConfigError("give text to summarize, or use_context: true")
        pieces = iter(pieces)
        stream = pull_first(pieces)
        if body.stream:
            events = completion_events(self.model, stream, None, lambda: None)
            return event_stream(events, getattr(pieces, "close", None))
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
        """The chat models this server answers with: the configured one first, then every
        registered one (`privatellm models list`); a request's `model` picks one."""
        return s.ModelList(data=[s.Model(id=name) for name in self.service.chat_models.names()])


def _filter_doc_ids(context_filter: s.ContextFilter | None) -> list[str] | None:
    """Returns the document ids a request limits itself to (None: all documents)."""
    if context_filter is None or context_filter.docs_ids is None:
        return None
    if not context_filter.docs_ids:
        raise ConfigError("context_filter.docs_ids is empty: give document ids, or null for all")
    return context_filter.docs_ids


def _sampling(body: s._Generation) -> Sampling:
    return Sampling(body.max_tokens, body.temperature, body.top_p, body.stops())


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":  # what the openai client asks for by default
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


def _json(model: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), headers=headers)
