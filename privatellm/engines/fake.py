"""A scripted engine for fast unit tests: no model, deterministic replies (engine.kind: fake).

Tests choose it through settings like any other engine (`engine: {kind: fake, script: [...]}`),
so they run the real service and gate; it records what it was asked so they can check prompts,
sampling and overlapping replies from outside.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence

from privatellm.config import EngineSettings
from privatellm.engines.base import DEFAULT, Message, Sampling
from privatellm.errors import ModelError
from privatellm.text import is_cjk_char, split_sentences

_PASSAGE = re.compile(r"^\[(\d+)\] (.+)$", re.MULTILINE)  # prompts.py writes one per line
_WORD = re.compile(r"\s*\S+")  # a word with the space before it: joined, the pieces are the reply
NO_PASSAGE = "I don't know."


class FakeEngine:
    """Replies with settings.script, one reply per call, word by word; with no script, with the
    first sentence of the first numbered passage and its marker ("I don't know." without one).

    prompts and samplings record each call's messages and Sampling; active and most_active
    count replies in progress, so a test can see two replies overlap on the one model.
    """

    name = "fake"

    def __init__(self, settings: EngineSettings) -> None:
        self.context_tokens = settings.context_tokens
        self._settings = settings
        self._lock = threading.Lock()
        self.prompts: list[list[Message]] = []
        self.samplings: list[Sampling] = []
        self.active = 0
        self.most_active = 0

    def count_tokens(self, text: str) -> int:
        """Returns a token per word plus one per CJK character (written without spaces)."""
        return len(text.split()) + sum(1 for c in text if is_cjk_char(c))

    def stream(self, messages: Sequence[Message], sampling: Sampling = DEFAULT) -> Iterator[str]:
        """Yields the next reply word by word, each word after settings.delay_seconds."""
        resolved = sampling.resolve(self._settings)
        with self._lock:
            self.prompts.append(list(messages))
            self.samplings.append(sampling)
            reply = self._reply(messages, len(self.prompts))
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            for stop in resolved.stop:  # a script has nothing to sample: only length and stops
                reply = reply.split(stop, 1)[0]
            for word in _WORD.findall(reply)[: resolved.max_tokens]:
                time.sleep(self._settings.delay_seconds)
                yield word
        finally:
            with self._lock:
                self.active -= 1

    def _reply(self, messages: Sequence[Message], call: int) -> str:
        script = self._settings.script
        if not script:
            return _first_sentence(messages[-1]["content"])
        if call > len(script):
            raise ModelError(
                f"the fake engine's script is exhausted: call {call} after its "
                f"{len(script)} scripted replies (engine.script)"
            )
        return script[call - 1]


def _first_sentence(prompt: str) -> str:
    match = _PASSAGE.search(prompt)
    if match is None:
        return NO_PASSAGE
    return f"{split_sentences(match.group(2))[0]} [{match.group(1)}]"
