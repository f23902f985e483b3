"""GGUF files already in a local Ollama store, found by the name Ollama knows them by.

Ollama keeps content-addressed blobs (blobs/sha256-HEX) and, per pulled model, a manifest
(manifests/HOST/NAMESPACE/MODEL/TAG, an OCI image manifest in JSON) whose layer of media type
application/vnd.ollama.image.model is the model's GGUF file. `ollama pull qwen2.5:3b` means
registry.ollama.ai/library/qwen2.5:3b. Nothing here writes to the store: privatellm links the
blob, so the gigabytes are not stored twice.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from privatellm.errors import ModelError

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MODEL_LAYER = "application/vnd.ollama.image.model"
# where Ollama's Linux install script puts the store of the `ollama` system user
SYSTEM_STORE = Path("/usr/share/ollama/.ollama/models")
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


def ollama_models_dir() -> Path:
    """Returns Ollama's model store: $OLLAMA_MODELS, else the first of ~/.ollama/models and the
    Linux service's store that exists; raises ModelError naming the places looked."""
    configured = os.environ.get("OLLAMA_MODELS")
    places = [Path(configured).expanduser()] if configured else _default_stores()
    for place in places:
        if (place / "manifests").is_dir():
            return place
    looked = ", ".join(str(p) for p in places)
    raise ModelError(f"no Ollama model store found (looked in {looked}; set OLLAMA_MODELS)")


def _default_stores() -> list[Path]:
    return [Path.home() / ".ollama" / "models", SYSTEM_STORE]


def find_ollama_gguf(ref: str, models_dir: Path | None = None) -> tuple[str, Path]:
    """Returns (a model name like 'qwen2.5-3b', the GGUF blob path) for an Ollama reference:
    'qwen2.5:3b', 'library/qwen2.5:3b', 'registry.ollama.ai/library/qwen2.5:3b', 'user/model:tag';
    tag defaults to 'latest'."""
    store = models_dir or ollama_models_dir()
    host, namespace, model, tag = parse_reference(ref)
    shown = ref.strip().removeprefix("ollama:")
    manifest = _manifest_path(store, host, namespace, model, tag)
    if manifest is None:
        pulled = ", ".join(pulled_models(store)) or "none"
        raise ModelError(
            f"{shown!r} is not pulled in the Ollama store {store} (there: {pulled}); "
            f"`ollama pull {shown}` first"
        )
    blob = _model_blob(store, manifest, shown)
    return local_name(model, tag), blob


def parse_reference(ref: str) -> tuple[str, str, str, str]:
    """Returns (host, namespace, model, tag) of an Ollama model reference, with Ollama's defaults
    for the parts left out."""
    text = ref.strip().removeprefix("ollama:")
    text = text.split("://", 1)[-1]
    path, tag = text, DEFAULT_TAG
    # a ':' after the last '/' starts the tag; one before it is a host's port
    if ":" in text.rpartition("/")[2]:
        path, _, tag = text.rpartition(":")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or not tag or len(parts) > 3:
        raise ModelError(
            f"not an Ollama model name: {ref!r} (e.g. qwen2.5:3b, user/model:tag, "
            "registry.ollama.ai/library/qwen2.5:3b)"
        )
    defaults = [DEFAULT_HOST, DEFAULT_NAMESPACE][: 3 - len(parts)]
    host, namespace, model = [*defaults, *parts]
    return host, namespace, model, tag


def local_name(model: str, tag: str) -> str:
    """Returns the name privatellm registers an Ollama model under: 'qwen2.5:3b' -> 'qwen2.5-3b',
    'llama3.2:latest' -> 'llama3.2'."""
    name = model if tag == DEFAULT_TAG else f"{model}-{tag}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-")[:128] or "ollama-model"


def pulled_models(store: Path) -> list[str]:
    """Returns the models in an Ollama store, named as `ollama list` names them."""
    manifests = store / "manifests"
    names = []
    for file in sorted(manifests.glob("*/*/*/*")):
        if file.is_file():
            host, namespace, model, tag = file.relative_to(manifests).parts
            if host != DEFAULT_HOST:
                model = f"{host}/{namespace}/{model}"
            elif namespace != DEFAULT_NAMESPACE:
                model = f"{namespace}/{model}"
            names.append(f"{model}:{tag}")
    return names


def _manifest_path(store: Path, host: str, namespace: str, model: str, tag: str) -> Path | None:
    """Returns the manifest file of the model, matching names without regard to case as Ollama
    does (it keeps the case the model was pulled with), or None."""
    exact = store / "manifests" / host / namespace / model / tag
    if exact.is_file():
        return exact
    wanted = (host.lower(), namespace.lower(), model.lower(), tag.lower())
    manifests = store / "manifests"
    for file in manifests.glob("*/*/*/*"):
        parts = tuple(p.lower() for p in file.relative_to(manifests).parts)
        if parts == wanted and file.is_file():
            return file
    return None


def _model_blob(store: Path, manifest: Path, ref: str) -> Path:
    """Returns the GGUF blob the manifest's model layer names, checked to be whole and GGUF."""
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8")).get("layers") or []
    except (OSError, ValueError, AttributeError) as e:
        raise ModelError(f"cannot read Ollama's manifest {manifest}: {e}") from e
    layer = next((x for x in layers if x.get("mediaType") == MODEL_LAYER), None)
    match = _DIGEST.match(str(layer.get("digest", ""))) if layer else None
    if layer is None or match is None:
        raise ModelError(f"Ollama's manifest {manifest} names no model file for {ref!r}")
    blob = store / "blobs" / f"sha256-{match[1]}"
    if not blob.exists() and (store / "blobs" / f"sha256:{match[1]}").exists():
        blob = store / "blobs" / f"sha256:{match[1]}"  # older releases (Windows forbids the colon)
    try:
        with blob.open("rb") as f:
            magic = f.read(4)
        size = blob.stat().st_size
    except OSError as e:
        raise ModelError(
            f"the model file of {ref!r} is missing from the Ollama store ({blob}: "
            f"{e.strerror}); `ollama pull {ref}` again"
        ) from e
    if magic != b"GGUF":
        raise ModelError(f"the model file of {ref!r} ({blob}) is not a GGUF file")
    expected = layer.get("size")
    if isinstance(expected, int) and expected != size:
        raise ModelError(
            f"the model file of {ref!r} ({blob}) holds {size} bytes, its manifest says "
            f"{expected}; `ollama pull {ref}` again"
        )
    return blob
