"""Summaries of texts longer than the context window: map-reduce over windows that fit."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from privatellm.answering import until_repeated
from privatellm.chunking import chunk_id
from privatellm.gate import GatedModel
from privatellm.prompts import summary_budget, summary_messages
from privatellm.store import Collection
from privatellm.types import DocumentRecord


class Summarizer:
    """Summarizes texts with one model."""

    def __init__(self, model: GatedModel) -> None:
        self._model = model

    def summarize(self, texts: list[str], instructions: str | None = None) -> Iterator[str]:
        """Yields a summary of texts: partial summaries of windows that fit the context,
        combined until one prompt holds them all (map-reduce); instructions shape the last."""
        engine = self._model.engine
        budget = summary_budget(engine, self._model.settings.max_tokens, instructions)
        combine = False
        while True:
            windows = split_windows(texts, engine.count_tokens, budget)
            if len(windows) <= 1:
                text = windows[0] if windows else ""
                last = summary_messages(text, combine, instructions)
                yield from until_repeated(self._model.generate(last))
                return
            texts = [
                "".join(until_repeated(self._model.generate(summary_messages(w, combine))))
                for w in windows
            ]
            combine = True


def split_windows(texts: Sequence[str], count: Callable[[str], int], budget: int) -> list[str]:
    """Returns texts joined into as few windows of at most budget tokens as order allows."""
    windows: list[str] = []
    current: list[str] = []
    used = 0
    for text in texts:
        cost = count(text) + 1
        if current and used + cost > budget:
            windows.append("\n".join(current))
            current, used = [], 0
        if cost > budget:  # one text longer than a window: cut it by characters
            text = text[: max(1, len(text) * budget // cost)]
            cost = budget
        current.append(text)
        used += cost
    if current:
        windows.append("\n".join(current))
    return windows


def document_texts(collection: Collection, record: DocumentRecord) -> list[str]:
    """Returns a document's chunk texts in document order."""
    order = {chunk_id(record.id, i): i for i in range(record.chunks)}
    chunks = sorted(collection.chunk_texts([record.id]), key=lambda c: order[c.id])
    return [c.text for c in chunks]
