"""The CLI starts fast: --help and docs list import neither torch nor llama_cpp, and retrieve runs
the bundled embedding model without sentence-transformers and what it pulls in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
from privatellm.cli import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
loaded = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print("LOADED", json.dumps(loaded), file=sys.stderr)
"""
HEAVY = ("torch", "llama_cpp", "sentence_transformers")
# What sentence-transformers imports and embedding one question needs none of: 3.5 s of imports.
NOT_FOR_A_QUESTION = ("sentence_transformers", "sklearn", "transformers", "accelerate", "pandas")


def _loaded(modules: tuple[str, ...], *args: str) -> list[str]:
    """Returns which of the modules a `privatellm ARGS` run in a fresh interpreter imported."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(modules), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    loaded: list[str] = json.loads(result.stderr.rsplit("LOADED ", 1)[1])
    return loaded


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Returns a data directory holding one tiny ingested document."""
    tmp_path = tmp_path_factory.mktemp("startup")
    (tmp_path / "a.txt").write_text("Llama runs locally with llama.cpp on an ordinary laptop.")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "privatellm",
            "--data-dir",
            str(tmp_path / "d"),
            "ingest",
            str(tmp_path / "a.txt"),
        ],
        check=True,
        capture_output=True,
    )
    return tmp_path / "d"


def test_help_imports_nothing_heavy() -> None:
    assert _loaded(HEAVY, "--help") == []


def test_docs_list_imports_nothing_heavy(data_dir: Path) -> None:
    assert _loaded(HEAVY, "--data-dir", str(data_dir), "docs", "list") == []


def test_retrieve_imports_no_sentence_transformers(data_dir: Path) -> None:
    args = ("--data-dir", str(data_dir), "retrieve", "How do I run Llama locally?")
    assert _loaded((*NOT_FOR_A_QUESTION, "torch"), *args) == ["torch"]  # it did embed the question
