"""OCR benchmark: scanned pages per second and how much of their text comes back, in one run.

    python benchmarks/ocr.py [--pages N] [--dev DIR]

Pages are made the way a scanner sees print: real text (the dev set's English SQuAD and Chinese
CMRC 2018 articles, read in place; the repository's sample documents without it) drawn at 11 pt
on A4 at 150 dpi, each saved as a one-page image PDF. Each page is read through privatellm's own
PDF loader, so rendering, detection and recognition all count. Printed per language: pages/s with
every core and with one thread (as each of two parser processes runs it), and the similarity of the
recognised text to the true text (difflib ratio, whitespace ignored).

A second table is the price of the scan check on pages that have a text layer: per page of the
dev set's PDFs, the time to read the text layer and the time to decide whether the page is a
scan to OCR, side by side.
"""

from __future__ import annotations

import argparse
import difflib
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEV_DOCS = REPO.parent / "shared" / "eval" / "dev" / "docs"
PAGE = (1240, 1754)  # A4 at 150 dpi
MARGIN = 110
SIZE = 23  # pixels: 11 pt at 150 dpi


def texts(dev: Path, language: str, count: int) -> list[str]:
    """Returns count page-sized texts in language ("en" or "zh")."""
    folder = dev / ("squad" if language == "en" else "cmrc2018")
    if folder.is_dir():
        files = sorted(folder.glob("*.txt"))[: count * 4]
        pool = [f.read_text(encoding="utf-8") for f in files]
    else:
        sample = "privatellm-guide.md" if language == "en" else "本地运行Llama笔记.txt"
        pool = [(REPO / "ingest" / sample).read_text(encoding="utf-8")]
    joined = "\n".join(pool)
    per_page = 2600 if language == "en" else 1100
    return [joined[i * per_page : (i + 1) * per_page] for i in range(count)]


def font() -> str:
    import subprocess

    listed = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True)
    files = sorted(line.split(":")[0] for line in listed.stdout.splitlines() if line.strip())
    if not files:
        sys.exit("needs a font with Chinese glyphs (make system-deps installs one)")
    return ([f for f in files if "Regular" in f] or files)[0]


def page_image(text: str, language: str) -> tuple[Any, str]:
    """Returns an A4 page image of text and the text it really shows."""
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(font(), SIZE)
    width = 95 if language == "en" else 46  # characters per line that fit the measure
    image = Image.new("RGB", PAGE, "white")
    draw = ImageDraw.Draw(image)
    shown: list[str] = []
    y = MARGIN
    for paragraph in text.splitlines():
        for line in textwrap.wrap(paragraph, width) or [""]:
            if y > PAGE[1] - MARGIN:
                return image, "\n".join(shown)
            draw.text((MARGIN, y), line, font=face, fill="black")
            shown.append(line)
            y += int(SIZE * 1.6)
    return image, "\n".join(shown)


def similarity(truth: str, found: str) -> float:
    a, b = "".join(truth.split()), "".join(found.split())
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def read_scans(pdfs: list[tuple[Path, str]], threads: int) -> tuple[float, float]:
    """Returns pages/s and the mean similarity of the text read from one-page scans."""
    from privatellm.pdf import load_pdf
    from privatellm.types import Reading

    reading = Reading(tables=False, ocr_threads=threads, ocr_page_timeout_s=0)
    load_pdf(pdfs[0][0], pdfs[0][0].read_bytes(), reading)  # builds the engine: not timed
    scores = []
    started = time.perf_counter()
    for path, truth in pdfs:
        (page,) = load_pdf(path, path.read_bytes(), reading)
        assert page.ocr
        scores.append(similarity(truth, page.text))
    return len(pdfs) / (time.perf_counter() - started), statistics.mean(scores)


def scan_check(dev: Path, files: int) -> list[tuple[str, int, float, float, int]]:
    """Returns, per set of dev-set PDFs: pages, ms/page reading the text layer, ms/page deciding
    whether the page is a scan, and how many pages are."""
    import pypdfium2 as pdfium

    from privatellm.pdf import _needs_ocr
    from privatellm.pdftext import page_text
    from privatellm.types import Reading

    rows = []
    for name in ("financebench", "aragog"):
        paths = sorted((dev / name).glob("*.pdf"))[:files]
        if not paths:
            continue
        pages, reading_s, checking_s, scans = 0, 0.0, 0.0, 0
        for path in paths:
            document = pdfium.PdfDocument(path.read_bytes())
            for page in document:
                started = time.perf_counter()
                text = page_text(page)
                read = time.perf_counter()
                scans += _needs_ocr(page, text, Reading())
                checking_s += time.perf_counter() - read
                reading_s += read - started
                pages += 1
                page.close()
            document.close()
        rows.append((name, pages, 1000 * reading_s / pages, 1000 * checking_s / pages, scans))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=6, help="scanned pages per language")
    parser.add_argument("--files", type=int, default=8, help="dev-set PDFs per set, scan check")
    parser.add_argument("--dev", type=Path, default=DEV_DOCS)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'pages':<10}{'threads':>8}{'pages/s':>10}{'s/page':>8}{'text found':>12}")
        for language in ("en", "zh"):
            pdfs = []
            for n, text in enumerate(texts(args.dev, language, args.pages)):
                image, shown = page_image(text, language)
                path = Path(tmp) / f"{language}-{n}.pdf"
                image.save(path, resolution=150)
                pdfs.append((path, shown))
            for threads in (cores, 1):
                rate, found = read_scans(pdfs, threads)
                label = f"{language} x{len(pdfs)}"
                print(f"{label:<10}{threads:>8}{rate:>10.2f}{1 / rate:>8.2f}{found:>12.3f}")
    rows = scan_check(args.dev, args.files)
    if rows:
        print(
            f"\n{'text-layer PDFs':<16}{'pages':>6}{'text ms':>9}{'check ms':>10}{'check/text':>12}"
        )
        for name, pages, text_ms, check_ms, scans in rows:
            share = check_ms / text_ms
            line = f"{name:<16}{pages:>6}{text_ms:>9.2f}{check_ms:>10.3f}{share:>12.2f}"
            print(f"{line}  ({scans} scans)")


if __name__ == "__main__":
    main()
