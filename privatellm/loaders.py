"""Loaders: a file path in, a Document (its pages of text) out. One function per format.

Every expected failure is a LoaderError subclass with a one-line reason; ingest reports it for
that file and goes on with the others.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from privatellm.errors import (
    CorruptDocumentError,
    EmptyDocumentError,
    LoaderError,
    UnsupportedFormatError,
)
from privatellm.images import SUFFIXES, load_image
from privatellm.mail import load_eml
from privatellm.office import ensure_ooxml, load_pptx, load_xlsx
from privatellm.pdf import load_pdf
from privatellm.types import DEFAULT_READING, Document, Page, Reading

# Byte-order marks decide the encoding outright; checked longest first.
_BOMS = [
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
]
# What Chinese and other users' files are really written in, most likely first.
_LEGACY_ENCODINGS = ["gb18030", "big5", "shift_jis", "euc_kr", "cp1252", "latin_1"]


def _looks_binary(text: str) -> bool:
    sample = text[:65536]
    if not sample:
        return False
    control = sum(1 for c in sample if ord(c) < 32 and c not in "\t\n\r\f\v\x1b")
    return control / len(sample) > 0.01


def _utf16_without_bom(data: bytes) -> str | None:
    # UTF-16 text without a BOM (Windows Notepad exports) has a NUL in every other byte.
    head = data[:4096]
    even, odd = head[0::2].count(0), head[1::2].count(0)
    for encoding, nuls in (("utf-16-le", odd), ("utf-16-be", even)):
        if nuls > len(head) // 4:
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                return None
    return None


def decode_text(data: bytes, name: str = "file") -> str:
    """Returns data decoded as text (UTF-8/16/32, GB18030/GBK, Big5, ...) or raises LoaderError."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    if b"\x00" in data[:4096]:
        text = _utf16_without_bom(data)
        if text is None or _looks_binary(text):
            raise CorruptDocumentError(f"{name}: binary content, not text")
        return text
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = _decode_legacy(data, name)
    if _looks_binary(text):
        raise CorruptDocumentError(f"{name}: binary content, not text")
    return text


def _decode_legacy(data: bytes, name: str) -> str:
    from charset_normalizer import from_bytes

    # charset-normalizer alone often calls short GBK text Big5 or cp949; restricting its choice
    # to the encodings people really use for such files gets Chinese right.
    best = from_bytes(data[:1_000_000], cp_isolation=_LEGACY_ENCODINGS).best()
    if best is None:
        raise CorruptDocumentError(f"{name}: binary content or unknown text encoding")
    encoding = best.encoding
    if encoding in ("gb2312", "gbk"):
        encoding = "gb18030"  # its superset: one rare character should not fail the file
    return data.decode(encoding, errors="replace")


def load_text(path: Path, data: bytes) -> list[Page]:
    return [Page(text=decode_text(data, path.name))]


def _html_to_text(markup: bytes | str) -> str:
    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():
        # XHTML (.xhtml files, EPUB chapters) opens with an XML declaration, so bs4 advises an XML
        # parser; but lxml's XML parser drops the HTML entities XHTML uses (`a&nbsp;b` -> "ab"),
        # while its HTML parser reads XHTML as the browser does.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(markup, "lxml")
    # The title often tells apart pages built on one template, so it stays; the rest of <head> goes.
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(["script", "style", "noscript", "template", "svg", "head"]):
        tag.decompose()
    lines = (line.strip() for line in [title, *soup.get_text("\n").splitlines()])
    return "\n".join(line for line in lines if line)


def load_html(path: Path, data: bytes) -> list[Page]:
    return [Page(text=_html_to_text(data))]


def load_docx(path: Path, data: bytes) -> list[Page]:
    import docx

    ensure_ooxml(path, data)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as e:  # python-docx raises bare zipfile/KeyError/ValueError errors
        raise CorruptDocumentError(f"{path.name}: not a readable .docx ({_short(e)})") from e
    parts = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text.strip() for cell in row.cells))
    return [Page(text="\n".join(parts))]


def load_csv(path: Path, data: bytes) -> list[Page]:
    text = decode_text(data, path.name)
    try:
        dialect = csv.Sniffer().sniff(text[:8192])
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        return [Page(text="")]
    header, body = rows[0], rows[1:]
    # "column: value" lines keep each value next to its meaning for retrieval.
    lines = [
        "; ".join(f"{h}: {v}" for h, v in zip(header, row, strict=False) if v.strip())
        for row in body
    ]
    return [Page(text="\n".join([", ".join(header), *lines]))]


def _flatten_json(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [line for k, v in value.items() for line in _flatten_json(v, f"{prefix}{k}.")]
    if isinstance(value, list):
        return [line for i, v in enumerate(value) for line in _flatten_json(v, f"{prefix}{i}.")]
    return [f"{prefix.rstrip('.')}: {value}"]


def load_json(path: Path, data: bytes) -> list[Page]:
    text = decode_text(data, path.name)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CorruptDocumentError(f"{path.name}: invalid JSON ({e.msg}, line {e.lineno})") from e
    return [Page(text="\n".join(_flatten_json(value)))]


def load_epub(path: Path, data: bytes) -> list[Page]:
    import ebooklib
    from ebooklib import epub

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ebooklib warns about its own future defaults
            book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
    except Exception as e:  # ebooklib raises bare zipfile/lxml/KeyError errors
        raise CorruptDocumentError(f"{path.name}: not a readable EPUB ({_short(e)})") from e
    chapters = [
        _html_to_text(item.get_content()) for item in book.get_items_of_type(ebooklib.ITEM_DOCUMENT)
    ]
    return [Page(text=text, page=n) for n, text in enumerate(chapters, start=1) if text]


Loader = Callable[[Path, bytes], list[Page]]
# Formats read page by page, by OCR where a page has no text: they take the reading settings.
ReadingLoader = Callable[[Path, bytes, Reading], list[Page]]

READERS: dict[str, ReadingLoader] = {".pdf": load_pdf, **dict.fromkeys(SUFFIXES, load_image)}

LOADERS: dict[str, Loader] = {
    ".txt": load_text,
    ".text": load_text,
    ".md": load_text,
    ".markdown": load_text,
    ".rst": load_text,
    ".html": load_html,
    ".htm": load_html,
    ".xhtml": load_html,
    ".docx": load_docx,
    ".csv": load_csv,
    ".json": load_json,
    ".epub": load_epub,
    ".pptx": load_pptx,
    ".xlsx": load_xlsx,
    # mail sits below this module (imports run one way): it is handed the text rules here
    ".eml": partial(load_eml, decode=decode_text, html_to_text=_html_to_text),
}


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def suffixes() -> list[str]:
    """Returns the file extensions privatellm reads, without dots."""
    return [suffix.lstrip(".") for suffix in [*READERS, *LOADERS]]


def supported(path: Path) -> bool:
    """Returns whether a loader exists for the file's extension."""
    suffix = path.suffix.lower()
    return suffix in READERS or suffix in LOADERS


def file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_file(path: Path, max_bytes: int) -> bytes:
    """Returns the bytes of a file we can load, or raises a LoaderError saying why not."""
    if not supported(path):
        raise UnsupportedFormatError(
            f"{path.name}: unsupported file type {path.suffix or '(none)'}"
        )
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise LoaderError(
                f"{path.name}: {size / 2**20:.0f} MB is over the {max_bytes / 2**20:.0f} MB limit "
                "(setting ingest.max_file_mb)"
            )
        data = path.read_bytes()
    except OSError as e:
        raise LoaderError(f"{path.name}: cannot read ({e.strerror or e})") from e
    if not data:
        raise EmptyDocumentError(f"{path.name}: empty file (0 bytes)")
    return data


def parse(
    path: Path, data: bytes, source: str, max_line_chars: int, reading: Reading = DEFAULT_READING
) -> Document:
    """Returns the document in a file's bytes, or raises a LoaderError saying why not."""
    suffix = path.suffix.lower()
    if suffix in READERS:
        pages = READERS[suffix](path, data, reading)
    else:
        pages = LOADERS[suffix](path, data)
    _check_lines(path, pages, max_line_chars)
    document = Document(
        source=source, content_hash=file_hash(data), pages=pages, warnings=_page_notes(pages)
    )
    _check_has_text(path, document)
    return document


def _page_notes(pages: list[Page]) -> list[str]:
    """Returns one warning per kind of page trouble, naming its pages."""
    by_note: dict[str, list[str]] = {}
    for page in pages:
        if page.note:
            by_note.setdefault(page.note, []).append(str(page.page))
    return [f"{_pages_named(numbers)}: {note}" for note, numbers in by_note.items()]


def _pages_named(numbers: list[str]) -> str:
    shown = ", ".join(numbers[:5]) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
    return f"page{'s' if len(numbers) > 1 else ''} {shown}"


def _check_lines(path: Path, pages: list[Page], max_line_chars: int) -> None:
    for page in pages:
        if len(page.text) <= max_line_chars:
            continue
        longest = max(len(line) for line in page.text.splitlines())
        if longest > max_line_chars:
            raise LoaderError(
                f"{path.name}: a line of {longest:,} characters (limit {max_line_chars:,}, setting "
                "ingest.max_line_chars): a data dump, not a document"
            )


def _check_has_text(path: Path, document: Document) -> None:
    if not any(page.text.strip() for page in document.pages):
        if any(page.ocr for page in document.pages) and path.suffix.lower() == ".pdf":
            raise EmptyDocumentError(
                f"{path.name}: no text found, not even by OCR ({len(document.pages)} page(s))"
            )
        raise EmptyDocumentError(f"{path.name}: no text to index")
    empty = [
        p.page for p in document.pages if p.page is not None and not p.text.strip() and not p.note
    ]
    if empty and path.suffix.lower() == ".pdf":
        document.warnings.append(f"{len(empty)} of {len(document.pages)} pages have no text")
