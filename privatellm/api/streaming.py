"""Streamed answers as server-sent events, the way OpenAI clients read them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any

from fastapi.responses import StreamingResponse

from privatellm.api import schemas as s
from privatellm.api.errors import error_body
from privatellm.errors import PrivateLLMError
from privatellm.types import Answer

# Context answers also carry their sources in brief in this header: clients that keep only the
# message (LangChain's ChatOpenAI, with include_response_headers=True) can still read them.
SOURCES_HEADER = "X-PrivateLLM-Sources"


def pull_first(pieces: Iterator[str]) -> Iterator[str]:
    """Returns pieces after pulling the first one now: the model is waited for (or found busy)
    while an HTTP status can still say so, not after a stream has begun."""
    first = next(pieces, None)
    return chain([first] if first is not None else [], pieces)


def completion_events(
    model: str,
    pieces: Iterable[str],
    sources: list[s.Chunk] | None,
    finish: Callable[[], Answer | None],
) -> Iterator[str]:
    """Yields the SSE events of a streamed completion: deltas, a final chunk, [DONE]."""
    completion_id = s.OpenAICompletion(model=model, choices=[]).id
    for piece in pieces:
        delta = s.OpenAIChoice(delta=s.OpenAIDelta(content=piece), sources=sources)
        yield _event(_chunk(model, completion_id, delta))
    answer = finish()
    # The finished text too: auto may quote instead of the words streamed, or keep only some.
    text = answer.text if answer is not None else None
    last = s.OpenAIChoice(
        delta=s.OpenAIDelta(),
        finish_reason="stop",
        sources=sources,
        text=text,
        **answer_fields(answer),
    )
    yield _event(_chunk(model, completion_id, last))
    yield "data: [DONE]\n\n"


def answer_fields(answer: Answer | None) -> dict[str, Any]:
    """Returns what a choice says of a finished answer from the documents (nothing without)."""
    if answer is None:
        return {}
    return {
        "cited": [c.n for c in answer.citations],
        "abstained": answer.abstained,
        "answer_kind": answer.kind,
        "citations": [s.CitedSpan.of(c) for c in answer.citations],
    }


def event_stream(
    events: Iterator[str],
    on_close: Callable[[], object] | None = None,
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """Returns the response streaming events; on_close runs however the stream ends."""

    def guarded() -> Iterator[str]:
        try:
            yield from events
        except PrivateLLMError as e:  # mid-stream: the status is sent, so say it in the stream
            yield f"data: {error_body(str(e), 'server_error').model_dump_json()}\n\n"
        finally:
            if on_close is not None:
                on_close()

    return StreamingResponse(guarded(), media_type="text/event-stream", headers=headers)


def sources_header(sources: list[s.Chunk]) -> str:
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


def _chunk(model: str, completion_id: str, choice: s.OpenAIChoice) -> s.OpenAICompletion:
    return s.OpenAICompletion(
        id=completion_id, object="completion.chunk", model=model, choices=[choice]
    )


def _event(completion: s.OpenAICompletion) -> str:
    return f"data: {completion.model_dump_json()}\n\n"
