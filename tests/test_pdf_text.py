"""PDF page text through PDFium: words keep their spaces where pypdf glues them, Chinese gains
none, hyphenated words are rejoined, ligatures become letters."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pypdfium2
import pytest
from conftest import cjk_font
from fpdf import FPDF
from fpdf.fonts import CORE_FONTS_CHARWIDTHS
from pypdf import PdfReader

from privatellm.chunking import Chunker
from privatellm.config import ChunkingSettings
from privatellm.loaders import parse
from privatellm.pdftext import page_text

WIDTHS = {**CORE_FONTS_CHARWIDTHS["helvetica"], "ﬁ": 500}
# A subset TrueType font is addressed by glyph id (Identity-H): in its standard order a printable
# ASCII character's id is its code - 29, so id 32 is "=", a glyph as wide as 584/1000 em.
GLYPH_IDS = {**{chr(code): code - 29 for code in range(33, 127)}, "ﬁ": 192}
WORD_GAP = -250  # thousandths of an em between words, drawn as a kern, as TeX's pdf drivers do


def typeset_pdf(lines: list[list[str]]) -> bytes:
    """Returns a one-page PDF that draws each line's words with a kern between them and no space
    character, in a Type0 font whose glyph 32 is not the space: the words pypdf glues."""
    chars = sorted({c for line in lines for word in line for c in word})
    cmap = "\n".join(f"<{GLYPH_IDS[c]:04x}> <{ord(c):04x}>" for c in chars)
    to_unicode = (
        "/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def /CMapType 2 def\n"
        "1 begincodespacerange <0000> <ffff> endcodespacerange\n"
        f"{len(chars)} beginbfchar\n{cmap}\nendbfchar\n"
        "endcmap CMapName currentdict /CMap defineresource pop end end"
    )
    widths = " ".join(f"{GLYPH_IDS[c]} [{WIDTHS[c]}]" for c in [*chars, "="])
    shown = (
        f" {WORD_GAP} ".join(
            "<" + "".join(f"{GLYPH_IDS[c]:04x}" for c in word) + ">" for word in line
        )
        for line in lines
    )
    content = "BT /F1 11 Tf 14 TL 72 720 Td\n" + "".join(f"[{s}] TJ T*\n" for s in shown) + "ET"
    return _pdf(
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        " /Resources << /Font << /F1 5 0 R >> >> >>",
        _stream(content),
        "<< /Type /Font /Subtype /Type0 /BaseFont /Helvetica /Encoding /Identity-H"
        " /DescendantFonts [6 0 R] /ToUnicode 7 0 R >>",
        "<< /Type /Font /Subtype /CIDFontType2 /BaseFont /Helvetica /FontDescriptor 8 0 R"
        " /CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >>"
        f" /DW 1000 /W [{widths}] >>",
        _stream(to_unicode),
        "<< /Type /FontDescriptor /FontName /Helvetica /Flags 32 /FontBBox [-166 -225 1000 931]"
        " /ItalicAngle 0 /Ascent 718 /Descent -207 /CapHeight 718 /StemV 88 >>",
    )


def _stream(content: str) -> str:
    return f"<< /Length {len(content.encode())} >>\nstream\n{content}\nendstream"


def _pdf(*objects: str) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode())
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write("".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode())
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    out.write(f"trailer\n{trailer}".encode())
    return out.getvalue()


@contextmanager
def first_page(data: bytes) -> Iterator[pypdfium2.PdfPage]:
    document = pypdfium2.PdfDocument(data)
    try:
        page = document[0]
        yield page
        page.close()
    finally:
        document.close()


def test_words_pypdf_glues_keep_their_spaces() -> None:
    data = typeset_pdf(
        [
            ["The", "Debian", "Free", "Software", "Guidelines"],
            ["say", "which", "licences", "count."],
        ]
    )
    # The case is real: pypdf reads this page as one run per line.
    assert PdfReader(io.BytesIO(data)).pages[0].extract_text().split("\n")[0] == (
        "TheDebianFreeSoftwareGuidelines"
    )
    with first_page(data) as page:
        assert page_text(page) == ("The Debian Free Software Guidelines\nsay which licences count.")


def test_chunks_of_an_ingested_pdf_keep_the_spaces(tmp_path: Path) -> None:
    sentence = ["The", "Debian", "Free", "Software", "Guidelines", "say", "which", "licences"]
    pdf = tmp_path / "policy.pdf"
    pdf.write_bytes(typeset_pdf([sentence] * 40))
    document = parse(pdf, pdf.read_bytes(), str(pdf), 1_000_000)
    chunker = Chunker(ChunkingSettings(chunk_tokens=50, overlap_tokens=0), lambda t: len(t.split()))
    chunks = chunker.split(document)
    assert len(chunks) > 3
    for chunk in chunks:
        assert set(chunk.text.split()) <= set(sentence), chunk.text
    assert chunks[0].text.startswith("The Debian Free Software Guidelines say which licences\n")


def test_hyphenated_line_ends_rejoin_and_ligatures_become_letters() -> None:
    lines = [["The", "docu-"], ["ment", "says", "US-"], ["ASCII", "is", "a", "well-"], ["known"]]
    data = typeset_pdf([*lines, ["and", "well-known", "ﬁx."]])
    # PDFium joins a line that ends in a hyphen to the next one and marks where the hyphen was:
    # a hyphen the page spells elsewhere stays, else one between lowercase letters goes and one
    # beside a capital stays.
    with first_page(data) as page:
        assert page_text(page) == "The document says US-ASCII is a well-known\nand well-known fix."


@pytest.mark.parametrize("gap_em", [0.0, 0.5])
def test_chinese_gains_no_spaces_between_characters(tmp_path: Path, gap_em: float) -> None:
    """Characters drawn one by one, as justified or letter-spaced Chinese is: PDFium reads a gap
    of 0.3 em or more as a space."""
    line = "本地运行的问答工具把文档切成小段"
    pdf = FPDF()
    pdf.add_page()
    pdf.add_font("cjk", fname=cjk_font())
    pdf.set_font("cjk", size=12)
    em = 12 * 25.4 / 72
    for n, char in enumerate(line):
        pdf.text(20 + n * em * (1 + gap_em), 30, char)
    pdf.text(20, 45, "项目")
    pdf.text(60, 45, "金额")  # a table row: its cells stay apart
    with first_page(bytes(pdf.output())) as page:
        assert page_text(page) == f"{line}\n项目 金额"
