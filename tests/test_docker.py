"""The container files, linted (no Docker engine runs here, so they are not built in CI):
hadolint on the Dockerfile, and the compose file's services, ports, healthchecks and volumes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

DOCKER = REPO / "docker"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    done = subprocess.run(
        [hadolint, "--config", DOCKER / ".hadolint.yaml", DOCKER / "Dockerfile"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_multi_stage_non_root_and_offline() -> None:
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    assert sum(line.startswith("FROM ") for line in text.splitlines()) == 2
    assert "AS build" in text and "COPY --from=build" in text
    assert "\nUSER 10001\n" in text and "useradd" in text
    assert "HF_HUB_OFFLINE=1" in text and "ANONYMIZED_TELEMETRY=False" in text
    assert "-DGGML_NATIVE=OFF" in text and "whl/cpu" in text
    assert "COPY ingest" not in text and "COPY . " not in text  # no documents in the image


def test_dockerignore_keeps_documents_and_data_out() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").split("\n")
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "**"  # everything excluded unless named
    included = {rule[1:] for rule in rules if rule.startswith("!")}
    assert not any(r.startswith(("ingest", "docs", "data", ".venv", "tests")) for r in included)


def test_compose_services_ports_healthchecks_and_volumes() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"chroma", "api", "ui"}
    chroma, api, ui = services["chroma"], services["api"], services["ui"]
    assert "/api/v2/heartbeat" in " ".join(chroma["healthcheck"]["test"])
    assert "http://127.0.0.1:8001/health" in " ".join(api["healthcheck"]["test"])
    assert "/_stcore/health" in " ".join(ui["healthcheck"]["test"])
    assert api["ports"] == ["127.0.0.1:8001:8001"] and ui["ports"] == ["127.0.0.1:8501:8501"]
    for service in (api, ui):
        env = service["environment"]
        assert env["PRIVATELLM_STORE__KIND"] == "chroma-server"
        assert env["PRIVATELLM_STORE__HOST"] == "chroma"
        assert service["depends_on"]["chroma"]["condition"] == "service_healthy"
        assert "privatellm-data:/data" in service["volumes"]
    assert "chroma-data:/data" in chroma["volumes"]
    assert set(compose["volumes"]) == {"chroma-data", "privatellm-data"}
    assert api["build"]["dockerfile"] == "docker/Dockerfile"


def test_compose_settings_are_privatellm_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every PRIVATELLM_* variable the compose file sets names a real setting."""
    from privatellm.config import load_settings

    for key, value in _compose()["services"]["api"]["environment"].items():
        monkeypatch.setenv(key, "" if value.startswith("${") else value)
    settings = load_settings()
    assert settings.store.kind == "chroma-server" and settings.store.host == "chroma"
    assert str(settings.data_dir) == "/data"
