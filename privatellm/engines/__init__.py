"""Language model engines: messages in, streamed text out. One module per kind, loaded lazily."""

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


def build_engine(settings: EngineSettings) -> Engine:
    """Returns the engine settings.kind names; its backend is imported only now."""
    if settings.kind == "fake":
        from privatellm.engines.fake import FakeEngine

        return FakeEngine(settings)
    if settings.kind == "torch":
        from privatellm.engines.torch import TorchEngine

        return TorchEngine(settings)
    if settings.kind == "openai":
        from privatellm.engines.openai import OpenAIEngine

        return OpenAIEngine(settings)
    from privatellm.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(settings)
