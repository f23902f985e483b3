"""Tables: the rows of a PDF page's tables as lines of text, each value with its column header.

A page's text gives a financial statement's rows with their headers lines away ("Years Ended" /
"2022 2021" ... "Total revenue 17,606 15,785"), so the value of a year is a matter of counting.
Each row found here becomes one line, `Total revenue | Years Ended 2022: 17,606 | Years Ended
2021: 15,785`, that pdf.py appends after the page text.

A table is found from where its words are drawn (PDFium's character boxes): rows are lines that
end in a run of amounts, columns are the x-ranges those amounts share, headers are the short
lines above the first row that sit over the columns. 10-K statements rule their columns with
whitespace, not lines. pdfplumber's table finder, tried first on the 35 FinanceBench filings
(issue 14), split words across cells ("Subscrip" | "tion"), left the header lines out of the
table with its text strategy and found no columns with its lines strategy; its pdfminer layout
alone took ~0.2 s a page, where reading a page's boxes here takes ~0.02 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

# A page is read for tables when at least this many lines of its text hold two or more amounts.
CANDIDATE_LINES = 2
HEADER_LINES = 6  # lines looked at above a table's first row for its column headers
ROWS_APART = 2  # other lines allowed between two rows of one table
LONGEST_LABEL = 90  # characters; a longer "label" is a sentence
LONGEST_HEADER = 60  # characters of one phrase over a column

# An amount as statements print it: 1,234  (1,234)  $1,234.5  -3.2%  (3.2)%
_AMOUNT = re.compile(r"[$€£¥]?\(?[$€£¥]?[-+−]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?\)?%?\)?")
# Cells that stand in a value column without being amounts: nil dashes, "not meaningful".
_NIL = re.compile(r"[$€£¥]?[—–-]+%?|n/?a|nm|\*+", re.IGNORECASE)
_ASIDE = re.compile(r"\(.*[^\W\d_].*\)")  # (In millions), (Unaudited): not a column's name
_YEAR = re.compile(r"(19|20)\d\d")
_PREFIX = re.compile(r"[$€£¥(]+")  # drawn apart from the amount that follows
_SUFFIX = re.compile(r"[)%]+")  # drawn apart from the amount before


Columns = list[tuple[float, float]]  # a table's value columns, as x-ranges left to right
Heads = tuple[Columns, list[str]]  # a table's value columns and their headers


@dataclass(frozen=True)
class Box:
    """Text drawn on a page, in points from the page's top left corner."""

    x0: float
    x1: float
    top: float
    bottom: float
    text: str

    @property
    def center(self) -> float:
        return (self.x0 + self.x1) / 2


@dataclass(frozen=True)
class Line:
    """One line of a page split into cells; values are the trailing run of amounts, if any."""

    cells: tuple[Box, ...]
    values: int  # how many of the last cells are values

    @property
    def labels(self) -> tuple[Box, ...]:
        return self.cells[: len(self.cells) - self.values]

    @property
    def amounts(self) -> tuple[Box, ...]:
        return self.cells[len(self.cells) - self.values :]

    @property
    def top(self) -> float:
        return min(cell.top for cell in self.cells)

    @property
    def height(self) -> float:
        return max(cell.bottom - cell.top for cell in self.cells)

    @property
    def is_row(self) -> bool:
        """Whether the line is a table row: values that are not all years (a header line), with
        a label or at least one amount."""
        values = [cell.text for cell in self.amounts]
        if not values or all(_YEAR.fullmatch(text) for text in values):
            return False
        if sum(len(cell.text) for cell in self.labels) > LONGEST_LABEL:
            return False  # a sentence that ends in a number, or two columns of a paper side by side
        return self.values < len(self.cells) or self.numbers > 0

    @property
    def numbers(self) -> int:
        return sum(1 for cell in self.amounts if _AMOUNT.fullmatch(cell.text))


def table_rows(data: bytes, texts: list[str]) -> dict[int, list[str]]:
    """Returns, for the 0-based index of each page that holds tables, the lines its table rows
    become (each with its column headers)."""
    candidates = [index for index, text in enumerate(texts) if _looks_tabular(text)]
    if not candidates:
        return {}
    rows: dict[int, list[str]] = {}
    for index, words in _pages_words(data, candidates):
        try:
            lines = _page_rows(words)
        except Exception:  # a layout nobody foresaw costs that page's rows, not the document
            continue
        if lines:
            rows[index] = lines
    return rows


def _looks_tabular(text: str) -> bool:
    numeric = 0
    for line in text.splitlines():
        if sum(1 for token in line.split() if _AMOUNT.fullmatch(token)) >= 2:
            numeric += 1
            if numeric >= CANDIDATE_LINES:
                return True
    return False


def _pages_words(data: bytes, indexes: list[int]) -> Iterator[tuple[int, list[Box]]]:
    """Yields the words of each page asked for; a page (or a PDF) PDFium cannot read yields none."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except Exception:  # pdf.py has already reported an unreadable PDF: no tables, no second error
        return
    try:
        for index in indexes:
            try:
                words = _page_words(document[index])
            except Exception:  # one damaged page costs its own tables only
                continue
            yield index, words
    finally:
        document.close()


def _page_words(page: Any) -> list[Box]:
    """Returns the words of a PDFium page, split at spaces and at gaps wider than a letter."""
    height = page.get_height()
    textpage = page.get_textpage()
    try:
        return _words(textpage.raw, textpage.count_chars(), height)
    finally:
        textpage.close()
        page.close()


def _words(textpage: Any, count: int, height: float) -> list[Box]:
    # PDFium's raw calls, not pypdfium2's helpers: this loop runs once per character of every
    # candidate page, and the helpers made it 3x slower than reading the page's text.
    import pypdfium2.raw as pdfium_c

    box = pdfium_c.FS_RECTF()
    words: list[Box] = []
    word: list[str] = []
    x0 = x1 = top = bottom = 0.0
    for index in range(count):
        char = chr(pdfium_c.FPDFText_GetUnicode(textpage, index))
        if char.isspace() or not char.isprintable():
            if word:
                words.append(Box(x0, x1, top, bottom, "".join(word)))
                word = []
            continue
        pdfium_c.FPDFText_GetLooseCharBox(textpage, index, box)
        size = bottom - top
        if word and not (
            abs(height - box.top - top) < size / 2 and -size < box.left - x1 < size / 5
        ):
            words.append(Box(x0, x1, top, bottom, "".join(word)))
            word = []
        if not word:
            x0, top, bottom = box.left, height - box.top, height - box.bottom
        x1 = box.right
        word.append(char)
    if word:
        words.append(Box(x0, x1, top, bottom, "".join(word)))
    return words


def _page_rows(words: list[Box]) -> list[str]:
    lines = [_line(words) for words in _lines_of(words)]
    rows: list[str] = []
    known: Heads = ([], [])
    for start, end in _blocks(lines):
        written, known = _table(lines, start, end, known)
        rows.extend(written)
    return rows


def _lines_of(words: list[Box]) -> list[list[Box]]:
    """Returns the words grouped into lines, top to bottom, each line left to right."""
    lines: list[list[Box]] = []
    for word in sorted(words, key=lambda w: (w.top, w.x0)):
        middle = (word.top + word.bottom) / 2
        if lines and lines[-1][0].top <= middle <= lines[-1][0].bottom:
            lines[-1].append(word)
        else:
            lines.append([word])
    return [sorted(line, key=lambda w: w.x0) for line in lines]


def _line(words: list[Box]) -> Line:
    """Returns a line's cells: words of a phrase joined, each amount a cell with its $ ( ) %."""
    cells: list[Box] = []
    for word in words:
        last = cells[-1] if cells else None
        if last and _affix(last, word):
            cells[-1] = _joined(last, word, "")
        elif last and _is_text(last) and _is_text(word) and word.x0 - last.x1 < _gap(last):
            cells[-1] = _joined(last, word, " ")
        else:
            cells.append(word)
    values = 0
    while values < len(cells) and not _is_text(cells[-1 - values]):
        values += 1
    return Line(tuple(cells), values)


def _affix(last: Box, word: Box) -> bool:
    """Returns whether two words are one value drawn in two parts: `$` `1,234`, `(12` `)%`."""
    if not (_PREFIX.fullmatch(last.text) or _SUFFIX.fullmatch(word.text)):
        return False
    return not _is_text(Box(0, 0, 0, 0, last.text + word.text))


def _is_text(cell: Box) -> bool:
    return not (_AMOUNT.fullmatch(cell.text) or _NIL.fullmatch(cell.text))


def _gap(cell: Box) -> float:
    """Returns the widest space between two words of one phrase: about a letter's height."""
    return cell.bottom - cell.top


def _joined(left: Box, right: Box, space: str) -> Box:
    return Box(
        left.x0,
        right.x1,
        min(left.top, right.top),
        max(left.bottom, right.bottom),
        f"{left.text}{space}{right.text}",
    )


def _blocks(lines: list[Line]) -> Iterator[tuple[int, int]]:
    """Yields (first, last) line indexes of tables: runs of rows, up to ROWS_APART lines between
    rows (section titles, labels wrapped onto a second line), two or more of them with two
    amounts or more (a list of numbered lines, or of names with footnote marks, is no table)."""
    run: list[int] = []
    for index in [*(i for i, line in enumerate(lines) if line.is_row), -1]:
        if run and (index < 0 or _apart(lines[run[-1]], lines[index], index - run[-1])):
            if sum(1 for i in run if lines[i].numbers >= 2) >= 2:
                yield run[0], run[-1]
            run = []
        run.append(index)


def _apart(upper: Line, lower: Line, lines: int) -> bool:
    return lines > ROWS_APART + 1 or lower.top - upper.top > (ROWS_APART + 2) * upper.height


def _table(lines: list[Line], start: int, end: int, known: Heads) -> tuple[list[str], Heads]:
    """Returns a table's rows written out, and its columns with their headers; a table without
    headers of its own takes those of the table above it if it has the same columns (a
    statement continued under a title of its own: LIABILITIES AND STOCKHOLDERS' EQUITY)."""
    columns = _columns([line for line in lines[start : end + 1] if line.is_row])
    if not columns:
        return [], known
    zone = columns[0][0] - lines[start].height * 2  # where the value columns' headers begin
    first = start
    while first > 0 and start - first < 2 and _label_only(lines[first - 1], zone):
        first -= 1  # section titles above the first row ("Revenue:", "ASSETS")
    headers = _headers(lines[max(0, first - HEADER_LINES) : first], columns, zone)
    if not any(headers) and _aligned(columns, known[0]):
        headers = known[1]
    return _written(lines[first : end + 1], columns, headers), (columns, headers)


def _aligned(columns: Columns, earlier: Columns) -> bool:
    return len(columns) == len(earlier) and all(
        min(a[1], b[1]) > max(a[0], b[0]) for a, b in zip(columns, earlier, strict=True)
    )


def _label_only(line: Line, zone: float) -> bool:
    return not line.is_row and all(cell.center < zone for cell in line.cells)


def _columns(rows: list[Line]) -> Columns:
    """Returns the x-ranges of the value columns: where the rows' values overlap, left to right,
    leaving out ranges only one row has a value in (a number inside a label)."""
    cells = sorted((cell for row in rows for cell in row.amounts), key=lambda cell: cell.x0)
    columns: list[tuple[float, float, int]] = []
    for cell in cells:
        if columns and cell.x0 <= columns[-1][1]:
            x0, x1, count = columns[-1]
            columns[-1] = (x0, max(x1, cell.x1), count + 1)
        else:
            columns.append((cell.x0, cell.x1, 1))
    least = 2 if len(rows) > 2 else 1
    return [(x0, x1) for x0, x1, count in columns if count >= least]


def _headers(above: list[Line], columns: Columns, zone: float) -> list[str]:
    """Returns each column's header: the words over it in the lines just above the table, top to
    bottom; a line with one phrase over several columns (`Years Ended`) heads them all."""
    found: list[list[Box]] = []
    for line in reversed(above):
        if line.is_row or any(
            c.x0 < zone < c.x1 - line.height or len(c.text) > LONGEST_HEADER for c in line.cells
        ):
            break  # a row of an earlier table, a title, a sentence
        cells = [c for c in line.cells if c.center >= zone and not _ASIDE.fullmatch(c.text)]
        if cells:
            found.insert(0, cells)
    parts: list[list[str]] = [[] for _ in columns]
    bounds = [(a[1] + b[0]) / 2 for a, b in pairwise(columns)]
    for number, cells in enumerate(found):
        spans = len(cells) == 1 and number < len(found) - 1
        for cell in cells:
            for column in range(len(columns)) if spans else _under(cell, bounds):
                parts[column].append(cell.text)
    return [" ".join(words) for words in parts]


def _under(cell: Box, bounds: list[float]) -> list[int]:
    """Returns the columns a header cell stands over: those holding a third of its width or more."""
    edges = [float("-inf"), *bounds, float("inf")]
    width = max(cell.x1 - cell.x0, 1e-6)
    shares = [(min(cell.x1, right) - max(cell.x0, left)) / width for left, right in pairwise(edges)]
    best = max(range(len(shares)), key=shares.__getitem__)
    return [i for i, share in enumerate(shares) if share >= 1 / 3 or i == best]


def _written(lines: list[Line], columns: Columns, headers: list[str]) -> list[str]:
    """Returns the table's rows as lines: `section label | header: value | ...`."""
    written: list[str] = []
    section = pending = ""
    for line in lines:
        if not line.is_row:
            text = " ".join(cell.text for cell in line.cells)
            if text.endswith(":") or text.isupper():
                section, pending = text, ""
            else:
                pending = f"{pending} {text}".strip()
            continue
        label, values = _split(line, columns)
        if not values:
            continue
        if pending and (not label or label[:1].islower()):
            label = f"{pending} {label}".strip()  # a label wrapped onto the row's line
        elif pending:
            section = pending
        pending = ""
        cells = [f"{headers[i]}: {v}" if headers[i] else v for i, v in sorted(values.items())]
        written.append(" | ".join([f"{section} {label}".strip(), *cells]))
        if label.lower().startswith("total"):
            section = ""
    return written


def _split(line: Line, columns: Columns) -> tuple[str, dict[int, str]]:
    """Returns a row's label and its values by column; a value under no column joins the label."""
    label = [cell.text for cell in _beside(line.labels)]
    values: dict[int, str] = {}
    for cell in line.amounts:
        overlaps = [min(cell.x1, x1) - max(cell.x0, x0) for x0, x1 in columns]
        column = max(range(len(columns)), key=overlaps.__getitem__)
        if overlaps[column] <= 0:
            label.append(cell.text)
        else:
            values[column] = f"{values[column]} {cell.text}" if column in values else cell.text
    return " ".join(label), values


def _beside(labels: tuple[Box, ...]) -> tuple[Box, ...]:
    """Returns a row's label cells after the last wide gap between them: on a page set in two
    columns, a line of the other column's text can sit level with the row."""
    for index in range(len(labels) - 1, 0, -1):
        left, right = labels[index - 1], labels[index]
        if right.x0 - left.x1 > 3 * (left.bottom - left.top) and len(left.text) > len(right.text):
            return labels[index:]
    return labels
