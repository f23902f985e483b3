"""Loaders: each format to text, encodings detected, failures as one-line LoaderErrors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_pdf

from privatellm.errors import CorruptDocumentError, LoaderError
from privatellm.loaders import decode_text, parse, suffixes

CHINESE = "今天天气很好，我们去公园散步。繁體中文也可以正確讀取嗎？"


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "gbk", "gb18030", "big5"]
)
def test_chinese_text_in_common_encodings(encoding: str) -> None:
    text = CHINESE if encoding != "gbk" else CHINESE.replace("繁體中文也可以正確讀取嗎", "简体")
    if encoding == "utf-16-le":  # no BOM: told apart by the NUL bytes of its ASCII characters
        text = "Notes 笔记: meeting at 10:00, 会议室 B."
    if encoding == "big5":
        text = "繁體中文的檔案通常使用大五碼編碼，讀取時必須正確判斷。"
    assert decode_text(text.encode(encoding)) == text


def test_latin1_and_binary() -> None:
    assert decode_text("Café crème brûlée".encode("latin-1")) == "Café crème brûlée"
    with pytest.raises(CorruptDocumentError, match="binary"):
        decode_text(bytes(range(256)) * 10)


def _parse(path: Path) -> list[str]:
    return [p.text for p in parse(path, path.read_bytes(), str(path), 1_000_000).pages]


def test_html_keeps_text_drops_scripts_and_styles(tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    page.write_text(
        "<html><head><title>T</title><style>body{color:red}</style></head><body>"
        "<script>var secret = 1;</script><h1>Heading</h1><p>Visible &amp; kept.</p>"
        "<table><tr><td>北京</td><td>2024</td></tr></table></body></html>",
        encoding="utf-8",
    )
    (text,) = _parse(page)
    assert text.startswith("T\nHeading") and "Visible & kept." in text and "北京" in text
    assert "secret" not in text and "color" not in text


def test_pdf_pages_keep_their_numbers(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "a.pdf", ["alpha page", "", "gamma page"])
    document = parse(pdf, pdf.read_bytes(), str(pdf), 1_000_000)
    assert [p.page for p in document.pages] == [1, 2, 3]
    assert "gamma" in document.pages[2].text
    assert document.warnings == ["1 of 3 pages have no text"]  # blank: nothing to OCR either


def test_docx_csv_json_epub(tmp_path: Path) -> None:
    import docx
    from ebooklib import epub

    d = docx.Document()
    d.add_paragraph("Paragraph in Word.")
    d.add_table(rows=1, cols=2).rows[0].cells[0].text = "cell text"
    d.save(str(tmp_path / "a.docx"))
    assert "Paragraph in Word." in _parse(tmp_path / "a.docx")[0]
    assert "cell text" in _parse(tmp_path / "a.docx")[0]

    (tmp_path / "a.csv").write_text("city,population\nParis,2100000\n")
    assert "city: Paris; population: 2100000" in _parse(tmp_path / "a.csv")[0]

    (tmp_path / "a.json").write_text(json.dumps({"team": {"lead": "Ada", "size": 3}}))
    assert _parse(tmp_path / "a.json")[0] == "team.lead: Ada\nteam.size: 3"
    (tmp_path / "b.json").write_text("{broken")
    with pytest.raises(CorruptDocumentError, match="invalid JSON"):
        _parse(tmp_path / "b.json")

    book = epub.EpubBook()
    book.set_identifier("id1")
    book.set_title("Book")
    chapter = epub.EpubHtml(title="One", file_name="one.xhtml", lang="en")
    chapter.content = "<html><body><h1>Chapter one</h1><p>Once upon a time.</p></body></html>"
    book.add_item(chapter)
    book.spine = [chapter]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    epub.write_epub(str(tmp_path / "a.epub"), book)
    assert any("Once upon a time." in t for t in _parse(tmp_path / "a.epub"))


def test_every_listed_extension_has_a_loader() -> None:
    listed = {"pdf", "txt", "md", "rst", "html", "docx", "csv", "json", "epub", "pptx", "xlsx"}
    images = {"png", "jpg", "jpeg", "tif", "tiff", "webp", "bmp"}
    assert listed | images | {"eml"} <= set(suffixes())


def test_broken_docx_is_reported(tmp_path: Path) -> None:
    (tmp_path / "x.docx").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(LoaderError, match=r"not a readable \.docx"):
        _parse(tmp_path / "x.docx")
