"""The catalog: a short list of models the project recommends, each pullable by its name.

Sizes are the files' sizes as the hub lists them (Q4_K_M GGUF for chat models). RAM is what
the model needs while answering with privatellm's default 2,048-token context: the weights
(llama.cpp maps the file) plus its KV cache and compute buffers, from
`layers x 2 x kv_heads x head_dim x context x 2 bytes` (f16 cache) + ~0.3 GB; the bundled
SmolLM2-135M, measured, used 0.2 GB (docs/BENCHMARKS.md). A larger `engine.context_tokens`
grows the cache linearly: Llama-3.1-8B needs 0.25 GB more per 2,048 tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from privatellm.registry import Role


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    role: Role
    repo_id: str
    file: str | None  # the GGUF file; None: the repository's model folder
    size_gb: float
    ram_gb: float
    languages: tuple[str, ...]
    licence: str
    note: str
    # Prompts the model was trained with, for sentence-transformers' config where its repository
    # does not declare them (e5 was trained on "query: " / "passage: " prefixes).
    prompts: dict[str, str] = field(default_factory=dict)

    @property
    def language_summary(self) -> str:
        """Returns the languages as a short phrase: 'en, zh' or 'en, zh +27'."""
        shown = ", ".join(self.languages[:3])
        more = len(self.languages) - 3
        return f"{shown} +{more}" if more > 0 else shown


_LLAMA32 = ("en", "de", "fr", "it", "pt", "hi", "es", "th")
_QWEN25 = ("zh", "en", "fr", "es", "pt", "de", "it", "ru", "ja", "ko", "vi", "th", "ar")
# multilingual-e5 and bge-m3 are trained on ~100 languages; these are the ones that matter here.
_MANY = ("en", "zh", "ja", "ko", "de", "fr", "es", "pt", "ru", "ar", "hi", "it", "vi", "th")

CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        "llama-3.2-1b",
        "chat",
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        0.81,
        1.2,
        _LLAMA32,
        "Llama 3.2 Community",
        "fast on any CPU; English first",
    ),
    CatalogEntry(
        "llama-3.2-3b",
        "chat",
        "bartowski/Llama-3.2-3B-Instruct-GGUF",
        "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        2.02,
        2.6,
        _LLAMA32,
        "Llama 3.2 Community",
        "good answers on a laptop CPU",
    ),
    CatalogEntry(
        "qwen2.5-1.5b",
        "chat",
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        1.12,
        1.5,
        _QWEN25,
        "Apache-2.0",
        "Chinese and English, small",
    ),
    CatalogEntry(
        "qwen2.5-3b",
        "chat",
        "Qwen/Qwen2.5-3B-Instruct-GGUF",
        "qwen2.5-3b-instruct-q4_k_m.gguf",
        2.10,
        2.5,
        _QWEN25,
        "Qwen Research (non-commercial)",
        "Chinese and English",
    ),
    CatalogEntry(
        "qwen2.5-7b",
        "chat",
        "bartowski/Qwen2.5-7B-Instruct-GGUF",
        "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
        4.68,
        5.1,
        _QWEN25,
        "Apache-2.0",
        "best Chinese answers here; 8 GB RAM machine",
    ),
    CatalogEntry(
        "llama-3.1-8b",
        "chat",
        "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
        "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
        4.92,
        5.5,
        _LLAMA32,
        "Llama 3.1 Community",
        "best English answers here; 8 GB RAM machine",
    ),
    CatalogEntry(
        "multilingual-e5-small",
        "embedding",
        "intfloat/multilingual-e5-small",
        None,
        0.47,
        0.6,
        _MANY,
        "MIT",
        "384 dims like the bundled model; Chinese questions get dense retrieval",
        {"query": "query: ", "document": "passage: "},
    ),
    CatalogEntry(
        "bge-m3",
        "embedding",
        "BAAI/bge-m3",
        None,
        2.27,
        2.6,
        _MANY,
        "MIT",
        "1024 dims, 8,192-token inputs; best multilingual retrieval, slow on CPU",
    ),
)


def catalog_entry(name: str) -> CatalogEntry | None:
    """Returns the catalog entry called name (case-insensitive), or None."""
    wanted = name.lower()
    return next((e for e in CATALOG if e.name == wanted), None)


def declare_prompts(folder: Path, prompts: dict[str, str]) -> None:
    """Writes prompts into a sentence-transformers folder's config where it has none, so the
    embedder applies them (queries and passages each get theirs)."""
    if not prompts:
        return
    path = folder / "config_sentence_transformers.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if config.get("prompts"):
        return  # the model's own declaration wins
    config["prompts"] = prompts
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
