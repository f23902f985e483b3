"""Glued words per PDF text extractor: pypdf, PDFium and pdfplumber against poppler, in one run.

    python benchmarks/pdf_text.py [--pages N] [--dev-pages N] [--sets dev,debian,tools]

Each extractor reads the same pages; poppler's `pdftotext` (plain and -layout) is the reference.
PDFium is read through `privatellm.pdftext.page_text`, so its numbers are what privatellm gets;
pdfplumber is measured when it is installed (it is not a dependency).

A token of an extractor's page text (split on white space, punctuation stripped from both ends,
hyphens dropped, NFKC) is GLUED when it has 6 or more characters, none of them Chinese/Japanese/
Korean, is not a token of the reference text of that page, and equals the concatenation of 2 or
more consecutive reference tokens (`TheDebianFreeSoftwareGuidelines`). A pair of consecutive
tokens is SPLIT when together they make a 6+ character reference token that one of them alone is
not (`Deb ian`).
recall: the share of the reference's words (CJK: characters) the extractor gives back; order: the
share of its consecutive word pairs that are consecutive in the reference too (reading order:
columns, headers, tables); CJK gaps: spaces between two CJK characters per page, where the
reference has its own count. Speed: pages/s of opening the file and reading the pages, and the
ratio against pypdf in the same run.

Sets: dev - the dev set's PDFs (FinanceBench filings, ARAGOG arXiv papers), read in place, first
--dev-pages pages each; debian - Debian's manuals (`apt-get download` into --work, LaTeX via
xdvipdfmx and pdfTeX, dblatex, Apache FOP, English and Chinese), first --pages pages; tools - the
GPL-3 text and Chinese dev-set text made into PDFs here by each tool that is installed (Chromium
print-to-PDF, fpdf2, LibreOffice, pdflatex). Needs `apt-get install poppler-utils`.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import pypdfium2
from pypdf import PdfReader

from privatellm.pdftext import page_text
from privatellm.text import CJK

REPO = Path(__file__).resolve().parent.parent
DEV_DOCS = REPO.parent / "shared" / "eval" / "dev" / "docs"
DEBIAN_PACKAGES = ("debian-policy", "maint-guide", "maint-guide-zh-cn", "developers-reference")
GPL3 = Path("/usr/share/common-licenses/GPL-3")
NOTO_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")

_UNIT = re.compile(rf"[{CJK}]|[^\s{CJK}]+")
_CJK_GAP = re.compile(rf"(?<=[{CJK}]) +(?=[{CJK}])")
_HAS_CJK = re.compile(rf"[{CJK}]")
_LINE_END_HYPHEN = re.compile(r"(\w)-\n(\w)")
LONGEST_GLUE = 12  # consecutive reference tokens tried for one glued token


Extractor = Callable[[Path, int], list[str]]


def _strip(token: str) -> str:
    """Returns token without punctuation at its ends; hyphens go too, as where a line ends the
    extractors disagree on them (poppler: `USASCII`, PDFium: `US-ASCII`)."""
    token = unicodedata.normalize("NFKC", token).replace("-", "")
    start, end = 0, len(token)
    while start < end and unicodedata.category(token[start])[0] in "PS":
        start += 1
    while end > start and unicodedata.category(token[end - 1])[0] in "PS":
        end -= 1
    return token[start:end]


def _units(text: str) -> list[str]:
    """Returns text's words and CJK characters, punctuation stripped, for recall and order."""
    return [u for u in (_strip(u) for u in _UNIT.findall(text)) if u]


# ---------------------------------------------------------------- extractors


def read_pypdf(path: Path, pages: int) -> list[str]:
    reader = PdfReader(path)
    texts = []
    for page in reader.pages[:pages]:
        try:
            texts.append(page.extract_text() or "")
        except Exception:  # loaders.py keeps the document when one page fails; so does this
            texts.append("")
    return texts


def read_pdfium(path: Path, pages: int) -> list[str]:
    document = pypdfium2.PdfDocument(path)
    try:
        texts = []
        for index in range(min(pages, len(document))):
            page = document[index]
            texts.append(page_text(page))
            page.close()
        return texts
    finally:
        document.close()


def read_pdfplumber(path: Path, pages: int) -> list[str]:
    import pdfplumber

    with pdfplumber.open(path) as pdf:
        return [page.extract_text() or "" for page in pdf.pages[:pages]]


def read_poppler(path: Path, pages: int, layout: bool = False) -> list[str]:
    args = ["pdftotext", "-q", "-f", "1", "-l", str(pages), *(["-layout"] if layout else [])]
    out = subprocess.run([*args, str(path), "-"], capture_output=True, text=True).stdout
    return out.split("\f")[:-1] if out.endswith("\f") else out.split("\f")


def extractors() -> dict[str, Extractor]:
    found: dict[str, Extractor] = {"pypdf": read_pypdf, "pdfium": read_pdfium}
    try:
        import pdfplumber  # noqa: F401  (imported before the clock starts, as the others are)
    except ImportError:
        print("pdfplumber: not installed, not measured")
    else:
        found["pdfplumber"] = read_pdfplumber
    return found


# ---------------------------------------------------------------- measures


@dataclass
class Reference:
    """What one page's poppler text says: its tokens, its runs of tokens, its word order."""

    vocabulary: set[str]
    runs: set[str]
    units: list[str]
    pairs: set[tuple[str, str]]
    cjk_gaps: int

    @classmethod
    def of(cls, plain: str, layout: str) -> Reference:
        vocabulary = {_strip(t) for text in (plain, layout) for t in text.split()}
        # A word hyphenated at a line end is one word (PDFium rejoins it).
        vocabulary |= {_strip(t) for t in _LINE_END_HYPHEN.sub(r"\1\2", plain).split()}
        runs = set()
        for text in (plain, layout):
            raw = text.split()
            for start in range(len(raw)):
                for count in range(2, LONGEST_GLUE + 1):
                    if start + count <= len(raw):
                        runs.add(_strip("".join(raw[start : start + count])))
        units = _units(plain)
        pairs = set(pairwise(units))
        return cls(vocabulary - {""}, runs, units, pairs, len(_CJK_GAP.findall(plain)))


@dataclass
class Tally:
    pages: int = 0
    seconds: float = 0.0
    words: int = 0
    glued: int = 0
    split: int = 0
    found: int = 0
    wanted: int = 0
    pairs: int = 0
    pairs_in_order: int = 0
    cjk_gaps: int = 0
    examples: list[str] = field(default_factory=list)

    def add_page(self, text: str, ref: Reference) -> None:
        raw = text.split()
        tokens = [_strip(t) for t in raw]
        self.pages += 1
        self.words += len(raw)
        for token in tokens:
            if _is_glued(token, ref):
                self.glued += 1
                if len(self.examples) < 3:
                    self.examples.append(token)
        for a, b in pairwise(raw):
            joined = _strip(a + b)
            alone = {_strip(a), _strip(b)}
            if "" in alone or a.endswith(("-", "\u00ad")) or not _is_long_latin(joined):
                continue
            self.split += joined in ref.vocabulary and not alone <= ref.vocabulary
        units = _units(text)
        self.found += sum((Counter(units) & Counter(ref.units)).values())
        self.wanted += len(ref.units)
        self.pairs += max(len(units) - 1, 0)
        self.pairs_in_order += sum(p in ref.pairs for p in pairwise(units))
        self.cjk_gaps += len(_CJK_GAP.findall(text))

    def add(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            if name != "examples":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.examples = (self.examples + other.examples)[:3]


def _is_long_latin(token: str) -> bool:
    return len(token) >= 6 and not _HAS_CJK.search(token)


def _is_glued(token: str, ref: Reference) -> bool:
    return _is_long_latin(token) and token not in ref.vocabulary and token in ref.runs


def measure_file(path: Path, pages: int, readers: dict[str, Extractor]) -> dict[str, Tally]:
    """Returns each extractor's tally on the first `pages` pages of path, and poppler's own."""
    started = time.perf_counter()
    plain = read_poppler(path, pages)
    poppler_seconds = time.perf_counter() - started
    layout = read_poppler(path, pages, layout=True)
    refs = [Reference.of(p, q) for p, q in zip(plain, layout, strict=False)]
    tallies = {"poppler (ref)": Tally(seconds=poppler_seconds)}
    for page, ref in zip(plain, refs, strict=True):
        tallies["poppler (ref)"].add_page(page, ref)
    for name, read in readers.items():
        started = time.perf_counter()
        try:
            texts = read(path, len(refs))
        except Exception as e:  # counted as no text, and said
            print(f"{name} cannot read {path.name}: {e}")
            texts = []
        tally = Tally(seconds=time.perf_counter() - started)
        for text, ref in zip(texts, refs, strict=False):
            tally.add_page(text, ref)
        tallies[name] = tally
    return tallies


# ---------------------------------------------------------------- PDF sets


def dev_set() -> list[tuple[str, list[Path]]]:
    groups = [
        (f"dev/{d}", sorted((DEV_DOCS / d).glob("*.pdf"))) for d in ("financebench", "aragog")
    ]
    return [(name, files) for name, files in groups if files]


def debian_set(work: Path) -> list[Path]:
    """Returns Debian's PDF manuals, downloaded and unpacked into work once."""
    root = work / "debian"
    if not root.exists():
        if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
            print("debian: apt-get and dpkg-deb are needed, skipped")
            return []
        debs = work / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        got = subprocess.run(
            ["apt-get", "download", *DEBIAN_PACKAGES], cwd=debs, capture_output=True, text=True
        )
        if got.returncode != 0:
            print(f"debian: apt-get download failed, skipped ({got.stderr.strip()[-200:]})")
            return []
        for deb in debs.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        for packed in root.rglob("*.pdf.gz"):
            subprocess.run(["gunzip", "-f", str(packed)], check=True)
    return sorted(root.rglob("*.pdf"))


def _paragraphs() -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    if GPL3.exists():
        texts["en"] = [p.replace("\n", " ").strip() for p in GPL3.read_text().split("\n\n")]
    chinese = sorted((DEV_DOCS / "cmrc2018").glob("DEV_*.txt"))[:8]
    if chinese:
        texts["zh"] = [line.strip() for f in chinese for line in f.read_text().splitlines()]
    return {lang: [p for p in paras if p] for lang, paras in texts.items()}


def _html(paragraphs: list[str], lang: str) -> str:
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><style>'
        "body{font:11pt serif;text-align:justify;hyphens:auto}</style></head>"
        f"<body>{body}</body></html>"
    )


def make_chromium(paragraphs: list[str], html_file: Path, out: Path, lang: str) -> str | None:
    chromium = os.environ.get("PRIVATELLM_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        return "chromium not installed"
    subprocess.run(
        [
            chromium,
            *("--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer"),
            f"--print-to-pdf={out}",
            html_file.as_uri(),
        ],
        capture_output=True,
        timeout=180,
    )
    return None if out.exists() else "chromium made no PDF"


def make_libreoffice(paragraphs: list[str], html_file: Path, out: Path, lang: str) -> str | None:
    soffice = shutil.which("soffice")
    if not soffice:
        return "LibreOffice not installed (apt-get install libreoffice-writer-nogui)"
    profile = out.parent / "lo-profile"
    subprocess.run(
        [
            *(soffice, f"-env:UserInstallation={profile.as_uri()}", "--headless", "--norestore"),
            *("--infilter=HTML (StarWriter)", "--convert-to", "pdf:writer_pdf_Export"),
            *("--outdir", str(out.parent), str(html_file)),
        ],
        capture_output=True,
        timeout=300,
    )
    made = out.parent / f"{html_file.stem}.pdf"
    if made.exists():
        made.rename(out)
    return None if out.exists() else "LibreOffice made no PDF"


def make_fpdf2(paragraphs: list[str], html_file: Path, out: Path, lang: str) -> str | None:
    try:
        from fpdf import FPDF
    except ImportError:
        return "fpdf2 not installed (pip install -e '.[dev]')"
    font, number = (NOTO_CJK, 2) if lang == "zh" else (DEJAVU, 0)
    if not font.exists():
        return f"{font} missing"
    pdf = FPDF()
    pdf.add_font("body", fname=font, collection_font_number=number)
    pdf.set_font("body", size=11)
    pdf.add_page()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # glyphs missing from the font are drawn as blanks
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph, align="J", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        pdf.output(str(out))
    return None


def make_pdflatex(paragraphs: list[str], html_file: Path, out: Path, lang: str) -> str | None:
    if lang != "en":
        return "Chinese needs xelatex and ctex, not installed"
    if not shutil.which("pdflatex"):
        return "pdflatex not installed (apt-get install texlive-latex-base)"
    special = re.compile(r"([&%$#_{}])|([~^\\])")
    escaped = [
        special.sub(lambda m: "\\" + m[1] if m[1] else r"\textasciitilde{}", p) for p in paragraphs
    ]
    tex = out.with_suffix(".tex")
    body = "\n\n".join(escaped)
    tex.write_text(f"\\documentclass{{article}}\n\\begin{{document}}\n{body}\n\\end{{document}}\n")
    subprocess.run(
        ["pdflatex", "-interaction=batchmode", "-halt-on-error", tex.name],
        cwd=out.parent,
        capture_output=True,
        timeout=300,
    )
    return None if out.exists() else "pdflatex failed"


Maker = Callable[[list[str], Path, Path, str], str | None]
MAKERS: dict[str, Maker] = {
    "chromium": make_chromium,
    "libreoffice": make_libreoffice,
    "fpdf2": make_fpdf2,
    "pdflatex": make_pdflatex,
}


def tools_set(work: Path) -> list[Path]:
    """Returns PDFs made here from the same texts by each tool that is installed."""
    folder = work / "tools"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    made = []
    for lang, paragraphs in _paragraphs().items():
        html_file = folder / f"{lang}.html"
        html_file.write_text(_html(paragraphs, lang))
        for tool, make in MAKERS.items():
            out = folder / f"{tool}-{lang}.pdf"
            try:
                skipped = make(paragraphs, html_file, out, lang)
            except (OSError, subprocess.SubprocessError) as e:
                skipped = f"failed: {e}"
            if skipped:
                print(f"tools: {tool}-{lang} skipped: {skipped}")
            else:
                made.append(out)
    return made


# ---------------------------------------------------------------- report


def _percent(part: float, whole: float, digits: int = 2) -> str:
    return f"{100 * part / whole:.{digits}f}%" if whole else "-"


def _file_cells(t: Tally) -> str:
    recall, order = _percent(t.found, t.wanted, 1), _percent(t.pairs_in_order, t.pairs, 1)
    return f"{t.glued}/{t.words} {recall} {order}"


def print_table(title: str, per_file: dict[Path, dict[str, Tally]]) -> None:
    totals: dict[str, Tally] = {}
    for tallies in per_file.values():
        for name, tally in tallies.items():
            totals.setdefault(name, Tally()).add(tally)
    pages = totals["poppler (ref)"].pages
    print(f"\n== {title}: {len(per_file)} files, {pages} pages ==")
    header = ("extractor", "words/pg", "glued", "glued%", "split%", "recall", "order", "CJKgap/pg")
    print(f"{header[0]:<14}" + "".join(f"{h:>10}" for h in header[1:]) + "   pages/s  x pypdf")
    base = totals["pypdf"].pages / max(totals["pypdf"].seconds, 1e-9)
    for name, t in totals.items():
        speed = t.pages / max(t.seconds, 1e-9)
        cells = (
            f"{t.words / max(t.pages, 1):.0f}",
            str(t.glued),
            _percent(t.glued, t.words),
            _percent(t.split, t.words),
            _percent(t.found, t.wanted),
            _percent(t.pairs_in_order, t.pairs),
            f"{t.cjk_gaps / max(t.pages, 1):.2f}",
        )
        print(f"{name:<14}" + "".join(f"{c:>10}" for c in cells) + f"{speed:>10.1f}", end="")
        print(f"{speed / base:>8.2f}x" + (f"   e.g. {', '.join(t.examples)}" if t.examples else ""))
    if len(per_file) <= 12:
        names = [n for n in totals if n != "poppler (ref)"]
        print("  per file, glued/words recall order: " + " | ".join(names))
        for path, tallies in per_file.items():
            row = " | ".join(_file_cells(tallies[n]) for n in names)
            print(f"    {path.name:<26} {row}")


def measure_set(
    title: str, files: Iterable[Path], pages: int, readers: dict[str, Extractor]
) -> None:
    per_file = {path: measure_file(path, pages, readers) for path in files}
    if per_file:
        print_table(f"{title} (first {pages} pages of each)", per_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=30, help="pages per Debian/tools PDF")
    parser.add_argument("--dev-pages", type=int, default=10, help="pages per dev-set PDF")
    parser.add_argument("--sets", default="dev,debian,tools", help="comma-separated PDF sets")
    parser.add_argument("--work", type=Path, default=Path("/tmp/privatellm-pdf-text"))
    args = parser.parse_args()
    if not shutil.which("pdftotext"):
        sys.exit("the reference is poppler's pdftotext: apt-get install poppler-utils")
    for noisy in ("pypdf", "pdfminer"):  # damaged pages and fonts are counted here, not logged
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    readers = extractors()
    args.work.mkdir(parents=True, exist_ok=True)
    sets = args.sets.split(",")
    if "dev" in sets:
        for title, files in dev_set():
            measure_set(title, files, args.dev_pages, readers)
    if "debian" in sets:
        measure_set("debian manuals", debian_set(args.work), args.pages, readers)
    if "tools" in sets:
        measure_set("made by tools", tools_set(args.work), args.pages, readers)


if __name__ == "__main__":
    main()
