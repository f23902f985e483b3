"""A corpus of bad files beside good ones: each bad one gets a one-line reason, nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import (
    SAMPLES,
    encrypt_pdf,
    make_pdf,
    make_scanned_pdf,
    many_page_tiff,
    run_cli,
    text_image,
)

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
    text_image(["Receipt: 2 coffees, 7.80 EUR"]).save(root / "receipt.png")
    (root / "bomb.png").write_bytes(_png_claiming(30_000, 30_000))
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(3000))
    text_image([], width=1, height=1).save(root / "tiny.png")
    text_image([], width=800, height=600).save(root / "blank.png")
    (root / "pages.tiff").write_bytes(many_page_tiff(10_000))
    return root


def _png_claiming(width: int, height: int) -> bytes:
    """Returns a small PNG whose header claims width x height pixels: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


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
        "receipt.png",
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
        "bomb.png",
        "corrupt.jpg",
        "tiny.png",
        "blank.png",
        "pages.tiff",
    }
    assert "not a readable PDF" in failed["corrupt.pdf"]
    assert "password-protected" in failed["needs-password.pdf"]
    assert "empty file" in failed["zero.txt"]
    assert "no text found, not even by OCR" in failed["scanned.pdf"]
    assert "decompression bomb" in failed["bomb.png"]
    assert "not a readable image" in failed["corrupt.jpg"]
    assert failed["tiny.png"].endswith("OCR found no text")
    assert failed["blank.png"].endswith("OCR found no text")
    assert "10,000 pages is over the limit of 1,000" in failed["pages.tiff"]
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
    assert "6 added" in result.stdout and "11 failed" in result.stdout


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
