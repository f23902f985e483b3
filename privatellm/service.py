"""The composition root: builds the embedder, store and engine from settings, once, lazily.

The CLI, the HTTP API and the Streamlit page all talk to a Service and to nothing below it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from privatellm.config import Settings
from privatellm.embeddings import Embedder, build_embedder
from privatellm.engines import Engine
from privatellm.errors import NotFoundError, StoreLockedError
from privatellm.ingest import Ingestor, display_path
from privatellm.prompts import build_messages
from privatellm.store import ChromaStore, Collection, check_collection_name
from privatellm.types import DocumentRecord, IngestReport, Progress, ScoredChunk


class Service:
    """privatellm's operations over one data directory."""

    def __init__(
        self, settings: Settings, embedder: Embedder | None = None, engine: Engine | None = None
    ) -> None:
        self.settings = settings
        # Injected parts replace the ones the settings would build (a shared model in tests).
        if embedder is not None:
            self.__dict__["embedder"] = embedder
        if engine is not None:
            self.__dict__["engine"] = engine

    @cached_property
    def embedder(self) -> Embedder:
        return build_embedder(self.settings.embedding)

    @cached_property
    def engine(self) -> Engine:
        from privatellm.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(self.settings.engine)

    @cached_property
    def store(self) -> ChromaStore:
        return ChromaStore(self.settings.data_dir, self.settings.store)

    def _name(self, collection: str | None) -> str:
        return check_collection_name(collection or self.settings.collection)

    def _writable(self, collection: str | None) -> Collection:
        return self.store.create(
            self._name(collection), self.embedder.name, self.embedder.dimension
        )

    @contextmanager
    def _writing(self) -> Iterator[None]:
        # One writer per data directory: embedded Chroma is not safe for two writing processes,
        # so a second ingest stops at once with a clear message instead of corrupting the store.
        from filelock import FileLock, Timeout

        path = self.settings.data_dir / "write.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise StoreLockedError(
                f"another ingest is running on {self.settings.data_dir}; wait for it to finish"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def ingest(
        self,
        paths: Sequence[Path],
        collection: str | None = None,
        prune: bool = False,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Returns the outcome per file after bringing the collection in step with paths."""
        with self._writing():
            embedder = self.embedder
            ingestor = Ingestor(
                self._writable(collection),
                embedder,
                self.settings.chunking,
                self.settings.ingest,
                batch_chunks=512,
            )
            return ingestor.run(paths, prune=prune, progress=progress)

    def documents(self, collection: str | None = None) -> list[DocumentRecord]:
        """Returns the documents in a collection (no model is loaded for this)."""
        return self.store.open(self._name(collection)).documents()

    def remove(self, id_or_path: str, collection: str | None = None) -> DocumentRecord:
        """Removes one document, named by id, id prefix or path; returns its record."""
        with self._writing():
            target = self.store.open(self._name(collection))
            record = _find(target.documents(), id_or_path)
            target.delete(record)
            return record

    def retrieve(
        self, question: str, collection: str | None = None, top_k: int = 5
    ) -> list[ScoredChunk]:
        """Returns the top_k chunks nearest to the question, best first."""
        target = self.store.open(self._name(collection))
        target.check_model(self.embedder.name, self.embedder.dimension)
        return target.query(self.embedder.embed_query(question), top_k)

    def ask(
        self, question: str, collection: str | None = None
    ) -> tuple[Iterator[str], list[ScoredChunk]]:
        """Returns the streamed answer and the passages it was given, best first."""
        settings = self.settings.engine
        hits = self.retrieve(question, collection, settings.top_k)
        messages, used = build_messages(question, hits, self.engine, settings.max_tokens)
        return self.engine.stream(messages), used


def _find(records: Sequence[DocumentRecord], id_or_path: str) -> DocumentRecord:
    path = display_path(Path(id_or_path).absolute())
    matches = [r for r in records if r.source == path or r.id == id_or_path]
    if not matches and len(id_or_path) >= 6:
        matches = [r for r in records if r.id.startswith(id_or_path)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFoundError(f"no document with id or path {id_or_path!r}")
    raise NotFoundError(f"{id_or_path!r} matches {len(matches)} documents: give more of the id")
