"""Request and response bodies of the HTTP API: PrivateGPT v0.6.2's shapes plus the standard
OpenAI fields, so clients of either work unchanged. FastAPI derives /docs from these."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from privatellm.types import Citation, DocumentRecord, ScoredChunk

if TYPE_CHECKING:
    from privatellm.watching import WatchState

Role = Literal["system", "user", "assistant"]


class _Body(BaseModel):
    # OpenAI clients send fields this server has no use for (n, seed, user, ...): accept them.
    model_config = ConfigDict(extra="allow")


class ContextFilter(BaseModel):
    docs_ids: list[str] | None = Field(default=None, examples=[["c202d5e6a2b6c3f1"]])


class OpenAIMessage(BaseModel):
    role: Role = "user"
    content: str | None = None


class _Generation(_Body):
    """What every generating request may say: the standard OpenAI fields and PrivateGPT's."""

    model: str | None = Field(
        default=None,
        description="A registered chat model's name (GET /v1/models) answers; any other name "
        "(OpenAI clients send their own, e.g. 'gpt-4o') gets the configured model.",
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    use_context: bool = False
    context_filter: ContextFilter | None = None
    include_sources: bool = True
    stream: bool = False
    collection: str | None = Field(
        default=None, description="Collection to answer from (default one)."
    )
    answer_mode: Literal["auto", "generate", "extract"] | None = Field(
        default=None,
        description="privatellm, with use_context: generate (the model's words), extract (a "
        "quote of the passages, no model), auto (the model's supported sentences, else a "
        "quote). Default: the server's answer.mode.",
    )

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop[:4])


class ChatBody(_Generation):
    messages: list[OpenAIMessage] = Field(..., min_length=1)


class CompletionsBody(_Generation):
    prompt: str
    system_prompt: str | None = None


class ChunksBody(_Body):
    text: str = Field(..., min_length=1)
    context_filter: ContextFilter | None = None
    limit: int = Field(default=10, ge=1, le=100)
    prev_next_chunks: int = Field(default=0, ge=0, le=10)
    collection: str | None = None


class IngestTextBody(_Body):
    file_name: str = Field(..., min_length=1, max_length=255)
    text: str
    collection: str | None = None


class SummarizeBody(_Body):
    text: str | None = None
    use_context: bool = False
    context_filter: ContextFilter | None = None
    prompt: str | None = None
    instructions: str | None = None
    stream: bool = False
    collection: str | None = None


class EmbeddingsBody(_Body):
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


# -- responses ------------------------------------------------------------------------------------


class IngestedDoc(BaseModel):
    object: Literal["ingest.document"] = "ingest.document"
    doc_id: str
    doc_metadata: dict[str, Any] | None = None

    @classmethod
    def of(cls, record: DocumentRecord) -> IngestedDoc:
        return cls(
            doc_id=record.id,
            doc_metadata={
                "file_name": Path(record.source).name,
                "pages": record.pages,
                "chunks": record.chunks,
                "ingested_at": record.ingested_at,
            },
        )


class Chunk(BaseModel):
    object: Literal["context.chunk"] = "context.chunk"
    score: float
    document: IngestedDoc
    text: str
    previous_texts: list[str] | None = None
    next_texts: list[str] | None = None

    @classmethod
    def of(
        cls, hit: ScoredChunk, previous: list[str] | None = None, following: list[str] | None = None
    ) -> Chunk:
        c = hit.chunk
        metadata = {
            "file_name": Path(c.source).name,
            "page_label": str(c.page) if c.page is not None else None,
        }
        return cls(
            score=round(hit.score, 4),
            document=IngestedDoc(doc_id=c.doc_id, doc_metadata=metadata),
            text=c.text,
            previous_texts=previous,
            next_texts=following,
        )


class OpenAIDelta(BaseModel):
    content: str | None = None


class CitedSpan(BaseModel):
    n: int = Field(description="The [n] of the answer: sources[n-1].")
    doc_id: str
    page: int | None = None
    quote: str = Field(description="The supporting span, verbatim.")
    start: int = Field(description="Offset of the quote in the passage's text.")
    end: int
    page_start: int = Field(description="Offset of the quote in its page's text.")
    page_end: int

    @classmethod
    def of(cls, c: Citation) -> CitedSpan:
        return cls(
            n=c.n,
            doc_id=c.doc_id,
            page=c.page,
            quote=c.quote,
            start=c.quote_start,
            end=c.quote_end,
            page_start=c.start + c.quote_start,
            page_end=c.start + c.quote_end,
        )


class OpenAIChoice(BaseModel):
    index: int = 0
    finish_reason: str | None = None
    message: OpenAIMessage | None = None
    delta: OpenAIDelta | None = None
    text: str | None = Field(
        default=None,
        description="The answer again, for OpenAI completions clients; on a stream's last chunk, "
        "the finished answer (auto may have quoted instead of the words streamed).",
    )
    sources: list[Chunk] | None = Field(
        default=None, description="Passages given to the model: [n] in the answer is sources[n-1]."
    )
    cited: list[int] | None = Field(
        default=None,
        description="privatellm: the [n] the finished answer cites (a passage supports each).",
    )
    abstained: bool | None = Field(
        default=None,
        description="privatellm: the documents held nothing close enough to answer from.",
    )
    answer_kind: Literal["generated", "quoted", "abstained"] | None = Field(
        default=None,
        description="privatellm: what the answer is: the model's words, a quote of a passage "
        "(the model's were not supported), or 'the documents don't say'.",
    )
    citations: list[CitedSpan] | None = Field(
        default=None,
        description="privatellm: for each cited [n], the span of it that supports the answer.",
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class OpenAICompletion(BaseModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: Literal["completion", "completion.chunk"] = "completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[OpenAIChoice]
    usage: Usage | None = None


class IngestError(BaseModel):
    file_name: str
    error: str


class ListResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Any]
    errors: list[IngestError] | None = Field(
        default=None, description="privatellm: uploaded files that were not ingested, and why."
    )


class SummarizeResponse(BaseModel):
    summary: str


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Embedding]
    usage: Usage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "privatellm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class WatchedFolder(BaseModel):
    object: Literal["ingest.watch"] = "ingest.watch"
    path: str = Field(description="The watched folder (ingest.watch in the settings).")
    collection: str = Field(description="The collection its files go to.")
    state: Literal["starting", "in step", "pending", "error"] = Field(
        description="starting (the first pass over the folder runs), in step (the collection "
        "holds what the folder holds), pending (changes wait to be read), error (the watcher "
        "stopped following the folder: see last_error)."
    )
    pending: int = Field(description="Files waiting to be read or removed.")
    last_error: str | None = Field(
        default=None, description="The last failure, one line (a file that could not be read)."
    )
    last_event: str | None = Field(
        default=None, description="The last change made, one line ('added report.pdf (12 chunks)')."
    )

    @classmethod
    def of(cls, state: WatchState) -> WatchedFolder:
        return cls(
            path=state.path,
            collection=state.collection,
            state=state.state,
            pending=state.pending,
            last_error=state.last_error,
            last_event=state.last_event,
        )


class WatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WatchedFolder]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
