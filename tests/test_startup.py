"""The CLI starts fast: --help and docs list import neither torch nor llama_cpp."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
from privatellm.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "llama_cpp", "sentence_transformers") if m in sys.modules)
print("HEAVY", heavy, file=sys.stderr)
"""


def _heavy_modules(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=False
    )
    return result.stderr.rsplit("HEAVY ", 1)[1].strip()


def test_help_imports_nothing_heavy() -> None:
    assert _heavy_modules("--help") == "[]"


def test_docs_list_imports_nothing_heavy(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
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
    assert _heavy_modules("--data-dir", str(tmp_path / "d"), "docs", "list") == "[]"
