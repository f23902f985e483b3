"""Rules about text that several modules share: what is CJK, where a sentence ends, [n] markers.

Each rule lives here once; the lexical index, token counting, citations, the answer stream and
the scripted engine all import it rather than keep a copy.
"""

from __future__ import annotations

import re

# Han ideographs (CJK unified, extension A, compatibility), kana and Hangul: scripts written
# without spaces between words.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{CJK}]")

# Sentence ends: . ! ? followed by a space (not inside "3.5"), Chinese 。！？； with no space.
SENTENCE_END_MARKS = ".!?。！？；"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|(?<=[。！？；])|\n+")
# In extracted page text a single line break is mostly a wrapped line, not the end of a sentence.
_PROSE_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|(?<=[。！？；])|\n\s*\n")

# A citation marker the model writes after a claim: [1] or [1, 3].
MARKERS = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")


def is_cjk_char(char: str) -> bool:
    """Returns whether char is a Chinese, Japanese or Korean letter."""
    return bool(_CJK_CHAR.match(char))


def has_cjk(text: str) -> bool:
    """Returns whether text holds any Chinese, Japanese or Korean letter."""
    return _CJK_CHAR.search(text) is not None


def is_cjk(text: str, share: float = 0.3) -> bool:
    """Returns whether at least `share` of text's letters are Chinese/Japanese/Korean."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(is_cjk_char(c) for c in letters) / len(letters) >= share


_KANA = re.compile("[\u3040-\u30ff]")
_HANGUL = re.compile("[\uac00-\ud7af]")


def cjk_language(text: str) -> str | None:
    """Returns 'ja', 'ko' or 'zh' for text written mostly in Japanese, Korean or Chinese (by
    `is_cjk`), else None. Kana mark Japanese and Hangul Korean; Han alone is taken as Chinese."""
    if not is_cjk(text):
        return None
    if _KANA.search(text):
        return "ja"
    return "ko" if _HANGUL.search(text) else "zh"


def split_sentences(text: str) -> list[str]:
    """Returns the sentences of text, markers still attached, empty pieces dropped.

    A sentence ends at . ! ? and a space, at Chinese 。！？； or at a line break.
    """
    return [text[start:end] for start, end in sentence_spans(text)]


def sentence_spans(text: str, wrapped: bool = False) -> list[tuple[int, int]]:
    """Returns the (start, end) offsets of text's sentences, white space around them left out.

    wrapped: the text is a document's, whose single line breaks only wrap lines (a blank line
    still ends a sentence)."""
    ends = _PROSE_SENTENCE_END if wrapped else _SENTENCE_END
    spans = []
    start = 0
    for cut in [*ends.finditer(text), None]:
        end = cut.start() if cut else len(text)
        piece = text[start:end]
        if piece.strip():
            left = len(piece) - len(piece.lstrip())
            spans.append((start + left, start + len(piece.rstrip())))
        start = cut.end() if cut else len(text)
    return spans


def split_markers(sentence: str) -> tuple[str, list[int]]:
    """Returns the sentence without its [n] markers, and the numbers they named, in order."""
    numbers = [int(n) for group in MARKERS.findall(sentence) for n in group.split(",")]
    return MARKERS.sub("", sentence).strip(), numbers
