"""Language model engines: messages in, streamed text out. One module per kind, loaded lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privatellm.engines.base import DEFAULT, Engine, Message, ResolvedSampling, Sampling

if TYPE_CHECKING:
    from privatellm.config import EngineSettings

__all__ = ["DEFAULT", "Engine", "Message", "ResolvedSampling", "Sampling", "build_engine"]


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
