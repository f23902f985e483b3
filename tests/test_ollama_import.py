"""GGUF files in a local Ollama store, found by the names Ollama knows them by. The store is laid
out here as Ollama writes it (manifests/HOST/NAMESPACE/MODEL/TAG, blobs/sha256-HEX), with the
bundled GGUF linked in as the model blob."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from privatellm.config import BUNDLED_LLM
from privatellm.engines.llamacpp import resolve_gguf
from privatellm.errors import ModelError
from privatellm.models import gguf_metadata
from privatellm.ollama import find_ollama_gguf, ollama_models_dir, parse_reference, pulled_models
from privatellm.registry import detect

MODEL_DIGEST = "a1" * 32
LICENSE_DIGEST = "b2" * 32


def add_model(store: Path, manifest: str, blob: Path | None, digest: str = MODEL_DIGEST) -> Path:
    """Writes an Ollama manifest at manifests/MANIFEST and links blob in; returns the blob path
    Ollama would use."""
    target = store / "blobs" / f"sha256-{digest}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if blob is not None and not target.exists():
        target.symlink_to(blob)
    (store / "blobs" / f"sha256-{LICENSE_DIGEST}").write_text("Apache 2.0", encoding="utf-8")
    layers = [
        {
            "mediaType": "application/vnd.ollama.image.model",
            "digest": f"sha256:{digest}",
            "size": blob.stat().st_size if blob else 1,
        },
        {
            "mediaType": "application/vnd.ollama.image.license",
            "digest": f"sha256:{LICENSE_DIGEST}",
            "size": 10,
        },
    ]
    document = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json"},
        "layers": layers,
    }
    path = store / "manifests" / manifest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return target


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An Ollama store holding the bundled GGUF as qwen2.5:3b and as a user's model."""
    root = tmp_path / "ollama" / "models"
    gguf = resolve_gguf(BUNDLED_LLM)
    add_model(root, "registry.ollama.ai/library/qwen2.5/3b", gguf)
    add_model(root, "registry.ollama.ai/library/smollm2/latest", gguf)
    add_model(root, "registry.ollama.ai/someone/Tiny-Model/q4_K_M", gguf)
    return root


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("qwen2.5:3b", "qwen2.5-3b"),
        ("library/qwen2.5:3b", "qwen2.5-3b"),
        ("registry.ollama.ai/library/qwen2.5:3b", "qwen2.5-3b"),
        ("https://registry.ollama.ai/library/qwen2.5:3b", "qwen2.5-3b"),
        ("ollama:qwen2.5:3b", "qwen2.5-3b"),
        ("smollm2", "smollm2"),
        ("smollm2:latest", "smollm2"),
        ("someone/Tiny-Model:q4_K_M", "Tiny-Model-q4_K_M"),
        ("someone/tiny-model:Q4_K_M", "tiny-model-Q4_K_M"),  # Ollama matches names in any case
    ],
)
def test_references_resolve_to_the_gguf_blob(store: Path, ref: str, name: str) -> None:
    found_name, blob = find_ollama_gguf(ref, store)
    assert found_name == name
    assert blob == store / "blobs" / f"sha256-{MODEL_DIGEST}"
    assert blob.resolve() == resolve_gguf(BUNDLED_LLM).resolve()


def test_the_blob_is_a_model_privatellm_reads(store: Path) -> None:
    _, blob = find_ollama_gguf("qwen2.5:3b", store)
    assert detect(blob) == ("chat", "gguf")
    assert gguf_metadata(blob)["general.architecture"] == "llama"


def test_store_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import privatellm.ollama

    monkeypatch.setattr(privatellm.ollama, "SYSTEM_STORE", tmp_path / "system" / "models")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    with pytest.raises(ModelError, match=r"^no Ollama model store found \(looked in ") as none:
        ollama_models_dir()
    assert str(tmp_path / "home" / ".ollama" / "models") in str(none.value)
    assert str(tmp_path / "system" / "models") in str(none.value)

    (tmp_path / "system" / "models" / "manifests").mkdir(parents=True)
    assert ollama_models_dir() == tmp_path / "system" / "models"
    (tmp_path / "home" / ".ollama" / "models" / "manifests").mkdir(parents=True)
    assert ollama_models_dir() == tmp_path / "home" / ".ollama" / "models"

    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "elsewhere"))
    with pytest.raises(ModelError, match="elsewhere"):
        ollama_models_dir()
    (tmp_path / "elsewhere" / "manifests").mkdir(parents=True)
    assert ollama_models_dir() == tmp_path / "elsewhere"


def test_store_from_environment_is_used_by_default(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    assert find_ollama_gguf("smollm2")[0] == "smollm2"


def test_a_model_not_pulled_lists_the_ones_there_are(store: Path) -> None:
    with pytest.raises(ModelError) as missing:
        find_ollama_gguf("ollama:llama3.2:1b", store)
    message = str(missing.value)
    assert message.startswith("'llama3.2:1b' is not pulled in the Ollama store")
    assert "qwen2.5:3b, smollm2:latest, someone/Tiny-Model:q4_K_M" in message
    assert "ollama pull llama3.2:1b" in message
    assert pulled_models(store) == ["qwen2.5:3b", "smollm2:latest", "someone/Tiny-Model:q4_K_M"]


def test_a_missing_or_foreign_blob_is_a_clear_error(store: Path, tmp_path: Path) -> None:
    add_model(store, "registry.ollama.ai/library/gone/latest", None, digest="c3" * 32)
    with pytest.raises(ModelError, match=r"^the model file of 'gone' is missing from the Ollama"):
        find_ollama_gguf("gone", store)

    text = tmp_path / "notes.txt"
    text.write_text("not a model", encoding="utf-8")
    add_model(store, "registry.ollama.ai/library/text/latest", text, digest="d4" * 32)
    with pytest.raises(ModelError, match=r"is not a GGUF file$"):
        find_ollama_gguf("text", store)

    manifest = store / "manifests/registry.ollama.ai/library/qwen2.5/3b"
    document = json.loads(manifest.read_text(encoding="utf-8"))
    document["layers"][0]["size"] += 1  # the blob is shorter than the manifest says
    manifest.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ModelError, match="its manifest says"):
        find_ollama_gguf("qwen2.5:3b", store)

    document["layers"] = document["layers"][1:]  # a manifest with no model layer
    manifest.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ModelError, match="names no model file"):
        find_ollama_gguf("qwen2.5:3b", store)


@pytest.mark.parametrize("ref", ["", ":3b", "a/b/c/d:1", "qwen2.5:", "a//b", "../x/model"])
def test_malformed_references(ref: str) -> None:
    with pytest.raises(ModelError, match=r"^not an Ollama model name"):
        parse_reference(ref)


def test_a_port_is_not_a_tag() -> None:
    assert parse_reference("localhost:5000/me/model") == ("localhost:5000", "me", "model", "latest")
    assert parse_reference("localhost:5000/me/model:v2") == ("localhost:5000", "me", "model", "v2")


def test_models_import_links_the_blob_without_copying(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import run_cli

    from privatellm.registry import Registry

    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    data = tmp_path / "data"
    imported = run_cli("--data-dir", data, "models", "import", "ollama:qwen2.5:3b")
    assert imported.returncode == 0, imported.stderr
    model = Registry(data).get("qwen2.5-3b")
    link = Path(model.path)
    target = Path(os.readlink(link))  # the store's blob (itself a link to the bundled GGUF)
    assert target.parent == store / "blobs" and target.name.startswith("sha256")
    assert model.role == "chat" and model.kind == "gguf"
    removed = run_cli("--data-dir", data, "models", "rm", "qwen2.5-3b")
    assert removed.returncode == 0 and not link.exists() and (store / "blobs").exists()
    assert any((store / "blobs").iterdir())  # the blob stays Ollama's
