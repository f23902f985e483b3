"""A scripted engine for fast unit tests: no model, deterministic replies (engine.kind: fake)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from privatellm.config import EngineSettings
from privatellm.engines import DEFAULT, Message, Sampling

_PASSAGE = re.compile(r"^\[(\d+)\] (.+?[.!?。！？])(?:\s|$)", re.MULTILINE)


class FakeEngine:
    """Replies with the first sentence of passage [1] and the marker [1], word by word; with no
    numbered passage in the prompt, with "I don't know."."""

    name = "fake"

    def __init__(self, settings: EngineSettings) -> None:
        self.context_tokens = settings.context_tokens
        self._max_tokens = settings.max_tokens

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + sum(1 for c in text if "\u4e00" <= c <= "\u9fff")

    def stream(self, messages: Sequence[Message], sampling: Sampling = DEFAULT) -> Iterator[str]:
        prompt = messages[-1]["content"]
        match = _PASSAGE.search(prompt)
        reply = f"{match.group(2)} [{match.group(1)}]" if match else "I don't know."
        for stop in sampling.stop:  # a script has nothing to sample: only length and stops apply
            reply = reply.split(stop, 1)[0]
        words = reply.split(" ")[: sampling.max_tokens or self._max_tokens]
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word
