"""The one exception hierarchy of privatellm.

PrivateLLMError                 every expected failure; the CLI prints str(e) on one line
├── ConfigError                 bad settings, bad profile file, bad collection name (exit 2)
├── ModelError                  a model cannot be found or loaded
│   └── ModelBusyError          the model is answering others for longer than one may wait
├── TrainingDataError           a fine-tuning record is malformed or too long (exit 2)
├── StoreError                  the vector store refuses an operation
│   ├── EmbeddingMismatchError  collection built by another embedding model
│   ├── StoreLockedError        another process is writing the same collection
│   └── NotFoundError           no such document / collection
└── LoaderError                 one file cannot be ingested; ingest reports it and goes on
    ├── UnsupportedFormatError  extension we do not read
    ├── EmptyDocumentError      nothing to index (zero bytes, or a PDF with no text layer)
    ├── EncryptedDocumentError  needs a password we do not have
    └── CorruptDocumentError    the parser could not read it
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class PrivateLLMError(Exception):
    """Base of every expected failure; its message is one line meant for a user."""

    exit_code = 1


class ConfigError(PrivateLLMError):
    exit_code = 2


class ModelError(PrivateLLMError):
    exit_code = 2


class ModelBusyError(ModelError):
    """Too many questions ahead: queue_full (refused at once) or the wait ran out."""

    exit_code = 1

    def __init__(self, message: str, retry_after: int, queue_full: bool) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.queue_full = queue_full


class TrainingDataError(PrivateLLMError):
    exit_code = 2


class StoreError(PrivateLLMError):
    pass


class EmbeddingMismatchError(StoreError):
    exit_code = 2


class StoreLockedError(StoreError):
    pass


class NotFoundError(StoreError):
    pass


class LoaderError(PrivateLLMError):
    pass


class UnsupportedFormatError(LoaderError):
    pass


class EmptyDocumentError(LoaderError):
    pass


class EncryptedDocumentError(LoaderError):
    pass


class CorruptDocumentError(LoaderError):
    pass


def first_invalid(errors: Sequence[Mapping[str, Any]], section: str = "") -> str:
    """Returns the first of pydantic's (or FastAPI's) validation errors as "where: what", where
    is the dotted location, below section if one is given."""
    first = errors[0]
    where = ".".join(str(p) for p in ([section] if section else []) + list(first["loc"]))
    return f"{where}: {first['msg']}"
