"""Language model engines: messages in, streamed text out. One module per kind, loaded lazily."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, TypedDict


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class Engine(Protocol):
    """What the rest of privatellm needs from a language model."""

    name: str
    context_tokens: int

    def count_tokens(self, text: str) -> int:
        """Returns the length of text in the model's tokens."""
        ...

    def stream(self, messages: Sequence[Message]) -> Iterator[str]:
        """Yields the reply to messages piece by piece, formatted by the model's chat template."""
        ...
