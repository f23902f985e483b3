"""The few values that cross module lines."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

# Where a recognised line of an OCR'd page sits: (start, end) character offsets of the line in the
# page text, then its box (x0, y0, x1, y1) as fractions of the page's width and height from the
# top left corner.
Box = tuple[int, int, float, float, float, float]


def overlapping(boxes: Iterable[Box], start: int, end: int) -> tuple[Box, ...]:
    """Returns the boxes of the lines that hold some of the characters start to end."""
    return tuple(box for box in boxes if box[0] < end and box[1] > start)


@dataclass(frozen=True)
class Page:
    """Text of one page (paged formats) or of a whole file (page is None)."""

    text: str
    page: int | None = None  # 1-based physical page for PDFs and images, None for unpaged formats
    ocr: bool = False  # the text was recognised in the page's image, not read from a text layer
    boxes: tuple[Box, ...] = ()  # OCR'd pages: where each recognised line sits
    note: str = ""  # what went wrong reading this page, for the file's line in the summary


@dataclass(frozen=True)
class Reading:
    """How files are read: the ingest settings loaders need, picklable for parser processes."""

    ocr: Literal["auto", "always", "off"] = "auto"
    ocr_page_timeout_s: float = 60.0
    ocr_max_pages: int = 1000
    ocr_threads: int = 0  # CPU threads per parser process for OCR (0: all cores)
    tables: bool = False


DEFAULT_READING = Reading()


@dataclass(frozen=True)
class Document:
    """A loaded file: its pages plus what identifies it."""

    source: str  # the file path as ingested (absolute)
    content_hash: str  # sha256 of the file bytes
    pages: list[Page]
    warnings: list[str] = field(default_factory=list)

    @property
    def ocr_pages(self) -> int:
        """Returns how many of the document's pages were read by OCR."""
        return sum(1 for page in self.pages if page.ocr)

    @property
    def doc_id(self) -> str:
        return doc_id_of(self.content_hash)


def doc_id_of(content_hash: str) -> str:
    """Returns the id of the document whose bytes have this sha256: documents are identified by
    content, so the same bytes under two names are one document."""
    return content_hash[:16]


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough for the embedding model."""

    id: str  # stable: hash of document id + position
    doc_id: str
    source: str
    page: int | None
    index: int  # position of the chunk in its document
    start: int  # character offsets into the page text
    end: int
    text: str
    boxes: tuple[Box, ...] = ()  # from an OCR'd page: the lines the chunk overlaps


@dataclass(frozen=True)
class ChunkText:
    """A stored chunk's text and owner: what the lexical index is built from."""

    id: str
    doc_id: str
    source: str
    text: str


@dataclass(frozen=True)
class ScoredChunk:
    chunk: Chunk
    score: float  # what the ranking used, 0..1, higher is better (see `retrieval`)
    dense: float | None = None  # cosine similarity to the question, when dense search found it
    lexical: float | None = None  # BM25 score, when lexical search found it


@dataclass(frozen=True)
class DocumentRecord:
    """What the catalog knows about an ingested document."""

    id: str
    source: str
    content_hash: str
    pages: int
    chunks: int
    ingested_at: str  # ISO 8601, UTC


Outcome = Literal["added", "updated", "unchanged", "removed", "duplicate", "skipped", "failed"]


@dataclass(frozen=True)
class FileOutcome:
    path: str
    outcome: Outcome
    detail: str = ""  # reason for failed/skipped, warning for a document ingested with one
    chunks: int = 0
    doc_id: str = ""  # the document the file is (or repeats); "" when it was not ingested
    pages: int = 0  # of an ingested file
    ocr_pages: int = 0  # of those, the pages read by OCR


@dataclass
class IngestReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    total_chunks: int = 0  # chunks in the collection after the run

    def paths(self, outcome: Outcome) -> list[str]:
        return [o.path for o in self.outcomes if o.outcome == outcome]

    def to_json(self) -> dict[str, object]:
        """Returns the `privatellm ingest --json` shape other tools rely on."""
        return {
            "added": self.paths("added"),
            "updated": self.paths("updated"),
            "unchanged": self.paths("unchanged"),
            "removed": self.paths("removed"),
            "skipped": [
                {"path": o.path, "reason": o.detail}
                for o in self.outcomes
                if o.outcome in ("skipped", "duplicate")
            ],
            "failed": [
                {"path": o.path, "error": o.detail} for o in self.outcomes if o.outcome == "failed"
            ],
            "ocr": [
                {"path": o.path, "pages": o.pages, "ocr_pages": o.ocr_pages}
                for o in self.outcomes
                if o.ocr_pages
            ],
            "chunks": self.total_chunks,
        }


@dataclass(frozen=True)
class Status:
    """What answers come from: the configured models and one collection's contents."""

    engine: str  # engine kind
    model: str  # the chat model's label (config.model_label)
    embedding: str  # the embedding model's label
    collection: str
    documents: int
    chunks: int


class Progress(Protocol):
    """Where a long operation reports progress (the CLI shows a live bar)."""

    def start(self, total: int) -> None: ...

    def advance(self, files: int, chunks: int, ocr_pages: int = 0) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Citation:
    """A passage an answer cites: [n] in the answer text is passage n of the prompt, and the
    quote is the span of it that supports the answer."""

    n: int
    source: str
    page: int | None
    text: str  # the whole passage (a chunk)
    score: float
    doc_id: str = ""
    start: int = 0  # the chunk's offsets into its page's text
    end: int = 0
    quote_start: int = 0  # the supporting span: offsets into text
    quote_end: int = 0

    @property
    def quote(self) -> str:
        return self.text[self.quote_start : self.quote_end]

    @classmethod
    def of(cls, n: int, hit: ScoredChunk, span: tuple[int, int] | None = None) -> Citation:
        """Returns the citation of passage n; span (offsets into it) is its quote, else all."""
        c = hit.chunk
        quote_start, quote_end = span or (0, len(c.text))
        return cls(
            n=n,
            source=c.source,
            page=c.page,
            text=c.text,
            score=round(hit.score, 4),
            doc_id=c.doc_id,
            start=c.start,
            end=c.end,
            quote_start=quote_start,
            quote_end=quote_end,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "n": self.n,
            "source": self.source,
            "doc_id": self.doc_id,
            "page": self.page,
            "text": self.text,
            "score": self.score,
            "quote": {
                "text": self.quote,
                "start": self.quote_start,  # in the passage
                "end": self.quote_end,
                "page_start": self.start + self.quote_start,  # in the page's text
                "page_end": self.start + self.quote_end,
            },
        }


AnswerKind = Literal["generated", "quoted", "abstained"]


@dataclass(frozen=True)
class Answer:
    """A finished answer: text with [n] markers, what they cite, and what backs it."""

    question: str  # as asked
    standalone: str  # the question retrieval used (a follow-up rewritten to stand alone)
    text: str
    citations: list[Citation]
    passages: list[ScoredChunk]  # every passage the model was given, in prompt order
    abstained: bool  # True: the documents did not hold enough to answer; the model was not called
    unsupported: list[str] = field(default_factory=list)  # sentences no passage supports
    quoted: bool = False  # the text is a span of a passage, not the model's words

    @property
    def kind(self) -> AnswerKind:
        """Returns what the user got: the model's words, a quote, or "the documents don't say"."""
        return "abstained" if self.abstained else "quoted" if self.quoted else "generated"

    @property
    def uncited(self) -> list[tuple[int, ScoredChunk]]:
        """Returns the passages consulted that the answer does not cite, with their [n]."""
        cited = {c.n for c in self.citations}
        return [(n, p) for n, p in enumerate(self.passages, 1) if n not in cited]

    def to_json(self) -> dict[str, object]:
        """Returns the `privatellm ask --json` shape."""
        return {
            "answer": self.text,
            "answer_kind": self.kind,
            "citations": [c.to_json() for c in self.citations],
            "consulted": [
                {"n": n, "source": p.chunk.source, "page": p.chunk.page, "score": p.score}
                for n, p in self.uncited
            ],
            "abstained": self.abstained,
            "unsupported": self.unsupported,
            "question": self.standalone,
        }
