"""Model management: checksum verification (Meta's checklist.chk, SHA256SUMS) and the list."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import run_cli

from privatellm.errors import ConfigError
from privatellm.models import verify


def _meta_folder(tmp_path: Path) -> Path:
    """A folder shaped like Meta's download: shards, params.json, tokenizer.model, md5 list."""
    folder = tmp_path / "llama-2-7b"
    folder.mkdir()
    files = {
        "consolidated.00.pth": b"\x80\x02weights-shard-0" * 1000,
        "consolidated.01.pth": b"\x80\x02weights-shard-1" * 1000,
        "params.json": b'{"dim": 64, "n_layers": 2}',
        "tokenizer.model": b"sentencepiece",
    }
    lines = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        lines.append(f"{hashlib.md5(data).hexdigest()}  {name}")
    (folder / "checklist.chk").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_a_complete_download_verifies(tmp_path: Path) -> None:
    checks = verify(_meta_folder(tmp_path))
    assert [(c.name, c.status) for c in checks] == [
        ("consolidated.00.pth", "OK"),
        ("consolidated.01.pth", "OK"),
        ("params.json", "OK"),
        ("tokenizer.model", "OK"),
    ]


def test_corrupted_and_missing_files_are_caught(tmp_path: Path) -> None:
    folder = _meta_folder(tmp_path)
    shard = folder / "consolidated.01.pth"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x01  # one flipped bit
    shard.write_bytes(bytes(data))
    (folder / "tokenizer.model").unlink()
    status = {c.name: c.status for c in verify(folder)}
    assert status == {
        "consolidated.00.pth": "OK",
        "consolidated.01.pth": "MISMATCH",
        "params.json": "OK",
        "tokenizer.model": "MISSING",
    }
    result = run_cli("models", "verify", folder)
    assert result.returncode == 1
    assert "MISMATCH  consolidated.01.pth: md5 " in result.stdout
    assert "MISSING   tokenizer.model" in result.stdout
    assert "2 OK, 2 not OK" in result.stderr and "Traceback" not in result.stderr


def test_sha256sums_and_binary_mode_lines(tmp_path: Path) -> None:
    folder = tmp_path / "gguf"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF" + bytes(5000))
    digest = hashlib.sha256((folder / "model.gguf").read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest} *model.gguf\n", encoding="utf-8")
    assert [(c.name, c.status) for c in verify(folder)] == [("model.gguf", "OK")]
    ok = run_cli("models", "verify", folder)
    assert ok.returncode == 0 and "OK        model.gguf" in ok.stdout


def test_a_checksum_file_cannot_point_outside_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "secret.txt").write_text("x", encoding="utf-8")
    (folder / "SHA256SUMS").write_text(f"{'0' * 64}  ../secret.txt\n", encoding="utf-8")
    [check] = verify(folder)
    assert check.status == "INVALID"


def test_folder_without_checksums_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no SHA256SUMS or checklist\.chk"):
        verify(tmp_path)
    result = run_cli("models", "verify", tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    (tmp_path / "checklist.chk").write_text("not a checksum line\n", encoding="utf-8")
    bad = run_cli("models", "verify", tmp_path)
    assert bad.returncode == 2 and "checklist.chk, line 1" in bad.stderr


def test_models_list_shows_the_bundled_models() -> None:
    result = run_cli("models", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {m["role"]: m for m in json.loads(result.stdout)}
    chat, embedding = rows["chat"], rows["embedding"]
    assert chat["engine"] == "llamacpp" and chat["quantization"] == "Q4_1"
    assert chat["context_tokens"] == 8192 and 90e6 < chat["size_bytes"] < 110e6
    assert chat["configured"] and embedding["name"] == "all-MiniLM-L6-v2"
    assert embedding["context_tokens"] == 256
