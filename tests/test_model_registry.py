"""The model registry and the commands around it (import, catalog, use, rm, list), and
switching chat models at run time on the API and the page, with the real llama.cpp engine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

from privatellm.api import create_app
from privatellm.config import BUNDLED_LLM, Settings, load_settings
from privatellm.embeddings import Embedder, bundled_model_dir
from privatellm.engines.llamacpp import resolve_gguf
from privatellm.errors import ConfigError, NotFoundError
from privatellm.registry import RegisteredModel, Registry, detect, resolve_names
from privatellm.service import Service

EVEREST = "Mount Everest is 8,849 metres high and lies on the border of Nepal and China."


def _linked_gguf(folder: Path, name: str) -> Path:
    """A second chat model: the bundled GGUF under another name (a link: 98 MB not copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"{name}.gguf"
    link.symlink_to(resolve_gguf(BUNDLED_LLM))
    return link


def test_import_use_list_and_rm_through_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    model = _linked_gguf(tmp_path / "files", "smol-copy")
    imported = run_cli("--data-dir", data, "models", "import", model)
    assert imported.returncode == 0, imported.stderr
    assert "registered smol-copy: chat model (gguf" in imported.stdout
    again = run_cli("--data-dir", data, "models", "import", model)
    assert again.returncode == 2 and "registered already" in again.stderr
    assert "Traceback" not in again.stderr

    used = run_cli("--data-dir", data, "models", "use", "smol-copy")
    assert used.returncode == 0, used.stderr
    assert yaml.safe_load((data / "settings.yaml").read_text())["engine"]["model"] == "smol-copy"
    settings = load_settings([], {"data_dir": data})
    assert settings.engine.model == "smol-copy"  # the user layer under everything explicit
    assert Service(settings).settings.engine.model == str(model)  # the name resolved
    listed = json.loads(run_cli("--data-dir", data, "models", "list", "--json").stdout)
    chosen = [m for m in listed if m["configured"] and m["role"] == "chat"]
    assert [m["name"] for m in chosen] == ["smol-copy"]
    assert "SmolLM2-135M-Instruct" in [m["name"] for m in listed]  # the bundled one stays

    removed = run_cli("--data-dir", data, "models", "rm", "smol-copy")
    assert removed.returncode == 0, removed.stderr
    assert "its files stay" in removed.stdout and model.is_symlink()  # imported: not deleted
    assert "back to the bundled one" in removed.stderr
    assert load_settings([], {"data_dir": data}).engine.model == BUNDLED_LLM


def test_explicit_config_wins_over_models_use(tmp_path: Path) -> None:
    data = tmp_path / "data"
    model = _linked_gguf(tmp_path / "files", "smol-copy")
    Registry(data).add(RegisteredModel("smol-copy", "chat", "gguf", str(model)))
    config = tmp_path / "mine.yaml"
    config.write_text(f"engine:\n  model: {BUNDLED_LLM}\n", encoding="utf-8")
    used = run_cli("--data-dir", data, "--config", config, "models", "use", "smol-copy")
    assert used.returncode == 0, used.stderr
    assert "warning:" in used.stderr and "which wins" in used.stderr
    assert load_settings([config], {"data_dir": data}).engine.model == BUNDLED_LLM


def test_registry_rules(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "data")
    assert [m.name for m in registry.all()] == ["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"]
    with pytest.raises(ConfigError, match="invalid model name"):
        registry.add(RegisteredModel("../up", "chat", "gguf", str(tmp_path)))
    with pytest.raises(ConfigError, match="bundled"):
        registry.remove("all-MiniLM-L6-v2")
    with pytest.raises(NotFoundError, match="registered: SmolLM2-135M-Instruct"):
        registry.get("nothing", "chat")
    owned_dir = registry.folder("pulled")
    model = _linked_gguf(owned_dir, "pulled")
    registry.add(RegisteredModel("pulled", "chat", "gguf", str(model), "hf:x/y@1", owned=True))
    assert registry.get("PULLED").size_bytes > 90e6  # case-insensitive; size of the target
    registry.remove("pulled")
    assert not owned_dir.exists()  # downloaded by privatellm: its folder goes
    assert resolve_gguf(BUNDLED_LLM).is_file()  # and never what a link points at


def test_detect_and_card_languages(tmp_path: Path) -> None:
    assert detect(resolve_gguf(BUNDLED_LLM)) == ("chat", "gguf")
    assert detect(bundled_model_dir()) == ("embedding", "sentence-transformers")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    assert detect(hf) == ("chat", "hf")
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(Exception, match="not a GGUF file"):
        detect(text)
    folder = tmp_path / "st"
    folder.mkdir()
    (folder / "modules.json").write_text("[]")
    (folder / "README.md").write_text("---\nlanguage:\n- en\n- zh\n---\n# card\n")
    imported = run_cli("--data-dir", tmp_path / "data", "models", "import", folder, "--name", "m")
    assert imported.returncode == 0, imported.stderr
    assert Registry(tmp_path / "data").get("m").languages == ("en", "zh")


def test_catalog_lists_pullable_models(tmp_path: Path) -> None:
    shown = run_cli("--data-dir", tmp_path, "models", "catalog", "--json")
    rows = {r["name"]: r for r in json.loads(shown.stdout)}
    assert {"qwen2.5-3b", "llama-3.2-1b", "multilingual-e5-small", "bge-m3"} <= set(rows)
    assert rows["qwen2.5-3b"]["file"].endswith(".gguf") and "zh" in rows["qwen2.5-3b"]["languages"]
    assert all(r["ram_gb"] > r["size_gb"] for r in rows.values())
    unknown = run_cli("--data-dir", tmp_path, "models", "pull", "no-such-model")
    assert unknown.returncode == 2 and "models catalog" in unknown.stderr


def test_names_resolve_only_where_no_path_exists(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "data")
    model = _linked_gguf(tmp_path / "files", "smol-copy")
    registry.add(RegisteredModel("smol-copy", "chat", "gguf", str(model)))
    named = Settings(data_dir=tmp_path / "data", engine={"kind": "torch", "model": "smol-copy"})  # type: ignore[arg-type]
    resolved = resolve_names(named, registry)
    assert resolved.engine.model == str(model) and resolved.engine.kind == "torch"
    wrong_role = Settings(data_dir=tmp_path, embedding={"model": "smol-copy"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="registered as a chat model"):
        resolve_names(wrong_role, registry)


# -- switching at run time -------------------------------------------------------------------------


@pytest.fixture
def two_models(tmp_path: Path, real_embedder: Embedder) -> Service:
    """A service on the scripted fake engine, with the real bundled GGUF registered twice."""
    data = tmp_path / "data"
    registry = Registry(data)
    for name in ("smol-a", "smol-b"):
        registry.add(RegisteredModel(name, "chat", "gguf", str(_linked_gguf(tmp_path, name))))
    settings = Settings(
        data_dir=data,
        engine={
            "kind": "fake",
            "model": "scripted",
            "script": ["Scripted [1]."] * 5,
            "max_loaded": 2,
        },  # type: ignore[arg-type]
    )
    service = Service(settings, embedder=real_embedder)
    (tmp_path / "everest.txt").write_text(EVEREST, encoding="utf-8")
    service.ingest([tmp_path / "everest.txt"])
    return service


def test_api_lists_registered_models_and_a_request_picks_one(two_models: Service) -> None:
    client = TestClient(create_app(two_models))
    listed = client.get("/v1/models").json()
    assert [m["id"] for m in listed["data"]] == [
        "scripted",
        "SmolLM2-135M-Instruct",
        "smol-a",
        "smol-b",
    ]
    body = {
        "messages": [{"role": "user", "content": "How high is Mount Everest?"}],
        "use_context": True,
        "answer_mode": "generate",
        "max_tokens": 12,
    }
    default = client.post("/v1/chat/completions", json={**body, "model": "gpt-4o"}).json()
    assert default["model"] == "scripted"
    assert default["choices"][0]["message"]["content"].startswith("Scripted")
    picked = client.post("/v1/chat/completions", json={**body, "model": "smol-a"}).json()
    assert picked["model"] == "smol-a"  # the real llama.cpp engine wrote this one
    assert not picked["choices"][0]["message"]["content"].startswith("Scripted")
    client.post("/v1/chat/completions", json={**body, "model": "smol-b"})
    # max_loaded 2: the least recently used one goes when another comes in
    assert two_models.chat_models.loaded() == ["smol-a", "smol-b"]
    client.post("/v1/chat/completions", json={**body, "model": "scripted"})
    assert two_models.chat_models.loaded() == ["smol-b", "scripted"]


def test_page_switches_models_without_a_restart(
    two_models: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRIVATELLM_DATA_DIR", str(two_models.settings.data_dir))
    monkeypatch.setenv("PRIVATELLM_EMBEDDING__KIND", "sentence-transformers")
    monkeypatch.setenv("PRIVATELLM_ENGINE__KIND", "fake")
    monkeypatch.setenv("PRIVATELLM_ENGINE__MODEL", "scripted")
    monkeypatch.delenv("PRIVATELLM_CONFIG", raising=False)
    monkeypatch.setattr(sys, "argv", ["ui/app.py"])
    page = AppTest.from_file(str(REPO / "ui" / "app.py"), default_timeout=120).run()
    assert not page.exception
    picker = page.selectbox(key="model")
    assert picker.options == ["scripted", "SmolLM2-135M-Instruct", "smol-a", "smol-b"]
    assert "model **scripted**" in str(page.caption[0].value)
    picker.set_value("smol-b").run()
    assert not page.exception and not page.error
    status = str(page.caption[0].value)
    assert "Engine **llamacpp**" in status and "model **smol-b**" in status


def test_declared_prompts_reach_queries_and_passages(
    tmp_path: Path, real_embedder: Embedder
) -> None:
    """e5-style models need "query: " on queries and "passage: " on passages: a catalog pull
    declares them in the model's config, and the embedder applies each where it belongs."""
    import shutil

    import numpy as np

    from privatellm.catalog import catalog_entry, declare_prompts
    from privatellm.config import EmbeddingSettings
    from privatellm.embeddings import SentenceTransformerEmbedder

    folder = tmp_path / "prompted"
    shutil.copytree(bundled_model_dir(), folder)
    entry = catalog_entry("multilingual-e5-small")
    assert entry is not None
    declare_prompts(folder, entry.prompts)
    prompted = SentenceTransformerEmbedder(EmbeddingSettings(model=str(folder)))
    query = np.array(prompted.embed_query("tallest mountain"))
    passage = prompted.embed_batch(["Everest is the tallest."])[0]
    plain = real_embedder.embed_batch(
        ["query: tallest mountain", "passage: Everest is the tallest."]
    )
    assert np.allclose(query, plain[0], atol=2e-2) and np.allclose(passage, plain[1], atol=2e-2)
    assert not np.allclose(query, real_embedder.embed_query("tallest mountain"), atol=2e-2)
