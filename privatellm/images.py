"""Images: a photo, scan or screenshot in, its text by OCR out; each frame of a TIFF is a page.

Pillow opens every format here, and its decompression-bomb limit stays on: an image of more
than Image.MAX_IMAGE_PIXELS * 2 pixels (~179 million) is refused before it is decoded.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from privatellm import ocr
from privatellm.errors import CorruptDocumentError, EmptyDocumentError, LoaderError
from privatellm.types import DEFAULT_READING, Page, Reading

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
MIN_SIDE = 8  # pixels: smaller images cannot hold a readable line


def load_image(path: Path, data: bytes, reading: Reading = DEFAULT_READING) -> list[Page]:
    """Returns one page per frame of an image, read by OCR; LoaderError if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns past half its limit; past the limit itself it raises, below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            frames = getattr(image, "n_frames", 1)
    except Image.DecompressionBombError as e:
        raise LoaderError(
            f"{path.name}: too many pixels to decode safely (a decompression bomb?): {e}"[:300]
        ) from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise CorruptDocumentError(f"{path.name}: not a readable image ({e})"[:300]) from e
    if frames > reading.ocr_max_pages:
        raise LoaderError(
            f"{path.name}: {frames:,} pages is over the limit of {reading.ocr_max_pages:,} "
            "(setting ingest.ocr_max_pages)"
        )
    pages = [_frame(path, image, index, reading) for index in range(frames)]
    if not any(page.text for page in pages):
        notes = {page.note for page in pages if page.note.startswith("skipped")}
        raise EmptyDocumentError(f"{path.name}: {next(iter(notes), 'OCR found no text')}")
    return pages


def _frame(path: Path, image: object, index: int, reading: Reading) -> Page:
    from PIL import Image

    assert isinstance(image, Image.Image)
    number = index + 1
    try:
        image.seek(index)
        frame = image.convert("RGB")
    except (OSError, ValueError, EOFError) as e:
        return Page(text="", page=number, note=f"skipped: unreadable ({e})"[:200])
    if min(frame.size) < MIN_SIDE:
        return Page(text="", page=number, ocr=True, note="OCR found no text")
    try:
        lines = ocr.recognise(frame, reading.ocr_page_timeout_s, reading.ocr_threads)
    except ocr.OcrError as e:
        return Page(text="", page=number, note=f"skipped: {e}")
    text, boxes = ocr.page_text(lines)
    return Page(
        text=text, page=number, ocr=True, boxes=boxes, note="" if text else "OCR found no text"
    )
