"""Ingest orchestration: find files, skip what is unchanged, load, chunk, embed, store.

file -> loader -> pages -> chunker -> chunks -> embedder -> store. This module decides what to do
with each file and in what order; the work itself is done by the modules it calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from privatellm.config import ChunkingSettings, IngestSettings
from privatellm.embeddings import Embedder
from privatellm.loaders import READERS, supported
from privatellm.parsing import Job, Parsed, parse_all
from privatellm.store import Collection
from privatellm.types import (
    Chunk,
    Document,
    DocumentRecord,
    FileOutcome,
    IngestReport,
    Outcome,
    Progress,
    doc_id_of,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


def display_path(path: Path | str) -> str:
    """Returns the path as text that can be printed and stored, whatever bytes its name holds."""
    # Non-UTF-8 names reach Python as lone surrogates, which neither a terminal nor Chroma accepts.
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


@dataclass
class Found:
    files: list[Path] = field(default_factory=list)
    skipped: list[FileOutcome] = field(default_factory=list)


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def discover(paths: Sequence[Path], follow_symlinks: bool) -> Found:
    """Returns the supported files under paths (recursively) and why the others were skipped."""
    found = Found()
    roots = [p.resolve() for p in paths]
    seen_files: set[Path] = set()
    for path in paths:
        _visit(path.absolute(), roots, follow_symlinks, found, seen_files, set())
    return found


def _visit(
    path: Path,
    roots: Sequence[Path],
    follow: bool,
    found: Found,
    seen_files: set[Path],
    seen_dirs: set[tuple[int, int]],
) -> None:
    def skip(reason: str) -> None:
        found.skipped.append(FileOutcome(display_path(path), "skipped", reason))

    try:
        target = path.resolve(strict=True)
    except RuntimeError:
        return skip("symlink loop")
    except OSError:
        return skip("broken symlink" if path.is_symlink() else "cannot be read")
    if path.is_symlink() and not follow and not _inside(target, roots):
        return skip("symlink to outside the ingested folders (setting ingest.follow_symlinks)")
    if target.is_dir():
        try:
            stat = target.stat()
            key = (stat.st_dev, stat.st_ino)
            if key in seen_dirs:
                return skip("symlink loop")
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as e:
            return skip(f"cannot list folder ({e.strerror})")
        for entry in entries:
            if not entry.name.startswith("."):
                _visit(Path(entry.path), roots, follow, found, seen_files, seen_dirs | {key})
    elif not target.is_file():
        skip("not a regular file")  # a FIFO or device would block or never end
    elif not supported(path):
        skip(f"unsupported file type {path.suffix or '(no extension)'}")
    elif target not in seen_files:
        seen_files.add(target)
        found.files.append(path)


@dataclass
class _Pending:
    """A loaded document waiting for its chunks to be embedded and written."""

    document: Document
    chunks: list[Chunk]
    replaces: DocumentRecord | None  # the record this document supersedes: older version, or move


class _Silent:
    def start(self, total: int) -> None:
        pass

    def advance(self, files: int, chunks: int, ocr_pages: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


# Below this many files, starting parser processes costs more than it saves; unless they are
# PDFs or images, whose pages may need OCR (seconds each), which must not hold up the embedder.
PARALLEL_FROM_FILES = 8


class Ingestor:
    """Runs ingests of paths into one collection; holds the collection's records meanwhile."""

    def __init__(
        self,
        collection: Collection,
        embedder: Embedder,
        chunking: ChunkingSettings,
        settings: IngestSettings,
        batch_chunks: int,
    ) -> None:
        self._collection = collection
        self._embedder = embedder
        self._chunking = chunking
        self._settings = settings
        self._batch_chunks = batch_chunks
        self._records = {r.source: r for r in collection.documents()}
        self._by_hash = {r.content_hash: r for r in self._records.values()}
        self._claimed: dict[str, str] = {}  # content hash -> first path of this run holding it
        collection.repair(self._records.values())

    def run(
        self, paths: Sequence[Path], prune: bool = False, progress: Progress | None = None
    ) -> IngestReport:
        """Returns what happened to each file; the collection holds every good file afterwards."""
        bar = progress or _Silent()
        found = discover(paths, self._settings.follow_symlinks)
        report = IngestReport(outcomes=list(found.skipped))
        bar.start(len(found.files))
        jobs = [self._job(path) for path in found.files]
        parsed = parse_all(
            jobs,
            self._chunking,
            self._embedder.count_tokens,
            self._settings,
            parallel=len(jobs) >= PARALLEL_FROM_FILES
            or (len(jobs) > 1 and any(j.path.suffix.lower() in READERS for j in jobs)),
        )
        pending: list[_Pending] = []
        for result in parsed:
            item = self._decide(result, report)
            if item is None:
                bar.advance(1, 0)
                continue
            pending.append(item)
            # Embedding many documents' chunks in one call lets the model sort them by length
            # and waste less work on padding.
            if sum(len(p.chunks) for p in pending) >= self._batch_chunks:
                self._write(pending, report, bar)
                pending = []
        self._write(pending, report, bar)
        if prune:
            self._prune(paths, report)
        bar.close()
        report.total_chunks = self._collection.count()
        return report

    def _job(self, path: Path) -> Job:
        shown = display_path(path)
        old = self._records.get(shown)
        return Job(path, shown, old.content_hash if old else None)

    def _decide(self, parsed: Parsed, report: IngestReport) -> _Pending | None:
        shown = parsed.job.shown
        if parsed.error:
            report.outcomes.append(FileOutcome(shown, "failed", parsed.error))
            return None
        if parsed.unchanged:
            report.outcomes.append(FileOutcome(shown, "unchanged", doc_id=self._records[shown].id))
            return None
        old = self._records.get(shown)
        first = self._claimed.setdefault(parsed.digest, shown)
        twin = self._by_hash.get(parsed.digest)
        original = first if first != shown else twin.source if twin else None
        if original is not None and os.path.exists(original):
            if old is not None:  # this file now repeats another one: its old text is gone
                self._forget(old)
            same = f"same content as {original}"
            report.outcomes.append(
                FileOutcome(shown, "duplicate", same, doc_id=doc_id_of(parsed.digest))
            )
            return None
        assert parsed.document is not None
        # A file whose content was ingested under a path that is gone has moved.
        return _Pending(parsed.document, parsed.chunks, old or twin)

    def _write(self, pending: list[_Pending], report: IngestReport, bar: Progress) -> None:
        texts = [c.text for p in pending for c in p.chunks]
        if not texts:
            return
        vectors = self._embedder.embed_batch(texts)
        offset = 0
        for item in pending:
            n = len(item.chunks)
            record = self._store(item, vectors[offset : offset + n])
            offset += n
            outcome: Outcome = "updated" if item.replaces else "added"
            document = item.document
            detail = "; ".join(document.warnings)
            report.outcomes.append(
                FileOutcome(
                    record.source, outcome, detail, n, record.id, record.pages, document.ocr_pages
                )
            )
            bar.advance(1, n, document.ocr_pages)

    def _store(self, item: _Pending, vectors: NDArray[np.float32]) -> DocumentRecord:
        document = item.document
        record = DocumentRecord(
            id=document.doc_id,
            source=document.source,
            content_hash=document.content_hash,
            pages=len(document.pages),
            chunks=len(item.chunks),
            ingested_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        self._collection.add(record, item.chunks, vectors)
        # The old version goes only after the new one is whole: the file is never missing.
        moved = self._by_hash.get(record.content_hash)
        if moved is not None and moved.source != record.source:
            self._records.pop(moved.source, None)  # same id: the upsert above rewrote it
        old = item.replaces
        if old is not None:
            self._records.pop(old.source, None)
            if old.id != record.id:
                self._collection.delete(old)
            elif old.chunks > record.chunks:  # same text, chunked with other settings before
                self._collection.delete(old, keep=record.chunks)
        self._records[record.source] = record
        self._by_hash[record.content_hash] = record
        return record

    def _forget(self, record: DocumentRecord) -> None:
        self._collection.delete(record)
        del self._records[record.source]
        self._by_hash.pop(record.content_hash, None)

    def _prune(self, paths: Sequence[Path], report: IngestReport) -> None:
        for record in vanished(list(self._records.values()), paths):
            self._forget(record)
            report.outcomes.append(FileOutcome(record.source, "removed", doc_id=record.id))


def vanished(records: Iterable[DocumentRecord], paths: Sequence[Path]) -> list[DocumentRecord]:
    """Returns the records whose file is gone and was one of paths or lay under one of them."""
    shown = [display_path(p.absolute()).rstrip(os.sep) for p in paths]
    under = tuple(s + os.sep for s in shown)
    return [
        r
        for r in records
        if (r.source in shown or r.source.startswith(under)) and not os.path.lexists(r.source)
    ]
