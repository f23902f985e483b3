"""Model management: checksum verification of model folders and the list of known models.

Meta's download script writes `checklist.chk` (md5, checked with `md5sum -c`); Hugging Face
mirrors and most release pages publish `SHA256SUMS`. Both are "HASH  NAME" lines (or
"HASH *NAME", binary mode), which is all coreutils' format holds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from privatellm.config import Settings
from privatellm.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from privatellm.registry import RegisteredModel, Registry

CHECKSUM_FILES = {"SHA256SUMS": "sha256", "checklist.chk": "md5"}
BLOCK = 8 * 1024 * 1024
Status = Literal["OK", "MISMATCH", "MISSING", "INVALID"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str = ""


def parse_sums(text: str, source: str) -> list[tuple[str, str]]:
    """Returns (hash, file name) per line of a coreutils-style checksum file."""
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().removeprefix("*")
        if not name or not all(c in "0123456789abcdefABCDEF" for c in digest):
            raise ConfigError(f"{source}, line {number}: not 'HASH  FILE'")
        pairs.append((digest.lower(), name))
    return pairs


def verify(directory: Path, progress: bool = False) -> list[Check]:
    """Checks every file the folder's checksum files list; raises ConfigError if it has none."""
    found = [(directory / name, algo) for name, algo in CHECKSUM_FILES.items()]
    found = [(path, algo) for path, algo in found if path.is_file()]
    if not found:
        names = " or ".join(CHECKSUM_FILES)
        raise ConfigError(f"{directory}: no {names} to verify against")
    expected = [
        (digest, name, algo)
        for path, algo in found
        for digest, name in parse_sums(path.read_text(encoding="utf-8"), path.name)
    ]
    root = directory.resolve()
    checks: list[Check] = []
    todo: list[tuple[str, str, str, Path]] = []
    for digest, name, algo in expected:
        path = (directory / name).resolve()
        if not path.is_relative_to(root):  # a checksum file must not make us read elsewhere
            checks.append(Check(name, "INVALID", "names a file outside the folder"))
        elif not path.is_file():
            checks.append(Check(name, "MISSING"))
        else:
            todo.append((digest, name, algo, path))
    total = sum(path.stat().st_size for *_, path in todo)
    with _bar(total, progress) as advance:
        for digest, name, algo, path in todo:
            actual = _digest(path, algo, advance)
            status: Status = "OK" if actual == digest else "MISMATCH"
            detail = "" if status == "OK" else f"{algo} {actual}, expected {digest}"
            checks.append(Check(name, status, detail))
    order = {name: i for i, (_, name, _) in enumerate(expected)}
    return sorted(checks, key=lambda c: order[c.name])


def _digest(path: Path, algo: str, advance: Callable[[int], object]) -> str:
    hasher = hashlib.new(algo)
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            hasher.update(block)
            advance(len(block))
    return hasher.hexdigest()


@contextmanager
def _bar(total: int, show: bool) -> Iterator[Callable[[int], object]]:
    """Yields the advance function of a bytes progress bar on stderr (tqdm), or of nothing."""
    from tqdm import tqdm

    bar = tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=None if show else True
    )
    try:
        yield bar.update
    finally:
        bar.close()


# -- the models privatellm knows ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    role: Literal["chat", "embedding"]
    name: str
    engine: str
    quantization: str
    size_bytes: int
    context_tokens: int | None
    path: str
    configured: bool


def known_models(settings: Settings, registry: Registry) -> Iterator[ModelInfo]:
    """Yields the configured models, then the bundled and registered ones not already listed."""
    from privatellm.registry import resolve_names

    settings = resolve_names(settings, registry)
    engine, embedding = settings.engine, settings.embedding
    names = {m.path: m.name for m in registry.all()}
    seen: set[str] = set()
    if engine.kind == "openai":
        yield ModelInfo(
            "chat",
            engine.model,
            "openai",
            "remote",
            0,
            engine.context_tokens,
            engine.base_url,
            True,
        )
    elif engine.kind == "torch":
        info = _torch_info(engine.model, engine.dtype, engine.quantize, names.get(engine.model))
        yield _with_adapter(info, engine.lora, names)
        seen.add(engine.lora or engine.model)
    elif engine.kind == "llamacpp":
        info = _gguf_info(engine.model, True, names.get(engine.model))
        yield _with_adapter(info, engine.lora, names)
        seen.add(engine.lora or engine.model)
    local = embedding.kind == "sentence-transformers"
    for m in registry.all():
        if m.role == "chat" and m.path not in seen:
            yield _registered_info(m)
    if local:
        yield _embedding_info(embedding.model, True, names.get(embedding.model))
    for m in registry.all():
        if m.role == "embedding" and not (local and m.path == embedding.model):
            yield _registered_info(m)


def _registered_info(m: RegisteredModel) -> ModelInfo:
    """Returns a registered model's row; one whose files went bad is listed as unreadable
    rather than hiding every other model."""
    try:
        if m.role == "embedding":
            return _embedding_info(m.path, False, m.name)
        if m.kind == "gguf":
            return _gguf_info(m.path, False, m.name)
        if m.kind == "lora":
            gguf = m.engine_kind == "llamacpp"
            base = _gguf_info(m.base, False) if gguf else _torch_info(m.base, "auto", "none")
            return replace(_with_adapter(base, m.path, {m.path: m.name}), configured=False)
        return replace(_torch_info(m.path, "auto", "none", m.name), configured=False)
    except (ModelError, OSError, ValueError):
        engine = {"gguf": "llamacpp", "sentence-transformers": "sentence-transformers"}
        return ModelInfo(
            m.role, m.name, engine.get(m.kind, "torch"), "unreadable", 0, None, m.path, False
        )


def _with_adapter(base: ModelInfo, lora: str, names: dict[str, str]) -> ModelInfo:
    """Returns base's row as the model base + the adapter folder lora (if one is named)."""
    if not lora:
        return base
    from privatellm.registry import folder_size

    return replace(
        base,
        name=names.get(lora, f"{base.name}+{Path(lora).name}"),
        quantization=f"{base.quantization}+LoRA",
        size_bytes=base.size_bytes + folder_size(Path(lora)),
        path=lora,
    )


def _gguf_info(model: str, configured: bool, name: str | None = None) -> ModelInfo:
    from privatellm.engines.llamacpp import resolve_gguf

    path = resolve_gguf(model)
    meta = gguf_metadata(path)
    context = meta.get(f"{meta.get('general.architecture')}.context_length")
    return ModelInfo(
        role="chat",
        name=name or path.stem,
        engine="llamacpp",
        quantization=_file_type(meta.get("general.file_type")),
        size_bytes=path.stat().st_size,
        context_tokens=int(context) if isinstance(context, int) else None,
        path=str(path),
        configured=configured,
    )


def _torch_info(model: str, dtype: str, quantize: str, name: str | None = None) -> ModelInfo:
    import json

    from privatellm.config import BUNDLED_LLM
    from privatellm.convert import is_meta_checkpoint

    precision = "int8 weights" if quantize == "int8" else f"{dtype} (torch)"
    if model == BUNDLED_LLM or model.lower().endswith(".gguf"):
        info = _gguf_info(model, True, name)
        return ModelInfo(
            "chat",
            info.name,
            "torch",
            f"{info.quantization} dequantized, {precision}",
            info.size_bytes,
            info.context_tokens,
            info.path,
            True,
        )
    folder = Path(model).expanduser()
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
    context = None
    if is_meta_checkpoint(folder):
        context = json.loads((folder / "params.json").read_text()).get("max_seq_len")
    elif (folder / "config.json").is_file():
        context = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
    label = name or folder.name
    return ModelInfo("chat", label, "torch", precision, size, context, str(folder), True)


def gguf_metadata(path: Path) -> dict[str, object]:
    """Returns a GGUF file's scalar metadata (gguf, llama.cpp's own reader: no weights loaded)."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ModelError(f"cannot read {path}: {e}") from e
    values: dict[str, object] = {}
    for key, field in reader.fields.items():
        if len(field.types) == 1 and field.types[0] != gguf.GGUFValueType.ARRAY:
            values[key] = field.contents()
    return values


def _file_type(code: object) -> str:
    import gguf

    try:
        return gguf.LlamaFileType(int(code)).name.removeprefix("MOSTLY_")  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return "unknown"


def _embedding_info(model: str, configured: bool, label: str | None = None) -> ModelInfo:
    import json

    from privatellm.embeddings import resolve_model_dir

    name, directory = resolve_model_dir(model)
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    config = directory / "sentence_bert_config.json"
    length = json.loads(config.read_text())["max_seq_length"] if config.is_file() else None
    return ModelInfo(
        role="embedding",
        name=label or name,
        engine="sentence-transformers",
        quantization="fp32",  # bf16 at run time on CPUs with native bf16
        size_bytes=size,
        context_tokens=length,
        path=os.fspath(directory),
        configured=configured,
    )
