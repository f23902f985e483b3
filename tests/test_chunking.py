"""Chunking: sized in the embedding model's tokens, split at Chinese sentence ends, stable ids."""

from __future__ import annotations

from privatellm.chunking import Chunker, chunk_id
from privatellm.config import ChunkingSettings
from privatellm.embeddings import Embedder
from privatellm.types import Document, Page


def _document(*pages: Page) -> Document:
    return Document(source="/x/doc.txt", content_hash="ab" * 32, pages=list(pages))


def test_chunks_fit_the_token_budget_and_point_into_the_page(real_embedder: Embedder) -> None:
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(400))
    chunker = Chunker(
        ChunkingSettings(chunk_tokens=64, overlap_tokens=8), real_embedder.count_tokens
    )
    chunks = chunker.split(_document(Page(text=text, page=3)))
    assert len(chunks) > 10
    for n, chunk in enumerate(chunks):
        assert real_embedder.count_tokens(chunk.text) <= 64
        assert text[chunk.start : chunk.end] == chunk.text
        assert (chunk.page, chunk.index, chunk.id) == (3, n, chunk_id(chunk.doc_id, n))


def test_chinese_splits_at_sentence_ends(real_embedder: Embedder) -> None:
    text = "".join(f"第{i}句话讲的是一个很长的故事，里面有许多细节。" for i in range(60))
    chunker = Chunker(
        ChunkingSettings(chunk_tokens=60, overlap_tokens=0), real_embedder.count_tokens
    )
    chunks = chunker.split(_document(Page(text=text)))
    assert len(chunks) > 3
    assert all(c.text.endswith("。") for c in chunks[:-1])


def test_ids_are_stable_across_runs(real_embedder: Embedder) -> None:
    chunker = Chunker(ChunkingSettings(), real_embedder.count_tokens)
    doc = _document(Page(text="alpha " * 500, page=1), Page(text="beta " * 500, page=2))
    assert [c.id for c in chunker.split(doc)] == [c.id for c in chunker.split(doc)]
    assert len({c.id for c in chunker.split(doc)}) == len(chunker.split(doc))
