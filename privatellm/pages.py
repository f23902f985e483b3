"""Pages: a PDF page or an image rendered to PNG, with a cited passage marked on it.

Chunk offsets point into the page text stored at ingest (`pdf.load_pdf`, with table rows after
the text); pdfium's character index for drawing can differ from that text (whitespace,
ligatures, line breaks). So the passage is found by its text: both sides are compared without
whitespace and case, exactly first, then by the longest runs they share.

An OCR'd page (a scan, a photo) has no characters to find: its chunks carry the boxes of the
recognised lines, and the lines the passage overlaps are marked.
"""

from __future__ import annotations

import ctypes
import difflib
import io
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privatellm.errors import ConfigError, CorruptDocumentError, LoaderError, NotFoundError
from privatellm.images import SUFFIXES as IMAGE_SUFFIXES
from privatellm.loaders import file_hash
from privatellm.pdf import load_pdf
from privatellm.types import Box, DocumentRecord, Reading, overlapping

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

MAX_WIDTH = 1600  # pixels: wide enough to read a page's small print, small enough to send
MAX_SCALE = 2.0  # pixels per PDF point: an A4 page becomes 1190 pixels wide
HIGHLIGHT = (255, 213, 0, 110)  # translucent yellow: the text under it stays readable
MIN_RUN = 4  # shared runs shorter than this are chance matches, not the passage
MIN_COVERED = 0.5  # the runs found must cover this share of the passage to be shown

# The stored page text of a PDF, as ingest wrote it before any table rows: enough to find a passage.
_TEXT_ONLY = Reading(ocr="off", tables=False)

# pdfium is not thread-safe, and the API and the page render from worker threads.
_PDFIUM = threading.Lock()

Span = tuple[int, int]
# Hyphens are skipped too: one extractor keeps "docu-" + "ment" where the other joins them, and
# pdfium marks a line-end hyphen with a control character (skipped as category C).
_SKIPPED = "-\u00ad\u2010\u2011\ufffd"


def has_page_images(source: str) -> bool:
    """Returns whether a document's pages can be shown as images (PDFs and images)."""
    suffix = Path(source).suffix.lower()
    return suffix == ".pdf" or suffix in IMAGE_SUFFIXES


def document_page(
    record: DocumentRecord,
    page: int,
    highlight: Span | None = None,
    boxes: Sequence[Box] = (),
) -> bytes:
    """Returns a PNG of page (from 1) of an ingested PDF or image, highlight (character offsets
    into its stored page text) marked on it; boxes: where the page's OCR'd lines sit, when it was
    OCR'd. NotFoundError if there is no such page image."""
    path = Path(record.source)
    suffix = path.suffix.lower()
    if not has_page_images(record.source):
        raise NotFoundError(f"{path.name} is not a PDF or an image: it has no page images")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise NotFoundError(f"{path.name}: the file is no longer readable ({e.strerror})") from e
    digest = file_hash(data)
    if digest != record.content_hash:
        highlight = None  # changed since ingest: the stored offsets point at other text now
    if boxes or suffix != ".pdf":
        marked = overlapping(boxes, *highlight) if highlight else ()
        key = (digest, page, marked)
        png: bytes | None = _RENDERED.get(key)
        if png is None:
            image = _page_image(data, page) if suffix == ".pdf" else _frame_image(data, page)
            png = _RENDERED.put(key, _png(image, [_scaled(box, image.size) for box in marked]))
        return png
    return _rendered(data, digest, page, highlight, None)


def _scaled(box: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    width, height = size
    return (
        round(box[2] * width),
        round(box[3] * height),
        round(box[4] * width),
        round(box[5] * height),
    )


def _frame_image(data: bytes, page: int) -> PILImage:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        frames = getattr(image, "n_frames", 1)
        if not 1 <= page <= frames:
            raise NotFoundError(f"no page {page}: the image has {frames} page(s)")
        image.seek(page - 1)
        frame = image.convert("RGBA")
    except (OSError, ValueError, EOFError) as e:
        raise CorruptDocumentError(f"not a readable image ({e})") from e
    scale = min(1.0, MAX_WIDTH / max(frame.width, 1))
    if scale < 1.0:
        frame = frame.resize((round(frame.width * scale), max(1, round(frame.height * scale))))
    return frame


def _page_image(data: bytes, page_number: int) -> PILImage:
    with _pdf_page(data, page_number) as page:
        image: PILImage = _image(page)
        return image


@contextmanager
def _pdf_page(data: bytes, page_number: int) -> Iterator[Any]:
    """Yields page page_number (from 1) of a PDF, holding pdfium's lock meanwhile."""
    import pypdfium2 as pdfium

    with _PDFIUM:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as e:
            raise CorruptDocumentError(f"not a readable PDF ({e})") from e
        try:
            if not 1 <= page_number <= len(pdf):
                raise NotFoundError(f"no page {page_number}: the PDF has {len(pdf)} page(s)")
            yield pdf[page_number - 1]
        finally:
            pdf.close()


def render_page(
    pdf: Path | bytes, page_number: int, highlight: Span | None = None, text: str | None = None
) -> bytes:
    """Returns a PNG of page page_number (from 1) of a PDF, the characters highlight[0] to
    highlight[1] of text (default: the page text privatellm extracts) marked on it."""
    data = pdf if isinstance(pdf, bytes) else pdf.read_bytes()
    return _rendered(data, file_hash(data), page_number, highlight, text)


def _rendered(
    data: bytes, digest: str, page_number: int, highlight: Span | None, text: str | None
) -> bytes:
    """Returns render_page's PNG for a PDF whose hash the caller already knows."""
    if text is None and highlight is not None:
        text = _page_text(data, digest, page_number)
    passage = _passage(text or "", highlight)
    key = (digest, page_number, passage)
    png: bytes | None = _RENDERED.get(key)
    if png is None:
        png = _RENDERED.put(key, _render(data, page_number, passage))
    return png


class _Recent:
    """The `size` most recently stored items, safe to share between threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            return self._items.get(key)

    def put(self, key: Any, value: Any) -> Any:
        """Returns value, stored under key."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


# Keyed by content hash, not by the bytes, so that no PDF is held in memory: the page shows the
# same citations again on every rerun, and each render costs ~0.1 s.
_RENDERED = _Recent(32)
_TEXTS = _Recent(4)


def _page_text(data: bytes, digest: str, page_number: int) -> str:
    pages = _TEXTS.get(digest)
    if pages is None:
        try:
            pages = [p.text for p in load_pdf(Path("document.pdf"), data, _TEXT_ONLY)]
        except LoaderError:
            pages = []  # PDFium cannot read it, so no offsets were stored into it either
        _TEXTS.put(digest, pages)
    return str(pages[page_number - 1]) if 1 <= page_number <= len(pages) else ""


def _passage(text: str, highlight: Span | None) -> str:
    """Returns the highlighted characters of text ("" for none)."""
    if highlight is None:
        return ""
    start, end = highlight
    if start < 0 or end < start:
        raise ConfigError(f"highlight {start}-{end}: give START-END with 0 <= START <= END")
    return text[start:end]


def _render(data: bytes, page_number: int, passage: str) -> bytes:
    with _pdf_page(data, page_number) as page:
        return _draw(page, passage)


def _image(page: Any) -> PILImage:
    width, _ = page.get_size()
    scale = min(MAX_SCALE, MAX_WIDTH / max(width, 1.0))
    image: PILImage = page.render(scale=scale).to_pil().convert("RGBA")
    return image


def _draw(page: Any, passage: str) -> bytes:
    image = _image(page)
    return _png(image, list(_boxes(page, passage, image.size)) if passage.strip() else [])


def _png(image: PILImage, boxes: list[tuple[int, int, int, int]]) -> bytes:
    """Returns image as PNG with boxes (pixel rectangles) marked on it."""
    if boxes:
        from PIL import Image, ImageDraw

        layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        for box in boxes:
            draw.rectangle(box, fill=HIGHLIGHT)
        image = Image.alpha_composite(image, layer)
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", optimize=True)
    return out.getvalue()


def _boxes(page: Any, passage: str, size: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    """Yields the pixel rectangles (left, top, right, bottom) covering passage on the page."""
    textpage = page.get_textpage()
    try:
        for first, last in locate(_chars(textpage), passage):
            for i in range(textpage.count_rects(first, last - first + 1)):
                left, bottom, right, top = textpage.get_rect(i)
                x0, y0 = _to_device(page, size, left, top)
                x1, y1 = _to_device(page, size, right, bottom)
                yield min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
    finally:
        textpage.close()


def _chars(textpage: Any) -> str:
    """Returns pdfium's text of the page, one character per character index."""
    import pypdfium2.raw as raw

    return "".join(
        chr(raw.FPDFText_GetUnicode(textpage.raw, i) or 0xFFFD)
        for i in range(textpage.count_chars())
    )


def _to_device(page: Any, size: tuple[int, int], x: float, y: float) -> tuple[int, int]:
    # pdfium's own mapping accounts for the crop box and the page's /Rotate.
    import pypdfium2.raw as raw

    dx, dy = ctypes.c_int(), ctypes.c_int()
    raw.FPDF_PageToDevice(page.raw, 0, 0, size[0], size[1], 0, x, y, dx, dy)
    return dx.value, dy.value


def locate(page_text: str, passage: str) -> list[Span]:
    """Returns the inclusive index ranges of page_text that show passage: one range when it is
    there verbatim up to whitespace and case, else the longest runs they share in order, or
    none when those cover too little of it."""
    page_key, where = _comparable(page_text)
    passage_key, _ = _comparable(passage)
    if not passage_key:
        return []
    found = page_key.find(passage_key)
    if found >= 0:
        return [(where[found], where[found + len(passage_key) - 1])]
    matcher = difflib.SequenceMatcher(None, page_key, passage_key, autojunk=False)
    runs = [b for b in matcher.get_matching_blocks() if b.size >= MIN_RUN]
    if sum(b.size for b in runs) < MIN_COVERED * len(passage_key):
        return []
    return [(where[b.a], where[b.a + b.size - 1]) for b in runs]


def _comparable(text: str) -> tuple[str, list[int]]:
    """Returns text folded for comparison (no whitespace, NFKC, casefolded) and, for each of its
    characters, the index in text it came from."""
    chars: list[str] = []
    where: list[int] = []
    for i, c in enumerate(text):
        for folded in unicodedata.normalize("NFKC", c).casefold():
            if folded.isspace() or folded in _SKIPPED or unicodedata.category(folded)[0] == "C":
                continue
            chars.append(folded)
            where.append(i)
    return "".join(chars), where
