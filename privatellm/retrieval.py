"""Retrieval: dense (Chroma) and lexical (BM25) search, fused by reciprocal rank fusion."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from privatellm.config import RetrievalSettings
from privatellm.embeddings import Embedder
from privatellm.lexical import LexicalIndex
from privatellm.store import Collection
from privatellm.text import cjk_language
from privatellm.types import ScoredChunk

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "lexical", "hybrid")


@dataclass(frozen=True)
class Evidence:
    """How strongly the documents speak to a question: what abstention decides on."""

    # Best cosine similarity of any chunk; None where it is not evidence: dense search did not
    # run, or the question's language is one the embedding model does not read.
    dense: float | None
    lexical: float  # best share of the question's idf weight found in one chunk

    def weak(self, min_dense: float, min_lexical: float) -> bool:
        """Returns whether the documents are too far from the question to answer it.

        Similarity decides where it is trusted: on the dev set it separated unanswerable
        English questions cleanly, while their common words gave them lexical coverage as high
        as answerable ones. Elsewhere lexical coverage decides (docs/EVALUATION.md).
        """
        if self.dense is not None:
            return self.dense < min_dense
        return self.lexical < min_lexical


@dataclass(frozen=True)
class Retrieval:
    hits: list[ScoredChunk]  # best first
    evidence: Evidence


class Retriever:
    """Searches one collection; built per query by the service, holds no state of its own."""

    def __init__(
        self,
        collection: Collection,
        lexical: LexicalIndex,
        embedder: Embedder,
        settings: RetrievalSettings,
    ) -> None:
        self._collection = collection
        self._lexical = lexical
        self._embedder = embedder
        self._settings = settings

    def search(
        self,
        query: str,
        k: int | None = None,
        mode: Mode | None = None,
        doc_ids: list[str] | None = None,
    ) -> Retrieval:
        """Returns the k best chunks for query and the evidence behind them.

        doc_ids restricts the search to those documents (None: all of them).
        """
        s = self._settings
        k = k or s.top_k
        mode = mode or s.mode
        depth = max(s.candidates, k)
        weight = self._dense_weight(query)
        wanted = mode == "dense" or (mode == "hybrid" and weight > 0)
        dense = self._dense(query, depth, doc_ids) if wanted else []
        # Lexical search always runs: its coverage is half of the evidence abstention rests on.
        lexical = self._lexical_hits(query, depth, doc_ids)
        evidence = Evidence(
            # Similarity counts as evidence only in languages the embedding model reads.
            dense=max((h.score for h in dense), default=0.0) if dense and weight > 0 else None,
            lexical=self._coverage(query, lexical),
        )
        if mode == "dense":
            hits = dense[:k]
        elif mode == "lexical" or not dense:
            hits = self._resolve(lexical[:k])
        else:
            hits = self._fuse(dense, lexical, k, weight)
        return Retrieval(hits, evidence)

    def _dense_weight(self, query: str) -> float:
        """Returns the dense ranking's weight for query: dense_weight, unless the question is
        Chinese, Japanese or Korean and the embedding model does not declare that language."""
        language = cjk_language(query)
        if language is None or reads(self._embedder.languages, language):
            return self._settings.dense_weight
        return self._settings.dense_weight_cjk

    def _dense(self, query: str, depth: int, doc_ids: list[str] | None) -> list[ScoredChunk]:
        hits = self._collection.query(self._embedder.embed_query(query), depth, doc_ids)
        return sorted(hits, key=lambda h: (-h.score, h.chunk.id))  # ties in a stable order

    def _lexical_hits(
        self, query: str, depth: int, doc_ids: list[str] | None
    ) -> list[tuple[str, int, float]]:
        """Returns (chunk id, index row, BM25 score) triples, best first, ties by chunk id."""
        hits = [
            (self._lexical.chunk_ids[row], row, score)
            for row, score in self._lexical.search(query, depth, doc_ids)
        ]
        return sorted(hits, key=lambda hit: (-hit[2], hit[0]))

    def _coverage(self, query: str, lexical: list[tuple[str, int, float]]) -> float:
        # The top few BM25 hits, not only the first: BM25 favours short chunks that repeat one
        # word over the chunk that holds all of them.
        return max((self._lexical.coverage(query, row) for _, row, _ in lexical[:5]), default=0.0)

    def _resolve(self, lexical: list[tuple[str, int, float]]) -> list[ScoredChunk]:
        chunks = {c.id: c for c in self._collection.chunks([cid for cid, _, _ in lexical])}
        top = lexical[0][2] if lexical else 1.0
        return [
            ScoredChunk(chunks[cid], score / top, lexical=score)
            for cid, _, score in lexical
            if cid in chunks
        ]

    def _fuse(
        self,
        dense: list[ScoredChunk],
        lexical: list[tuple[str, int, float]],
        k: int,
        dense_weight: float,
    ) -> list[ScoredChunk]:
        """Reciprocal rank fusion (Cormack et al. 2009): sum of weight / (rrf_k + rank)."""
        s = self._settings
        fused: dict[str, float] = {}
        for rank, hit in zip(_ranks([h.score for h in dense]), dense, strict=True):
            fused[hit.chunk.id] = fused.get(hit.chunk.id, 0.0) + dense_weight / (s.rrf_k + rank)
        for rank, (cid, _, _) in zip(_ranks([x for _, _, x in lexical]), lexical, strict=True):
            fused[cid] = fused.get(cid, 0.0) + s.lexical_weight / (s.rrf_k + rank)
        best = sorted(fused, key=lambda cid: (-fused[cid], cid))[:k]
        # Scores shown to users are scaled so that first place in both rankings would be 1.
        scale = (dense_weight + s.lexical_weight) / (s.rrf_k + 1) or 1.0
        by_id = {h.chunk.id: h for h in dense}
        bm25 = {cid: score for cid, _, score in lexical}
        missing = self._collection.chunks([cid for cid in best if cid not in by_id])
        by_id.update({c.id: ScoredChunk(c, 0.0) for c in missing})
        return [
            replace(by_id[cid], score=fused[cid] / scale, lexical=bm25.get(cid))
            for cid in best
            if cid in by_id
        ]


def reads(languages: tuple[str, ...], language: str) -> bool:
    """Returns whether a model declaring languages (model card codes: 'zh', 'zh-cn',
    'multilingual') was trained for language."""
    return any(
        code == language or code.startswith(f"{language}-") or code == "multilingual"
        for code in (c.lower().replace("_", "-") for c in languages)
    )


def _ranks(scores: list[float]) -> list[int]:
    """Returns the rank of each score of a best-first list, equal scores sharing the better rank
    (1, 2, 2, 4): fusion then does not depend on the order an index returns ties in, which
    differs between two builds of the same documents (found by tests/test_crash_safety.py)."""
    ranks: list[int] = []
    for position, score in enumerate(scores, 1):
        ranks.append(ranks[-1] if ranks and score == scores[position - 2] else position)
    return ranks
