"""Folders declared in settings (ingest.watch), kept in step while the API and the page answer.

Real watchers on real tmp folders, real Chroma; the fake embedder and engine keep it fast.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
import yaml
from conftest import REPO
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

from privatellm.api import create_app
from privatellm.config import Settings
from privatellm.service import Service
from privatellm.watchfolders import describe, start_watchers, stop_watchers
from privatellm.watching import FolderWatcher, WatchState

EIFFEL = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris."
WAIT = 60.0  # seconds: far above what a sync of these small folders takes


def _eventually(check: Callable[[], Any], seconds: float = WAIT) -> Any:
    """Returns check()'s first truthy value, polling; fails after seconds."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {seconds} s: {check.__doc__ or check}")
        time.sleep(0.05)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "notes"
    path.mkdir()
    return path


@pytest.fixture
def service(tmp_path: Path, folder: Path) -> Service:
    settings = Settings(
        data_dir=tmp_path / "data",
        embedding={"kind": "fake"},  # type: ignore[arg-type]
        engine={"kind": "fake"},  # type: ignore[arg-type]
        ingest={"watch": [{"path": folder}], "watch_debounce_seconds": 0.3},  # type: ignore[arg-type]
    )
    return Service(settings)


@pytest.fixture
def watchers(service: Service) -> Iterator[list[FolderWatcher]]:
    started = start_watchers(service)
    try:
        yield started
    finally:
        stop_watchers(started)


@pytest.fixture
def client(service: Service, watchers: list[FolderWatcher]) -> Iterator[TestClient]:
    with TestClient(create_app(service, watchers)) as test_client:
        yield test_client


def _watched(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/v1/ingest/watch")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _file_names(client: TestClient) -> list[str]:
    response = client.get("/v1/ingest/list")
    assert response.status_code == 200, response.text
    return sorted(d["doc_metadata"]["file_name"] for d in response.json()["data"])


def _in_step(client: TestClient, names: list[str]) -> bool:
    """The folder is in step and the collection holds exactly names."""
    [state] = _watched(client)
    return state["state"] == "in step" and _file_names(client) == sorted(names)


def test_settings_declare_watched_folders() -> None:
    settings = Settings.model_validate(
        {"ingest": {"watch": [{"path": "~/notes", "collection": "notes", "polling": True}]}}
    )
    [folder] = settings.ingest.watch
    assert (folder.path, folder.collection, folder.polling) == (Path("~/notes"), "notes", True)
    assert Settings().ingest.watch == [] and Settings().ingest.watch_debounce_seconds == 1.0


def test_api_shows_watch_state_and_serves_what_the_folder_holds(
    client: TestClient, folder: Path
) -> None:
    _eventually(lambda: _in_step(client, []))
    [state] = _watched(client)
    assert state["path"] == str(folder.resolve()) and state["collection"] == "default"
    assert state["pending"] == 0

    (folder / "eiffel.txt").write_text(EIFFEL, encoding="utf-8")
    _eventually(lambda: _in_step(client, ["eiffel.txt"]))
    chunks = client.post("/v1/chunks", json={"text": "When was the Eiffel Tower completed?"})
    assert chunks.status_code == 200, chunks.text
    [hit] = chunks.json()["data"]
    assert hit["document"]["doc_metadata"]["file_name"] == "eiffel.txt" and "1889" in hit["text"]
    assert "eiffel.txt" in (_watched(client)[0]["last_event"] or "")

    (folder / "eiffel.txt").unlink()
    _eventually(lambda: _in_step(client, []))


def test_watch_state_needs_the_api_key(
    service: Service, watchers: list[FolderWatcher], folder: Path
) -> None:
    service.settings.api.api_key = "sesame"
    with TestClient(create_app(service, watchers)) as locked:
        assert locked.get("/v1/ingest/watch").status_code == 401
        allowed = locked.get("/v1/ingest/watch", headers={"Authorization": "Bearer sesame"})
    assert allowed.status_code == 200 and allowed.json()["data"][0]["path"] == str(folder.resolve())


def test_questions_are_answered_while_a_batch_syncs(client: TestClient, folder: Path) -> None:
    (folder / "eiffel.txt").write_text(EIFFEL, encoding="utf-8")
    _eventually(lambda: _in_step(client, ["eiffel.txt"]))
    names = ["eiffel.txt"]
    for n in range(150):
        name = f"note-{n:03}.txt"
        (folder / name).write_text(f"Note {n}: the bridge number {n} is painted red.", "utf-8")
        names.append(name)
    seen: set[str] = set()
    slowest = 0.0
    while not _in_step(client, names):
        seen.add(_watched(client)[0]["state"])
        started = time.monotonic()
        question = {"role": "user", "content": "When was the Eiffel Tower completed?"}
        body = {"messages": [question], "use_context": True, "include_sources": True}
        response = client.post("/v1/chat/completions", json=body)
        slowest = max(slowest, time.monotonic() - started)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]
        assert slowest < 20, "a question waited behind the sync"
    assert seen - {"in step"}, f"no question was asked during the sync (states seen: {seen})"
    assert _watched(client)[0]["last_error"] is None


def _state(state: str, pending: int = 0, error: str | None = None) -> WatchState:
    return WatchState("/docs", "default", state, pending, error, None)  # type: ignore[arg-type]


def test_describe_reads_as_the_page_shows_it() -> None:
    assert describe(_state("in step")) == "in step"
    assert describe(_state("pending", 3)) == "3 pending"
    assert describe(_state("error", error="folder is gone")) == "last error: folder is gone"
    both = describe(_state("in step", error="failed scan.tif: no text"))
    assert both == "in step; last error: failed scan.tif: no text"


# -- the page --------------------------------------------------------------------------------------


@pytest.fixture
def page_settings(tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The page's settings: a config file declaring the watched folder; the page's watchers are
    stopped at the end (clearing Streamlit's resource cache releases them)."""
    config = tmp_path / "watch.yaml"
    profile = {
        "data_dir": str(tmp_path / "data"),
        "embedding": {"kind": "fake"},
        "engine": {"kind": "fake"},
        "ingest": {"watch": [{"path": str(folder), "collection": "notes"}]},
    }
    config.write_text(yaml.safe_dump(profile), encoding="utf-8")
    for name in ("PRIVATELLM_DATA_DIR", "PRIVATELLM_EMBEDDING__KIND", "PRIVATELLM_ENGINE__KIND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PRIVATELLM_CONFIG", str(config))
    monkeypatch.setattr(sys, "argv", ["ui/app.py"])
    try:
        yield config
    finally:
        st.cache_resource.clear()


def _watch_lines(at: AppTest) -> list[str]:
    return [str(c.value) for c in at.sidebar.caption if ":material/folder:" in c.value]


def test_page_shows_each_watched_folder(page_settings: Path, folder: Path) -> None:
    (folder / "eiffel.txt").write_text(EIFFEL, encoding="utf-8")
    at = AppTest.from_file(str(REPO / "ui" / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception and not at.error
    [line] = _watch_lines(at)
    assert str(folder.resolve()) in line.replace("\\", "") and "notes" in line

    def in_step() -> bool:
        """the page's line says in step"""
        at.run()
        return _watch_lines(at)[0].endswith(": in step")

    _eventually(in_step)
    at.selectbox(key="collection").set_value("notes").run()
    assert any("eiffel" in m.value for m in at.sidebar.markdown)  # the watcher ingested it
