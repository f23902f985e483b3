"""Settings: code defaults, YAML profiles, env vars and flags, in that order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import SAMPLES, run_cli

from privatellm.config import Settings, load_settings
from privatellm.errors import ConfigError
from privatellm.service import Service

REPO = Path(__file__).resolve().parent.parent


def test_default_yaml_equals_code_defaults() -> None:
    written = yaml.safe_load((REPO / "configs" / "default.yaml").read_text(encoding="utf-8"))
    assert written == Settings().model_dump(mode="json", exclude={"data_dir"})


def test_every_setting_has_a_description() -> None:
    def walk(model: type) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                missing += walk(annotation)
            elif not field.description:
                missing.append(name)
        return missing

    assert walk(Settings) == []


def test_layers_yaml_then_env_then_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("chunking:\n  chunk_tokens: 100\n  overlap_tokens: 10\ncollection: a1b\n")
    top = tmp_path / "top.yaml"
    top.write_text("chunking:\n  chunk_tokens: ${CHUNK:120}\n")
    settings = load_settings([base, top])
    assert (settings.chunking.chunk_tokens, settings.chunking.overlap_tokens) == (120, 10)
    monkeypatch.setenv("CHUNK", "130")
    assert load_settings([base, top]).chunking.chunk_tokens == 130
    monkeypatch.setenv("PRIVATELLM_CHUNKING__CHUNK_TOKENS", "140")
    monkeypatch.setenv("PRIVATELLM_DATA_DIR", str(tmp_path / "env"))
    settings = load_settings([base, top])
    assert settings.chunking.chunk_tokens == 140 and settings.data_dir == tmp_path / "env"
    flagged = load_settings([base, top], {"data_dir": tmp_path / "flag"})
    assert flagged.data_dir == tmp_path / "flag"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("chunking:\n  chunk_tokens: 2\n", "invalid setting chunking.chunk_tokens"),
        ("embedding:\n  precision: fp8\n", "invalid setting embedding.precision"),
        ("nonsense_key: 1\n", "invalid setting nonsense_key"),
        ("- a list\n", "must hold a mapping"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings([path])
    assert "\n" not in str(caught.value)


def test_config_command_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(
        "api: {api_key: api-secret-1}\nengine: {api_key: engine-secret-2}\n"
        "store: {auth_token: store-secret-3}\n"
    )
    shown = run_cli("--config", path, "config")
    assert shown.returncode == 0, shown.stderr
    assert "secret-" not in shown.stdout
    sections = yaml.safe_load(shown.stdout.split("\n", 1)[1])  # after the data_dir line
    assert sections["api"]["api_key"] == sections["engine"]["api_key"] == "***"
    assert sections["store"]["auth_token"] == "***"
    plain = yaml.safe_load(run_cli("config").stdout.split("\n", 1)[1])
    assert plain["api"]["api_key"] == plain["engine"]["api_key"] == ""  # unset: nothing to hide


def test_retrieve_returns_the_configured_top_k(tmp_path: Path, fake_config: Path) -> None:
    data = tmp_path / "data"
    Service(load_settings([fake_config], {"data_dir": data})).ingest([SAMPLES])
    assert Settings().retrieval.top_k == 3

    def retrieve(*config: Path, flags: tuple[str, ...] = ()) -> int:
        options = [arg for path in (fake_config, *config) for arg in ("--config", path)]
        found = run_cli("--data-dir", data, *options, "retrieve", "llama", "--json", *flags)
        assert found.returncode == 0, found.stderr
        return len(json.loads(found.stdout))

    top_2 = tmp_path / "top-2.yaml"
    top_2.write_text("retrieval: {top_k: 2}\n")
    assert retrieve() == 3
    assert retrieve(top_2) == 2
    assert retrieve(top_2, flags=("--top-k", "4")) == 4
