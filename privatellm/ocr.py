"""OCR: a page image in, its recognised lines with their boxes out.

RapidOCR runs PaddleOCR's PP-OCR detection and recognition models on ONNX Runtime. Its wheel
ships the models (PP-OCRv6 small: Chinese and English in one recogniser), so nothing is
downloaded. Measured on A4 pages at 150 dpi against PP-OCRv4 mobile (rapidocr-onnxruntime 1.4):
more accurate (English 0.926 vs 0.923, Chinese 0.966 vs 0.956 similarity to the true text) and
faster (2.6 vs 3.3 s a page on 2 busy cores); see docs/BENCHMARKS.md for the pages/s.

OCR runs where files are parsed: in the parser processes beside the embedder, one engine per
process, built on first use.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privatellm.errors import LoaderError
from privatellm.types import Box

if TYPE_CHECKING:
    from PIL.Image import Image

# The longer side of a page image given to the recogniser: about 170 dpi on A4, enough for 8 pt
# print; larger images cost detection time without reading more.
MAX_SIDE = 2000
DETECT_SIDE = 1280  # the longer side of the copy lines are found on (see _engine)
MIN_SCORE = 0.5  # lines recognised with less confidence are mostly noise (stains, pictures)
# A lone character needs more: the edge of a filled box reads as 一 with confidence 0.54.
MIN_SCORE_ONE_CHAR = 0.8
PARAGRAPH_GAP = 0.8  # white space between two lines, in line heights, that parts paragraphs


class OcrError(LoaderError):
    """The recogniser failed on a page."""


class OcrTimeoutError(OcrError):
    """A page took longer than its time limit."""


@dataclass(frozen=True)
class Line:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the image size


class _Engine:
    instance: Any = None
    threads = 0


def _engine(threads: int) -> Any:
    if _Engine.instance is None or _Engine.threads != threads:
        from rapidocr import RapidOCR

        # RapidOCR logs every call at INFO through its own handler; we report per file instead.
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        _Engine.instance = RapidOCR(
            params={
                "Global.log_level": "error",
                # Scanned pages are upright; the orientation classifier costs 5% and misreads
                # short lines as upside down.
                "Global.use_cls": False,
                "Global.max_side_len": MAX_SIDE,
                # Lines are found on a smaller copy (half the time of the full page, the same
                # lines on A4 print); each line is then read from the full-size image.
                "Det.limit_type": "max",
                "Det.limit_side_len": DETECT_SIDE,
                "Rec.rec_batch_num": 16,
                # Several parser processes share the cores instead of each taking them all.
                "EngineConfig.onnxruntime.intra_op_num_threads": threads or -1,
                # Lines differ in width: without ONNX Runtime's arena every one allocates anew.
                "EngineConfig.onnxruntime.enable_cpu_mem_arena": True,
            }
        )
        _Engine.threads = threads
    return _Engine.instance


def recognise(image: Image, timeout_s: float, threads: int = 0) -> list[Line]:
    """Returns the lines of text in image, in reading order (top to bottom, then left to right);
    OcrTimeoutError if that takes longer than timeout_s. threads: CPU threads (0: all cores)."""
    import numpy as np

    width, height = image.size
    scale = min(1.0, MAX_SIDE / max(width, height))
    if scale < 1.0:
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))))
    pixels = np.asarray(image.convert("RGB"))
    with _deadline(timeout_s):
        try:
            result = _engine(threads)(pixels)
        except OcrTimeoutError:
            raise
        except Exception as e:  # RapidOCR wraps cv2/ONNX failures in its own exceptions
            raise OcrError(f"OCR failed ({type(e).__name__}: {e})"[:200]) from e
    if result.boxes is None or result.txts is None:
        return []
    size = (pixels.shape[1], pixels.shape[0])
    lines = [
        Line(str(text).strip(), _box(corners, size))
        for corners, text, score in zip(result.boxes, result.txts, result.scores, strict=True)
        if _confident(str(text).strip(), float(score))
    ]
    return _reading_order(lines)


def _confident(text: str, score: float) -> bool:
    if not text:
        return False
    return score >= (MIN_SCORE_ONE_CHAR if len(text) == 1 else MIN_SCORE)


def _box(corners: Any, size: tuple[int, int]) -> tuple[float, float, float, float]:
    xs = [float(point[0]) for point in corners]
    ys = [float(point[1]) for point in corners]
    width, height = size
    return (
        max(0.0, min(xs) / width),
        max(0.0, min(ys) / height),
        min(1.0, max(xs) / width),
        min(1.0, max(ys) / height),
    )


def _reading_order(lines: list[Line]) -> list[Line]:
    """Sorts lines top to bottom; lines whose vertical middles lie within half a line height of
    each other are one row, read left to right."""
    rows: list[list[Line]] = []
    for line in sorted(lines, key=lambda item: (item.box[1] + item.box[3]) / 2):
        middle = (line.box[1] + line.box[3]) / 2
        if rows:
            last = rows[-1][-1]
            if abs(middle - (last.box[1] + last.box[3]) / 2) < (last.box[3] - last.box[1]) / 2:
                rows[-1].append(line)
                continue
        rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda item: item.box[0])]


def page_text(lines: list[Line]) -> tuple[str, tuple[Box, ...]]:
    """Returns the page text of recognised lines (one line each, a blank line where a gap of
    most of a line's height parts two paragraphs) and where each line sits."""
    parts: list[str] = []
    boxes: list[Box] = []
    offset = 0
    for n, line in enumerate(lines):
        if n:
            separator = "\n\n" if _paragraph_break(lines[n - 1], line) else "\n"
            parts.append(separator)
            offset += len(separator)
        boxes.append((offset, offset + len(line.text), *line.box))
        parts.append(line.text)
        offset += len(line.text)
    return "".join(parts), tuple(boxes)


def _paragraph_break(above: Line, below: Line) -> bool:
    height = above.box[3] - above.box[1]
    return below.box[1] - above.box[3] > PARAGRAPH_GAP * height


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raises OcrTimeoutError in the block after seconds, where a timer signal can do it.

    ONNX Runtime cannot be interrupted mid-run; the signal lands between its runs (detection,
    then each batch of lines), so a page over its limit stops within one run of it. Off the main
    thread (the API's workers) no signal can be used and the page runs to its end.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    message = f"OCR took over {seconds:g} s (setting ingest.ocr_page_timeout_s)"
    expired = False

    def expire(signum: int, frame: Any) -> None:
        nonlocal expired
        expired = True
        raise OcrTimeoutError(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
        if expired:  # the recogniser caught the signal's exception and went on
            raise OcrTimeoutError(message)
    except OcrError as e:
        if expired and not isinstance(e, OcrTimeoutError):  # ... or wrapped it in its own
            raise OcrTimeoutError(message) from e
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
