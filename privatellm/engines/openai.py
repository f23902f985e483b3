"""A model behind any OpenAI-compatible server (engine.kind: openai): Ollama's /v1, vLLM,
llama.cpp's llama-server, or another machine's `privatellm serve`.

This is how a model that outgrows one machine is used while retrieval, citations and the rest
of privatellm stay here. The server at engine.base_url is the only address privatellm talks to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from privatellm.config import BUNDLED_PREFIX, EngineSettings
from privatellm.engines.base import DEFAULT, Message, Sampling
from privatellm.errors import ConfigError, ModelError
from privatellm.text import is_cjk_char


class OpenAIEngine:
    def __init__(self, settings: EngineSettings) -> None:
        import openai

        if not settings.base_url:
            raise ConfigError("engine.kind openai needs engine.base_url (the server's /v1 root)")
        self.name = settings.model.removeprefix(BUNDLED_PREFIX)
        self.context_tokens = settings.context_tokens
        self._settings = settings
        self._client = openai.OpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key or "unused",  # the client insists on one
            max_retries=1,
            timeout=600,
        )

    def count_tokens(self, text: str) -> int:
        # The OpenAI API has no tokenizer route, so this overestimates (a token per 3 characters,
        # one per CJK character): prompts then always fit the server's context window.
        cjk = sum(1 for c in text if is_cjk_char(c))
        return cjk + (len(text) - cjk) // 3 + 1

    def stream(self, messages: Sequence[Message], sampling: Sampling = DEFAULT) -> Iterator[str]:
        import openai

        chosen = sampling.resolve(self._settings)
        request: dict[str, Any] = {
            "model": self.name,
            "messages": list(messages),
            "max_tokens": chosen.max_tokens,
            "temperature": chosen.temperature,
            "top_p": chosen.top_p,
            "stream": True,
        }
        if chosen.stop:
            request["stop"] = list(chosen.stop)
        try:
            for part in self._client.chat.completions.create(**request):
                if part.choices and part.choices[0].delta.content:
                    yield part.choices[0].delta.content
        except openai.APIConnectionError as e:
            raise ModelError(
                f"cannot reach the model server at {self._settings.base_url}: {e}"
            ) from e
        except openai.APIStatusError as e:
            raise ModelError(f"the model server answered HTTP {e.status_code}: {e.message}") from e
