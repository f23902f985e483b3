"""Citations: tie each sentence of an answer to the passage that supports it.

The bundled 135M model rarely writes [n] markers and sometimes states what no passage says, so
citations cannot rest on the model. Each sentence is scored against every passage it was given
(embedding similarity mixed with word overlap); a marker the model wrote is kept when its passage
supports the sentence, replaced by the passage that does when it does not, and dropped when it
names no passage. A sentence no passage supports is reported as unsupported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privatellm.embeddings import Embedder
from privatellm.extract import supporting_span
from privatellm.lexical import tokenize
from privatellm.text import has_cjk, split_markers, split_sentences
from privatellm.types import Citation, ScoredChunk

_TRAILING = re.compile(r"[\s.!?。！？:;,]*$")
# Sentences shorter than this many terms ("Yes.") carry no claim worth a citation.
MIN_TERMS = 3


@dataclass(frozen=True)
class Sentence:
    text: str  # without markers
    cited: tuple[int, ...]  # passage numbers (1-based) supporting it, best first
    supported: bool  # False: no passage supports what it says


def overlap(sentence: str, passage: str) -> float:
    """Returns the share of the sentence's terms that occur in the passage."""
    terms = set(tokenize(sentence))
    return len(terms & set(tokenize(passage))) / len(terms) if terms else 0.0


def support_scores(
    sentences: Sequence[str], passages: Sequence[str], embedder: Embedder
) -> np.ndarray:
    """Returns a (sentences x passages) matrix in 0..1: how well each passage backs each sentence.

    The mean of cosine similarity and word overlap: similarity alone rates a fluent paraphrase of
    the wrong fact highly, overlap alone misses a faithful paraphrase.
    """
    if not sentences or not passages:
        return np.zeros((len(sentences), len(passages)))
    vectors = embedder.embed_batch([*sentences, *passages])
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosine = np.clip(vectors[: len(sentences)] @ vectors[len(sentences) :].T, 0.0, 1.0)
    words = np.array([[overlap(s, p) for p in passages] for s in sentences])
    return (cosine + words) / 2  # type: ignore[no-any-return]


def attribute(
    answer: str,
    passages: Sequence[ScoredChunk],
    embedder: Embedder,
    min_support: float,
    question: str = "",
) -> list[Sentence]:
    """Returns the answer's sentences, each with the passages (1-based) that support it.

    A sentence that only restates the question (small models echo it) claims nothing and is
    neither cited nor flagged.
    """
    pieces = [split_markers(s) for s in split_sentences(answer)]
    unique = {text.lower(): (text, numbers) for text, numbers in reversed(pieces) if text}
    pieces = [unique.pop(text.lower()) for text, _ in pieces if text.lower() in unique]
    texts = [text for text, _ in pieces]
    scores = support_scores(texts, [p.chunk.text for p in passages], embedder)
    result: list[Sentence] = []
    for row, (text, numbers) in enumerate(pieces):
        if len(tokenize(text)) < MIN_TERMS or (question and overlap(text, question) >= 0.8):
            result.append(Sentence(text, (), True))
            continue
        valid = [n for n in dict.fromkeys(numbers) if 1 <= n <= len(passages)]
        backed = [n for n in valid if scores[row, n - 1] >= min_support]
        if not backed and len(passages):
            best = int(np.argmax(scores[row])) + 1
            backed = [best] if scores[row, best - 1] >= min_support else []
        result.append(Sentence(text, tuple(backed), bool(backed)))
    return result


def render(sentences: Sequence[Sentence]) -> str:
    """Returns the answer text with a [n] marker before each cited sentence's full stop."""
    parts = []
    for s in sentences:
        if not s.cited:
            parts.append(s.text)
            continue
        body = _TRAILING.sub("", s.text)
        marks = "".join(f"[{n}]" for n in s.cited)
        parts.append(f"{body} {marks}{s.text[len(body) :].strip()}")
    joiner = "" if parts and all(has_cjk(p) for p in parts) else " "
    return joiner.join(parts)


def citations(sentences: Sequence[Sentence], passages: Sequence[ScoredChunk]) -> list[Citation]:
    """Returns one citation per passage cited anywhere in the answer, by number, each quoting
    the sentence of its passage closest to the answer's sentences that cite it."""
    cited = sorted({n for s in sentences for n in s.cited})
    found = []
    for n in cited:
        claims = [s.text for s in sentences if n in s.cited]
        span = supporting_span(passages[n - 1].chunk.text, claims)
        found.append(Citation.of(n, passages[n - 1], span))
    return found
