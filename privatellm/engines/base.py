"""What every engine is and takes: messages in, streamed text out, sampled as asked."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypedDict

if TYPE_CHECKING:
    from privatellm.config import EngineSettings


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Sampling:
    """How one reply is generated; None keeps the engine's setting."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()  # the reply ends before the first of these

    def resolve(self, settings: EngineSettings) -> ResolvedSampling:
        """Returns the values one reply is generated with: these, else the engine settings'."""
        return ResolvedSampling(
            max_tokens=self.max_tokens or settings.max_tokens,
            temperature=settings.temperature if self.temperature is None else self.temperature,
            top_p=settings.top_p if self.top_p is None else self.top_p,
            stop=self.stop,
        )


@dataclass(frozen=True)
class ResolvedSampling:
    """Sampling with every value decided: what an engine generates with."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]


DEFAULT = Sampling()


class Engine(Protocol):
    """What the rest of privatellm needs from a language model."""

    name: str
    context_tokens: int

    def count_tokens(self, text: str) -> int:
        """Returns the length of text in the model's tokens."""
        ...

    def stream(self, messages: Sequence[Message], sampling: Sampling = DEFAULT) -> Iterator[str]:
        """Yields the reply to messages piece by piece, formatted by the model's chat template."""
        ...
