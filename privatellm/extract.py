"""Extractive answers: the sentence(s) of the retrieved passages that answer a question, quoted.

No model is called. Every sentence of every passage is a candidate, scored by how much of the
question's rare-word weight it holds, whether it holds what the question asks for (a number, a
date), and the passage's rank. A sentence that only restates the question says nothing new and
cannot win. Its neighbours' overlap and its embedding similarity to the question can count too,
but on the dev set they added nothing (similarity) or cost a little (neighbours), and similarity
costs an embedding of every candidate: both weigh 0 (benchmarks/extract_weights.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privatellm.embeddings import Embedder
from privatellm.lexical import question_terms, tokenize
from privatellm.text import MARKERS, is_cjk, sentence_spans
from privatellm.types import ScoredChunk

# How much each signal counts; chosen on dev-set samples (docs/EVALUATION.md).
OVERLAP, NEIGHBOURS, SIMILARITY, ASKED, RANK = 1.0, 0.0, 0.0, 0.25, 0.15
# When auto keeps the model's words (benchmarks/auto_rule.py): at least AGREE of what they say
# beyond the question is in the best quote, and they carry at least COVER of what it says.
AGREE, COVER = 0.7, 0.3
MIN_QUOTE_CHARS = 40  # a shorter best sentence ("Answer: 42.") is completed by the next one

_NUMBER = re.compile(r"\d|[零一二三四五六七八九十百千万亿两]")
_YEAR = re.compile(
    r"\b1[0-9]{3}\b|\b20[0-9]{2}\b|\d+\s*年|(?i:january|february|march|april|may|"
    r"june|july|august|september|october|november|december)"
)
_ASKS_NUMBER = re.compile(r"(?i)\bhow (many|much|long|far|old|tall|big|large|high)\b|多少|几")
_ASKS_DATE = re.compile(r"(?i)\bwhen\b|\bwhat year\b|\bwhich year\b|哪一?年|何时|什么时候|哪天")


@dataclass(frozen=True)
class Quote:
    """A span of one passage: [n] is passages[n - 1]; start/end are offsets into its text."""

    n: int
    start: int
    end: int
    text: str
    score: float


@dataclass(frozen=True)
class _Candidate:
    n: int  # passage number, 1-based
    start: int
    end: int
    text: str
    terms: frozenset[str]


def asks_for(question: str) -> str | None:
    """Returns what kind of value the question asks for: "number", "date", or None."""
    if _ASKS_DATE.search(question):
        return "date"
    if _ASKS_NUMBER.search(question):
        return "number"
    return None


def holds_asked(text: str, asked: str | None) -> bool:
    """Returns whether text holds a value of the asked kind (always, when none is asked)."""
    if asked == "date":
        return bool(_YEAR.search(text))
    if asked == "number":
        return bool(_NUMBER.search(text))
    return True


def agrees(claim: str, quote: Quote, question: str) -> bool:
    """Returns whether claim says what quote says: most of its words beyond the question's are
    the quote's (it adds nothing the quote does not back) and it keeps a share of the quote's
    own (it did not drop the part that answers)."""
    asked = set(tokenize(question))
    said = set(tokenize(MARKERS.sub(" ", claim))) - asked
    quoted = set(tokenize(quote.text)) - asked
    if not said or not quoted:
        return False
    return len(said & quoted) >= AGREE * len(said) and len(said & quoted) >= COVER * len(quoted)


def best_quote(
    question: str,
    passages: Sequence[ScoredChunk],
    embedder: Embedder,
    max_sentences: int = 2,
) -> Quote | None:
    """Returns the quote that best answers question from passages, or None if none can."""
    candidates = _candidates(passages)
    asked_terms = set(question_terms(question))
    if not candidates or not asked_terms:
        return None
    scores = _scores(question, asked_terms, candidates, embedder)
    # A sentence that only restates the question (its question words too) says nothing new.
    said = set(tokenize(question))
    scores[[not (c.terms - said) for c in candidates]] = -np.inf
    best = int(np.argmax(scores))
    if not np.isfinite(scores[best]):
        return None
    return _quote(candidates, best, passages, float(scores[best]), max_sentences)


def _candidates(passages: Sequence[ScoredChunk]) -> list[_Candidate]:
    found = []
    for n, hit in enumerate(passages, 1):
        text = hit.chunk.text
        for start, end in sentence_spans(text, wrapped=True):
            sentence = text[start:end]
            found.append(_Candidate(n, start, end, sentence, frozenset(tokenize(sentence))))
    return found


def _scores(
    question: str,
    asked_terms: set[str],
    candidates: Sequence[_Candidate],
    embedder: Embedder,
) -> np.ndarray:
    """Returns one score per candidate."""
    weight = _idf(candidates)
    total = sum(weight.get(t, max(weight.values(), default=1.0)) for t in asked_terms) or 1.0
    shared = [sum(weight.get(t, 0.0) for t in c.terms & asked_terms) for c in candidates]
    overlap = np.array(shared, dtype=float)  # all 0 (ints) when no sentence shares a term
    overlap /= total
    neighbours = np.array([_neighbour_overlap(overlap, candidates, i) for i in range(len(overlap))])
    asked = asks_for(question)
    texts = [c.text for c in candidates]
    holds = np.array([1.0 if holds_asked(t, asked) else -1.0 for t in texts]) if asked else 0.0
    rank = np.array([1.0 / c.n for c in candidates])
    scores = OVERLAP * overlap + NEIGHBOURS * neighbours + ASKED * holds + RANK * rank
    # The bundled embedding model reads English only (docs/EVALUATION.md).
    if SIMILARITY and not is_cjk(question):
        scores = scores + SIMILARITY * _similarity(question, texts, embedder)
    return scores


def _idf(candidates: Sequence[_Candidate]) -> dict[str, float]:
    df: dict[str, int] = {}
    for c in candidates:
        for term in c.terms:
            df[term] = df.get(term, 0) + 1
    n = len(candidates)
    return {term: math.log1p(n / count) for term, count in df.items()}


def _neighbour_overlap(overlap: np.ndarray, candidates: Sequence[_Candidate], i: int) -> float:
    same = [j for j in (i - 1, i + 1) if 0 <= j < len(candidates)]
    near = [overlap[j] for j in same if candidates[j].n == candidates[i].n]
    return float(max(near, default=0.0))


def _similarity(question: str, texts: list[str], embedder: Embedder) -> np.ndarray:
    vectors = embedder.embed_batch([question, *texts])
    return np.clip(vectors[1:] @ vectors[0], 0.0, 1.0)  # type: ignore[no-any-return]


def _quote(
    candidates: Sequence[_Candidate],
    best: int,
    passages: Sequence[ScoredChunk],
    score: float,
    max_sentences: int,
) -> Quote:
    """Returns the best sentence, completed by the next ones of its passage while it is short."""
    first = candidates[best]
    text = passages[first.n - 1].chunk.text
    end = first.end
    taken = 1
    following = [c for c in candidates[best + 1 :] if c.n == first.n]
    for nxt in following:
        if taken >= max_sentences or end - first.start >= MIN_QUOTE_CHARS:
            break
        end = nxt.end
        taken += 1
    return Quote(first.n, first.start, end, text[first.start : end], score)


def supporting_span(passage: str, claims: Sequence[str]) -> tuple[int, int]:
    """Returns the offsets of the passage's sentence that shares the most with claims, words
    rare in the passage counting more (the whole passage when no sentence shares a word)."""
    wanted = {t for claim in claims for t in tokenize(claim)}
    spans = sentence_spans(passage, wrapped=True)
    terms = [set(tokenize(passage[start:end])) for start, end in spans]
    df: dict[str, int] = {}
    for sentence in terms:
        for term in sentence & wanted:
            df[term] = df.get(term, 0) + 1
    best, best_shared = (0, len(passage)), 0.0
    for span, sentence in zip(spans, terms, strict=True):
        shared = sum(1 / df[t] for t in sentence & wanted)
        if shared > best_shared:
            best, best_shared = span, shared
    return best
