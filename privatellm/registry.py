"""The model registry: the models this data directory knows by name, where their files are, what
they are for, and which ones privatellm downloaded itself (those `models rm` deletes).

It lives in DATA/models/registry.json, written whole and renamed into place under a file lock,
so a crash never leaves half a registry. The two bundled models are always there and cannot be
removed. Commands that fetch models (`models pull`, the Meta download, `models import`) put
their files under DATA/models/NAME and register them here; nothing else writes this file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from privatellm.config import BUNDLED_EMBEDDING, BUNDLED_LLM, BUNDLED_PREFIX, Settings
from privatellm.engines.llamacpp import ADAPTER_GGUF
from privatellm.errors import ConfigError, ModelError, NotFoundError

Role = Literal["chat", "embedding"]
# gguf: one file for llama.cpp (or torch, dequantized); hf: a Hugging Face folder (config.json +
# safetensors + tokenizer) for torch; meta: Meta's consolidated.*.pth folder for torch;
# sentence-transformers: an embedding model folder; lora: an adapter folder written by `privatellm
# finetune` (PEFT files for torch, adapter.gguf for llama.cpp), run on top of extra["base"].
Kind = Literal["gguf", "hf", "meta", "sentence-transformers", "lora"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    role: Role
    kind: Kind
    path: str  # the GGUF file or the model folder; "bundled:..." for the two bundled models
    source: str = "import"  # hf:REPO@COMMIT, meta:MODEL, ollama:NAME:TAG, import, bundled
    owned: bool = False  # privatellm downloaded the files: `models rm` deletes them
    languages: tuple[str, ...] = ()  # ISO 639-1 codes the model was trained for; () unknown
    size_bytes: int = 0
    added_at: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def engine_kind(self) -> Literal["llamacpp", "torch"]:
        """Returns the engine.kind that runs this chat model."""
        if self.kind == "lora":
            # llama.cpp needs the base as a GGUF and the adapter exported beside the PEFT files
            # (export covers llama-architecture bases only): torch runs the others
            exported = (Path(self.path) / ADAPTER_GGUF).is_file()
            return "llamacpp" if exported and _names_gguf(self.base) else "torch"
        return "llamacpp" if self.kind == "gguf" else "torch"

    @property
    def base(self) -> str:
        """Returns the model an adapter (kind lora) is applied to; "" for other kinds."""
        return self.extra.get("base", "")

    @property
    def bundled(self) -> bool:
        return self.path.startswith(BUNDLED_PREFIX)

    def multilingual(self, language: str) -> bool:
        """Returns whether the model declares language (e.g. 'zh') among its languages."""
        return language in self.languages


BUNDLED = (
    RegisteredModel(
        "SmolLM2-135M-Instruct", "chat", "gguf", BUNDLED_LLM, "bundled", languages=("en",)
    ),
    RegisteredModel(
        "all-MiniLM-L6-v2",
        "embedding",
        "sentence-transformers",
        BUNDLED_EMBEDDING,
        "bundled",
        languages=("en",),
    ),
)


def check_model_name(name: str) -> str:
    """Returns name if it can name a model (and a folder): letters, digits, '.', '_', '-'."""
    if not _NAME.match(name) or name in (".", ".."):
        raise ConfigError(
            f"invalid model name {name!r}: use up to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def folder_size(path: Path) -> int:
    """Returns the bytes in a file, or in every file below a folder (links not followed)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


class Registry:
    """The registered models of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "models"
        self._file = self.root / "registry.json"

    def folder(self, name: str) -> Path:
        """Returns the folder a downloaded model called name is written to."""
        return self.root / check_model_name(name)

    def all(self) -> list[RegisteredModel]:
        """Returns the bundled models, then the registered ones in the order they were added."""
        return [*BUNDLED, *self._read()]

    def find(self, name: str) -> RegisteredModel | None:
        """Returns the model called name (case-insensitive), or None."""
        wanted = name.lower()
        return next((m for m in self.all() if m.name.lower() == wanted), None)

    def get(self, name: str, role: Role | None = None) -> RegisteredModel:
        """Returns the model called name, or raises NotFoundError naming the ones there are."""
        model = self.find(name)
        if model is None or (role and model.role != role):
            names = ", ".join(m.name for m in self.all() if not role or m.role == role)
            what = f"{role} model" if role else "model"
            raise NotFoundError(f"no {what} named {name!r} (registered: {names})")
        return model

    def by_path(self, path: str) -> RegisteredModel | None:
        """Returns the model whose files are at path (a setting's value), or None."""
        if path.startswith(BUNDLED_PREFIX):
            return next((m for m in BUNDLED if m.path == path), None)
        # Links are not followed: two names may link to one file (an Ollama blob, a test).
        wanted = os.path.abspath(Path(path).expanduser())
        return next((m for m in self._read() if os.path.abspath(m.path) == wanted), None)

    def add(self, model: RegisteredModel) -> RegisteredModel:
        """Registers model (stamped with its size and time); a name already taken is refused."""
        check_model_name(model.name)
        path = Path(model.path)
        if not path.exists():
            raise ModelError(f"{path}: no such file or folder")
        stamped = replace(
            model,
            size_bytes=model.size_bytes or folder_size(path),
            added_at=model.added_at or datetime.now(UTC).isoformat(timespec="seconds"),
        )
        with self._locked():
            models = self._read()
            if self.find(model.name):
                raise ConfigError(
                    f"a model named {model.name!r} is registered already: "
                    "choose another --name, or `privatellm models rm` it first"
                )
            self._write([*models, stamped])
        return stamped

    def remove(self, name: str) -> RegisteredModel:
        """Unregisters a model and deletes its files if privatellm downloaded them."""
        model = self.get(name)
        if model.bundled:
            raise ConfigError(f"{model.name} is bundled with privatellm and cannot be removed")
        with self._locked():
            self._write([m for m in self._read() if m.name != model.name])
        if model.owned:
            _delete_below(Path(model.path), self.root)
        return model

    def _read(self) -> list[RegisteredModel]:
        try:
            rows = json.loads(self._file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the model registry {self._file}: {e}") from e
        return [
            RegisteredModel(**{**row, "languages": tuple(row.get("languages", ()))}) for row in rows
        ]

    def _write(self, models: list[RegisteredModel]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self._file.with_suffix(".json.tmp")
        rows = [asdict(m) for m in models]
        temporary.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(temporary, self._file)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self._file) + ".lock", timeout=30):
            yield


def _delete_below(path: Path, root: Path) -> None:
    """Deletes a downloaded model's file or folder; never anything outside the models folder."""
    target = path.absolute()
    if not target.is_relative_to(root.absolute()) or target == root.absolute():
        return
    folder = target if target.is_dir() else target.parent
    if folder != root.absolute() and folder.is_relative_to(root.absolute()):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


# -- what a file or folder on disk holds -----------------------------------------------------------


def detect(path: Path) -> tuple[Role, Kind]:
    """Returns what a model file or folder is, from its files alone; raises ModelError if none."""
    if path.is_file():
        if _is_gguf(path):
            return "chat", "gguf"
        raise ModelError(f"{path}: not a GGUF file (it does not start with 'GGUF')")
    if not path.is_dir():
        raise ModelError(f"{path}: no such file or folder")
    if (path / "params.json").is_file() and any(path.glob("consolidated.*.pth")):
        return "chat", "meta"
    if (path / "modules.json").is_file() or (path / "sentence_bert_config.json").is_file():
        return "embedding", "sentence-transformers"
    config = path / "config.json"
    if config.is_file():
        return role_of_config(json.loads(config.read_text(encoding="utf-8")))
    raise ModelError(
        f"{path}: neither a GGUF file, a Hugging Face model folder (config.json), a "
        "sentence-transformers folder (modules.json) nor a Meta checkpoint (params.json)"
    )


def role_of_config(config: dict[str, object]) -> tuple[Role, Kind]:
    """Returns what a Hugging Face folder is for, from its config.json (as the hub's API also
    gives it): a causal language model chats, anything else is taken for an embedding encoder."""
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list):
        architectures = []
    if any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "chat", "hf"
    return "embedding", "sentence-transformers"


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"GGUF"


def card_languages(folder: Path) -> tuple[str, ...]:
    """Returns the languages a model card (README.md's YAML front matter) declares."""
    import yaml

    readme = folder / "README.md"
    if not readme.is_file():
        return ()
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return ()
    front = text[3:].split("\n---", 1)[0]
    try:
        meta = yaml.safe_load(front) or {}
    except yaml.YAMLError:
        return ()
    languages = meta.get("language") if isinstance(meta, dict) else None
    if isinstance(languages, str):
        languages = [languages]
    if not isinstance(languages, list):
        return ()
    return tuple(str(x).lower() for x in languages if isinstance(x, str))


def resolve_names(settings: Settings, registry: Registry) -> Settings:
    """Returns settings whose engine.model and embedding.model, where they name a registered
    model rather than a path, are that model's path (and the engine kind that runs it)."""
    engine, embedding = settings.engine, settings.embedding
    updates: dict[str, object] = {}
    chat = _registered(registry, engine.model, "chat") if engine.kind in LOCAL_ENGINES else None
    if chat is not None:
        kind = "torch" if engine.kind == "torch" else chat.engine_kind
        model = (
            {"model": chat.base, "lora": chat.path} if chat.kind == "lora" else {"model": chat.path}
        )
        updates["engine"] = engine.model_copy(update={"kind": kind, **model})
    local = embedding.kind == "sentence-transformers"
    embedder = _registered(registry, embedding.model, "embedding") if local else None
    if embedder is not None:
        updates["embedding"] = embedding.model_copy(update={"model": embedder.path})
    return settings.model_copy(update=updates) if updates else settings


LOCAL_ENGINES = ("llamacpp", "torch")


def _names_gguf(model: str) -> bool:
    return model.startswith(BUNDLED_PREFIX) or model.lower().endswith(".gguf")


def _registered(registry: Registry, value: str, role: Role) -> RegisteredModel | None:
    if value.startswith(BUNDLED_PREFIX) or "/" in value or Path(value).expanduser().exists():
        return None  # a path or a bundled model already
    found = registry.find(value)
    if found is None:
        return None
    if found.role != role:
        raise ConfigError(f"{value!r} is registered as a {found.role} model: not a {role} model")
    return found
