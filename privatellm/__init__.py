"""privatellm: offline, private question answering over your own documents.

The public API is what `__all__` names (a test pins it). Names load on first use, so that
`import privatellm` (and the CLI's --help) stays fast: nothing heavy is imported until asked for.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# Nothing leaves the machine. Models load from local files only, so the Hugging Face libraries
# must never look for a hub (they check for updates of "local" models unless told not to), and
# no library may send telemetry. Set before any of them is imported; a user's own values win.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "ANONYMIZED_TELEMETRY": "False",  # Chroma (its client settings say so too)
}.items():
    os.environ.setdefault(_key, _value)

if TYPE_CHECKING:
    from privatellm.answering import Reply
    from privatellm.api import create_app
    from privatellm.config import Settings, load_settings
    from privatellm.errors import ConfigError, ModelError, NotFoundError, PrivateLLMError
    from privatellm.service import Service
    from privatellm.types import (
        Answer,
        Chunk,
        Citation,
        DocumentRecord,
        FileOutcome,
        IngestReport,
        ScoredChunk,
        Status,
    )
    from privatellm.uploads import Upload

# name -> the module that defines it
_HOMES = {
    "Service": "privatellm.service",
    "Settings": "privatellm.config",
    "load_settings": "privatellm.config",
    "create_app": "privatellm.api",
    "Reply": "privatellm.answering",
    "Upload": "privatellm.uploads",
    "Answer": "privatellm.types",
    "Chunk": "privatellm.types",
    "Citation": "privatellm.types",
    "DocumentRecord": "privatellm.types",
    "FileOutcome": "privatellm.types",
    "IngestReport": "privatellm.types",
    "ScoredChunk": "privatellm.types",
    "Status": "privatellm.types",
    "PrivateLLMError": "privatellm.errors",
    "ConfigError": "privatellm.errors",
    "ModelError": "privatellm.errors",
    "NotFoundError": "privatellm.errors",
}
__all__ = [
    "Answer",
    "Chunk",
    "Citation",
    "ConfigError",
    "DocumentRecord",
    "FileOutcome",
    "IngestReport",
    "ModelError",
    "NotFoundError",
    "PrivateLLMError",
    "Reply",
    "ScoredChunk",
    "Service",
    "Settings",
    "Status",
    "Upload",
    "create_app",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'privatellm' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
