"""Page text from PDFium, normalised for chunking and search: words keep their spaces.

Why PDFium, not pypdf: pypdf glues words into runs like `TheDebianFreeSoftwareGuidelines`. For a
font with Identity-H encoding it takes the width of glyph 32 (any glyph; in FreeSerif 564/1000
em) for the space's, so the kern a TeX driver draws between words (-241) falls below its
threshold. Measured by `benchmarks/pdf_text.py` against poppler's pdftotext, glued words in the
first 30 pages of Debian's manuals, pypdf -> PDFium: policy 591 -> 0 (of 17,696 words), New
Maintainers' Guide 760 -> 6 (of 10,079), Developer's Reference 110 -> 0 (of 16,307); first 10
pages of the dev set's FinanceBench filings 2,755 -> 9 (1.60% -> 0.01% of words). PDFium also
gives back more of the reference's words (Debian 75% -> 99.9%, FinanceBench 95.2% -> 99.9%),
keeps the reading order closer (two-column arXiv papers 89.9% -> 94.8% of word pairs) and reads
pages 9-15x as fast. What it does worse: a superscript footnote mark sticks to the next word
(`2Google`), and Chinese drawn one character at a time gets spaces (undone here).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pypdfium2

# PDFium joins a word broken by a hyphen at a line end and puts this mark where the hyphen was
# (get_text_range writes U+FFFE, get_text_bounded writes U+0002); U+00AD is a soft hyphen drawn
# in the text itself.
_HYPHEN_MARK = re.compile(r"([\w./@:\\-]*?)(\w?)[\ufffe\x02\u00ad](\w?)([\w./@:\\-]*)")
_WORD = re.compile(r"\w+(?:-\w+)*")
_WORD_TAIL = re.compile(r"\w+$")
_WORD_HEAD = re.compile(r"\w+")
# In a path or address (debian-policy/, a.b-c) a hyphen is the author's.
_PATH = re.compile(r"[/\\@:._\-]")
# Han, kana, CJK punctuation and full-width forms: written without spaces between words. (Not
# text.CJK: that holds Hangul too, and Korean puts spaces between words.)
_UNSPACED = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_UNSPACED_GAP = re.compile(f"(?<=[{_UNSPACED}]) +(?=[{_UNSPACED}])")
_UNSPACED_PAIR = re.compile(f"(?=[{_UNSPACED}]{{2}})")
# Control characters other than the line break and the tab, and U+FFFE/U+FFFF non-characters.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff]")


def page_text(page: pypdfium2.PdfPage) -> str:
    """Returns the text of a PDFium page: lines joined by "\\n", hyphenated words rejoined."""
    textpage = page.get_textpage()
    try:
        raw = textpage.get_text_range()
    finally:
        textpage.close()
    return clean_page_text(raw)


def clean_page_text(raw: str) -> str:
    """Returns PDFium's raw page text with its line ends, hyphen marks and Chinese letter-spacing
    normalised. (PDFium itself writes ligatures as letters: ﬁ as fi.)"""
    text = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    spelled = set(_WORD.findall(text))
    text = _HYPHEN_MARK.sub(lambda mark: _rejoin(mark, spelled), text)
    text = _CONTROL.sub("", text)
    return "\n".join(_unspace_cjk(line.rstrip()) for line in text.split("\n")).strip("\n")


def _rejoin(mark: re.Match[str], spelled: set[str]) -> str:
    """Returns the word around a hyphen mark with the hyphen kept where it is the author's."""
    before, left, right, after = mark.groups()
    head = _WORD_TAIL.search(before + left)
    tail = _WORD_HEAD.match(right + after)
    word = f"{head.group() if head else ''}-{tail.group() if tail else ''}"
    if word in spelled or word.replace("-", "") in spelled:  # the page's own spelling decides
        soft = word not in spelled
    else:  # hyphenation splits words of lowercase letters (not US-ASCII, Build-Depends, a/b-c)
        path = _PATH.search(before + after.rstrip(".:0123456789"))
        soft = left.islower() and right.islower() and not path
    return f"{before}{left}{'' if soft else '-'}{right}{after}"


def _unspace_cjk(line: str) -> str:
    # PDFium puts a space between Chinese characters drawn one by one with a gap of 0.3 em or more
    # (letter-spaced headings, justified lines); where most of a line's character pairs are spaced
    # the line is letter-spaced, and where few are (a table row) the spaces part its cells.
    spaced = len(_UNSPACED_GAP.findall(line))
    if spaced and spaced > len(_UNSPACED_PAIR.findall(line)):
        return _UNSPACED_GAP.sub("", line)
    return line
