"""PDF: a file's bytes in, one Page per physical page out, read the best way each page allows.

A page's text layer is read with PDFium (`pdftext`); a page without one, or with too little for
its size (a scan with a one-line stamp), is rendered and OCR'd (`ocr`); tables found on a page
are added as rows that keep their column headers (`tables`). Page numbers are always the
physical page numbers, whichever way a page was read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from privatellm import ocr
from privatellm.errors import CorruptDocumentError, EncryptedDocumentError
from privatellm.pdftext import page_text
from privatellm.types import DEFAULT_READING, Page, Reading

# A page is scanned when images cover at least this share of it and its text layer holds fewer
# characters than a page of print (a stamp, a page number, a scanner's header line).
SCANNED_COVER = 0.5
THIN_TEXT = 200  # non-space characters
EMPTY_TEXT = 16  # fewer than this and the page is OCR'd in mode auto, images or not
OCR_DPI = 200  # the recogniser downsizes to ocr.MAX_SIDE anyway: A4 at 200 dpi is 2339 px


def load_pdf(path: Path, data: bytes, reading: Reading = DEFAULT_READING) -> list[Page]:
    """Returns the pages of a PDF; LoaderError if it cannot be read at all."""
    with _opened(path, data) as document:
        pages = [_page(document, index, reading) for index in range(len(document))]
    if reading.tables:
        pages = _with_tables(data, pages)
    return pages


@contextmanager
def _opened(path: Path, data: bytes) -> Iterator[Any]:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        if e.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            raise EncryptedDocumentError(f"{path.name}: PDF is password-protected") from e
        raise CorruptDocumentError(f"{path.name}: not a readable PDF ({e})") from e
    try:
        yield document
    finally:
        document.close()


def _page(document: Any, index: int, reading: Reading) -> Page:
    number = index + 1
    try:
        page = document[index]
    except Exception:  # one damaged page should not cost the whole document
        return Page(text="", page=number)
    text = ""
    try:
        text = _text_layer(page)
        if not _needs_ocr(page, text, reading):
            return Page(text=text, page=number)
        # Drawn no larger than the recogniser reads it: a poster-sized page at 200 dpi would
        # take gigabytes.
        scale = min(OCR_DPI / 72, ocr.MAX_SIDE / max(*page.get_size(), 1.0))
        image = page.render(scale=scale).to_pil()
    except Exception as e:  # pdfium cannot draw this page: what text it has is kept
        return Page(text=text, page=number, note=f"skipped: cannot draw it ({e})"[:200])
    finally:
        page.close()
    try:
        recognised, boxes = ocr.page_text(
            ocr.recognise(image, reading.ocr_page_timeout_s, reading.ocr_threads)
        )
    except ocr.OcrError as e:  # the text layer is what there is
        return Page(text=text, page=number, note=f"skipped: {e}")
    if len(_visible(recognised)) < len(_visible(text)):
        return Page(text=text, page=number)  # OCR found less than the text layer already had
    note = "" if recognised else "OCR found no text"
    return Page(text=recognised, page=number, ocr=True, boxes=boxes, note=note)


def _text_layer(page: Any) -> str:
    try:
        return page_text(page)
    except Exception:  # pdfium cannot read this page's text: treat it as having none
        return ""


def _visible(text: str) -> str:
    return "".join(text.split())


def _needs_ocr(page: Any, text: str, reading: Reading) -> bool:
    if reading.ocr == "off":
        return False
    if reading.ocr == "always":
        return True
    chars = len(_visible(text))
    if chars < EMPTY_TEXT:
        return _draws_something(page)  # a blank page has nothing to read
    return chars < THIN_TEXT and _image_cover(page) >= SCANNED_COVER


def _draws_something(page: Any) -> bool:
    return any(True for _ in page.get_objects(max_depth=1))


def _image_cover(page: Any) -> float:
    """Returns the share of the page covered by images (overlaps counted twice, capped at 1)."""
    import pypdfium2.raw as pdfium_c

    width, height = page.get_size()
    if width <= 0 or height <= 0:
        return 0.0
    covered = 0.0
    for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2):
        left, bottom, right, top = image.get_bounds()
        covered += max(0.0, min(right, width) - max(left, 0.0)) * max(
            0.0, min(top, height) - max(bottom, 0.0)
        )
    return min(1.0, covered / float(width * height))


def _with_tables(data: bytes, pages: list[Page]) -> list[Page]:
    """Returns pages with the rows of their tables added after their text (offsets into the text
    stay valid: rows only ever follow it)."""
    from privatellm import tables

    rows = tables.table_rows(data, [page.text for page in pages])
    return [
        Page(
            text=f"{page.text}\n\n" + "\n".join(rows[i]) if rows.get(i) else page.text,
            page=page.page,
            ocr=page.ocr,
            boxes=page.boxes,
            note=page.note,
        )
        for i, page in enumerate(pages)
    ]
