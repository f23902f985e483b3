"""A corpus of bad files beside good ones: each bad one gets a one-line reason, nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLES, encrypt_pdf, make_pdf, make_scanned_pdf, run_cli

GBK_TEXT = "北京是中华人民共和国的首都。长城是古代中国的军事防御工程。"


def _drop_root_read_override() -> list[str]:
    # Root reads any file whatever its mode; without CAP_DAC_OVERRIDE it sees permissions as a
    # user does, so a mode-000 file is really unreadable to the CLI under test.
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    shutil.copy(SAMPLES / "privatellm-guide.md", root / "guide.md")
    make_pdf(root / "report.pdf", ["First page about apples.", "Second page about pears."])
    (root / "chinese-gbk.txt").write_bytes(GBK_TEXT.encode("gbk"))
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    encrypt_pdf(root / "report.pdf", root / "empty-password.pdf", user_password="")
    encrypt_pdf(root / "report.pdf", root / "needs-password.pdf", user_password="s3cret")
    (root / "zero.txt").write_bytes(b"")
    make_scanned_pdf(root / "scanned.pdf")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 64)
    with (root / "one-line.txt").open("w") as f:
        for _ in range(1000):
            f.write("lorem ipsum dolor sit amet " * 1940)  # 50 MB, no newline anywhere
    unreadable = root / "unreadable.txt"
    unreadable.write_text("private notes")
    unreadable.chmod(0)
    (root / "loop").symlink_to(root / "loop")
    (root / "sub").mkdir()
    (root / "sub" / "back-up").symlink_to(root)  # a folder that contains itself
    shutil.copy(root / "guide.md", root / "z-guide-copy.md")
    (root / os.fsdecode(b"caf\xe9-latin1-name.txt")).write_text("A note about coffee beans.")
    (root / "data.xyz").write_text("unknown format")
    return root


def test_each_bad_file_gets_a_reason_and_every_good_file_is_ingested(
    corpus: Path, tmp_path: Path, fake_config: Path
) -> None:
    data = tmp_path / "data"
    result = run_cli(
        "--data-dir",
        data,
        "--config",
        fake_config,
        "ingest",
        corpus,
        "--json",
        prefix=_drop_root_read_override(),
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    names = lambda rows: {Path(r if isinstance(r, str) else r["path"]).name for r in rows}  # noqa: E731
    assert names(report["added"]) == {
        "guide.md",
        "report.pdf",
        "chinese-gbk.txt",
        "empty-password.pdf",
        "caf\\xe9-latin1-name.txt",
    }
    failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert set(failed) == {
        "corrupt.pdf",
        "needs-password.pdf",
        "zero.txt",
        "scanned.pdf",
        "binary.txt",
        "one-line.txt",
        "unreadable.txt",
    }
    assert "not a readable PDF" in failed["corrupt.pdf"]
    assert "password-protected" in failed["needs-password.pdf"]
    assert "empty file" in failed["zero.txt"]
    assert "needs OCR" in failed["scanned.pdf"]
    assert "binary" in failed["binary.txt"]
    assert "a line of 52," in failed["one-line.txt"]
    assert "Permission denied" in failed["unreadable.txt"]
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert skipped["loop"] == "symlink loop"
    assert skipped["back-up"] == "symlink loop"
    assert skipped["z-guide-copy.md"].startswith("same content as ")
    assert skipped["data.xyz"] == "unsupported file type .xyz"
    for reason in [*failed.values(), *skipped.values()]:
        assert "\n" not in reason and len(reason) < 300
    assert report["chunks"] > 0


def test_bad_files_are_reported_in_the_human_summary_without_traceback(
    corpus: Path, tmp_path: Path, fake_config: Path
) -> None:
    (corpus / "unreadable.txt").unlink()
    result = run_cli("--data-dir", tmp_path / "d", "--config", fake_config, "ingest", corpus)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "failed    " in result.stderr and "scanned.pdf: " in result.stderr
    assert "5 added" in result.stdout and "6 failed" in result.stdout


def test_gbk_text_is_decoded_not_garbled(corpus: Path, fake_service) -> None:  # type: ignore[no-untyped-def]
    fake_service.ingest([corpus / "chinese-gbk.txt"])
    hits = fake_service.retrieve("长城", top_k=1)
    assert hits and GBK_TEXT in hits[0].chunk.text


def test_pdf_encrypted_with_empty_password_opens(corpus: Path, fake_service) -> None:  # type: ignore[no-untyped-def]
    report = fake_service.ingest([corpus / "empty-password.pdf"])
    assert report.paths("added")
    (record,) = fake_service.documents()
    assert record.pages == 2


def test_missing_path_is_a_usage_error(tmp_path: Path, fake_config: Path) -> None:
    result = run_cli("--data-dir", tmp_path, "--config", fake_config, "ingest", tmp_path / "nope")
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
