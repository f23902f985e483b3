"""Office Open XML loaders: PowerPoint slides and Excel sheets to pages, and the check that tells
a password-protected (or old binary) Office file from an OOXML one.

A row of a table or sheet is written as `header: value; header: value`, as .csv files are, so
each value stays next to what it means for retrieval.
"""

from __future__ import annotations

import datetime as dt
import io
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from privatellm.errors import CorruptDocumentError, EncryptedDocumentError
from privatellm.types import Page

# Office encrypts a .docx/.xlsx/.pptx by wrapping the zip in an OLE2 compound file whose
# "EncryptedPackage" stream holds it (MS-OFFCRYPTO); stream names are stored in UTF-16-LE.
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")


def ensure_ooxml(path: Path, data: bytes) -> None:
    """Raises EncryptedDocumentError for a password-protected Office file and
    CorruptDocumentError for an old binary one (.doc .xls .ppt renamed); returns otherwise."""
    if not data.startswith(_OLE2_MAGIC):
        return
    if _ENCRYPTED_PACKAGE in data:
        raise EncryptedDocumentError(
            f"{path.name}: password-protected (remove the password and ingest again)"
        )
    suffix = path.suffix.lower()
    raise CorruptDocumentError(
        f"{path.name}: an old binary Office file ({suffix[:-1]}), not {suffix} "
        f"(save it as {suffix} and ingest again)"
    )


def _unreadable(path: Path, error: BaseException) -> CorruptDocumentError:
    lines = str(error).strip().splitlines()
    reason = (lines[0] if lines else type(error).__name__)[:200]
    return CorruptDocumentError(f"{path.name}: not a readable {path.suffix.lower()} ({reason})")


def _row_lines(rows: Iterable[list[str]], column_name: Callable[[int], str]) -> Iterator[str]:
    """Yields the header (the first row with any text) joined by ", ", then each later row as
    `header: value; ...`, leaving out empty values and empty rows; column_name(i) names the
    0-based column i where the header leaves it unnamed."""
    header: list[str] | None = None
    for row in rows:
        if not any(row):
            continue
        if header is None:
            header = row
            yield ", ".join(value for value in header if value)
            continue
        yield _labelled(header, row, column_name)


def _labelled(header: list[str], row: list[str], column_name: Callable[[int], str]) -> str:
    """Returns row's non-empty values as `header: value; ...`."""
    return "; ".join(
        f"{header[i] if i < len(header) and header[i] else column_name(i)}: {value}"
        for i, value in enumerate(row)
        if value
    )


# -- PowerPoint ------------------------------------------------------------------------------------


def load_pptx(path: Path, data: bytes) -> list[Page]:
    """Returns one page per slide that holds text (page = slide number): its shapes' text in
    reading order, then its speaker notes."""
    from pptx import Presentation

    ensure_ooxml(path, data)
    try:
        presentation = Presentation(io.BytesIO(data))
        texts = [_slide_text(slide) for slide in presentation.slides]
    except Exception as e:  # python-pptx raises bare zipfile/KeyError/lxml errors
        raise _unreadable(path, e) from e
    return [Page(text=text, page=n) for n, text in enumerate(texts, start=1) if text]


def _slide_text(slide: Any) -> str:
    parts = list(_shapes_text(slide.shapes))
    notes = slide.notes_slide.notes_text_frame if slide.has_notes_slide else None
    if notes is not None and _text(notes):
        parts += ["Notes:", _text(notes)]
    return "\n".join(parts)


def _shapes_text(shapes: Iterable[Any]) -> Iterator[str]:
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    # Shapes are stored in z-order (the order they were drawn), not where they stand: top to
    # bottom, then left to right, is how a reader goes over a slide.
    for shape in sorted(shapes, key=lambda s: (s.top or 0, s.left or 0)):
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shapes_text(shape.shapes)
        elif shape.has_table:
            rows = [[_text(cell) for cell in row.cells] for row in shape.table.rows]
            yield from _row_lines(rows, lambda i: f"column {i + 1}")
        elif shape.has_text_frame and _text(shape.text_frame):
            yield _text(shape.text_frame)


def _text(frame: Any) -> str:
    # python-pptx writes a line break inside a paragraph (Shift+Enter) as a vertical tab.
    return str(frame.text).replace("\v", "\n").strip()


# -- Excel -----------------------------------------------------------------------------------------


def load_xlsx(path: Path, data: bytes) -> list[Page]:
    """Returns one page per sheet that holds values (page = sheet number): the sheet's name,
    then its rows under the first non-empty row as header."""
    import openpyxl

    ensure_ooxml(path, data)
    pages = []
    with warnings.catch_warnings():
        # openpyxl warns about every Excel feature it does not read (data validation,
        # conditional formatting extensions); none of them holds text we index.
        warnings.simplefilter("ignore")
        try:
            book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
            try:
                for number, name in enumerate(book.sheetnames, start=1):
                    text = _sheet_text(name, book[name])
                    if text:
                        pages.append(Page(text=text, page=number))
            finally:
                book.close()
        except Exception as e:  # openpyxl raises bare zipfile/KeyError/ValueError/lxml errors
            raise _unreadable(path, e) from e
    return pages


def _sheet_text(name: str, sheet: Any) -> str:
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet._read_only import ReadOnlyWorksheet

    if not isinstance(sheet, ReadOnlyWorksheet):  # a chart sheet: no cells
        return ""
    # The stored dimension can be wrong (or name XFD1048576 for one stray cell); without it
    # openpyxl yields each row only as wide as its last cell instead of padding every row.
    sheet.reset_dimensions()
    rows = ([_cell_text(cell) for cell in row] for row in sheet.iter_rows())
    lines = list(_row_lines(rows, lambda i: get_column_letter(i + 1)))
    return "\n".join([f"Sheet: {name}", *lines]) if lines else ""


def _cell_text(cell: Any) -> str:
    value = cell.value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and "%" in (cell.number_format or ""):
        return f"{value * 100:.15g}%"
    if isinstance(value, float):
        return f"{value:.15g}"  # 0.1 + 0.2 as Excel shows it, 0.3; 2100000.0 as 2100000
    if isinstance(value, dt.datetime):
        if value.time() == dt.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds" if value.second else "minutes")
    if isinstance(value, dt.time):
        return value.isoformat(timespec="seconds" if value.second else "minutes")
    return str(value).strip()
