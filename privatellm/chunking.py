"""Chunking: a Document's pages in, chunks sized in tokens of the embedding model out."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from privatellm.config import ChunkingSettings
from privatellm.types import Chunk, Document, overlapping

# Paragraphs, lines, then sentences: Chinese ends them with 。！？； and no space, English with
# punctuation and a space; then clauses, words, characters as the last resort.
SEPARATORS = [
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    "；",
    ". ",
    "! ",
    "? ",
    "; ",
    "，",
    ", ",
    " ",
    "",
]


def chunk_id(doc_id: str, index: int) -> str:
    """Returns a chunk id that is the same on every ingest of the same content."""
    return hashlib.sha256(f"{doc_id}:{index}".encode()).hexdigest()[:32]


class Chunker:
    """Splits documents with LangChain's recursive splitter, measuring length in model tokens."""

    def __init__(self, settings: ChunkingSettings, count_tokens: Callable[[str], int]) -> None:
        # Imported here: only ingest splits, and the import cost `retrieve` 0.13-0.2 s of start-up.
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        overlap = min(settings.overlap_tokens, settings.chunk_tokens // 2)
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=settings.chunk_tokens,
            chunk_overlap=overlap,
            length_function=count_tokens,
            separators=SEPARATORS,
            keep_separator="end",
        )

    def split(self, document: Document) -> list[Chunk]:
        """Returns the document's chunks in reading order, with pages and character offsets."""
        chunks: list[Chunk] = []
        for page in document.pages:
            if not page.text.strip():
                continue
            # LangChain's add_start_index subtracts the overlap (here in tokens) from a character
            # offset and then misses the chunk; each chunk starts after the previous one's start,
            # so searching from there finds it.
            start = -1
            for piece in self._splitter.split_text(page.text):
                start = page.text.find(piece, start + 1)
                end = start + len(piece)
                chunks.append(
                    Chunk(
                        id=chunk_id(document.doc_id, len(chunks)),
                        doc_id=document.doc_id,
                        source=document.source,
                        page=page.page,
                        index=len(chunks),
                        start=start,
                        end=end,
                        text=piece,
                        boxes=overlapping(page.boxes, start, end),
                    )
                )
        return chunks
