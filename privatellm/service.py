"""The composition root: builds the embedder, store and engine from settings, once, lazily, and
wires them to the modules that do the work.

The CLI, the HTTP API and the Streamlit page all talk to a Service and to nothing below it. The
jobs themselves live elsewhere: answering in `answering`, summaries in `summaries`, the write lock
in `locking`, the lexical index's upkeep in `lexical`, uploads in `uploads`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from privatellm.answering import Answerer, Reply
from privatellm.chatmodels import ChatModels
from privatellm.config import AnswerMode, Settings, model_label, with_engine
from privatellm.embeddings import Embedder
from privatellm.engines import DEFAULT, Engine, Message, Sampling, build_engine
from privatellm.errors import ConfigError, NotFoundError
from privatellm.gate import GatedModel
from privatellm.ingest import Ingestor, display_path, vanished
from privatellm.lexical import LexicalIndex, LexicalIndexes
from privatellm.locking import WriteLock
from privatellm.pages import document_page
from privatellm.registry import Registry, resolve_names
from privatellm.reindex import Embedders, Reindexed, choose_embedding, reindex
from privatellm.retrieval import Mode, Retrieval, Retriever
from privatellm.store import ChromaStore, Collection, EmbeddingModel, check_collection_name
from privatellm.summaries import Summarizer, document_texts
from privatellm.types import (
    DocumentRecord,
    FileOutcome,
    IngestReport,
    Progress,
    ScoredChunk,
    Status,
)
from privatellm.uploads import Upload, ingest_uploads


class Service:
    """privatellm's operations over one data directory."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder | None = None,
        engine: Engine | None = None,
        *,
        store: ChromaStore | None = None,
        lock: WriteLock | None = None,
    ) -> None:
        """Parts given here replace the ones the settings would build: a model shared by tests,
        or the store and lock of the service this one is a variant of (`with_engine`).

        engine.model and embedding.model may name registered models (`privatellm models list`)."""
        self.registry = Registry(settings.data_dir)
        settings = resolve_names(settings, self.registry)
        self.settings = settings
        self.lock = lock or WriteLock(settings.data_dir)
        self.lexicals = LexicalIndexes(settings.data_dir / "lexical", self.lock)
        self.chat_model = GatedModel(
            (lambda: engine) if engine is not None else lambda: build_engine(settings.engine),
            settings.engine,
        )
        if embedder is not None:
            self.__dict__["embedder"] = embedder
        if store is not None:
            self.__dict__["store"] = store

    def with_engine(self, **changes: Any) -> Service:
        """Returns a service over the same store and embedding model whose engine settings have
        these changes (the page's model picker); each service loads its own engine."""
        settings = with_engine(self.settings, **changes)
        variant = Service(settings, self.embedder, store=self.store, lock=self.lock)
        variant.__dict__["embedders"] = self.embedders  # collections' models: loaded once
        return variant

    @cached_property
    def chat_models(self) -> ChatModels[Service]:
        """The chat models this service can answer with, by name."""
        return ChatModels(
            self,
            self.settings.engine,
            self.registry,
            lambda kind, model, lora: self.with_engine(kind=kind, model=model, lora=lora),
        )

    def for_model(self, name: str | None) -> Service:
        """Returns the service answering with the chat model called name (None: the configured
        one); see `chatmodels`."""
        return self.chat_models.service(name)

    @cached_property
    def embedder(self) -> Embedder:
        """The configured embedding model: the one new collections get."""
        return self.embedders.get(self.settings.embedding)

    @cached_property
    def embedders(self) -> Embedders:
        """The embedding models of this data directory's collections, each loaded once."""
        return Embedders(self.registry, self.settings.embedding, lambda: self.embedder)

    def embedder_for(self, target: Collection) -> Embedder:
        """Returns the embedding model target was built with (see `reindex.Embedders`)."""
        return self.embedders.for_collection(target)

    @property
    def engine(self) -> Engine:
        return self.chat_model.engine

    @cached_property
    def store(self) -> ChromaStore:
        return ChromaStore(self.settings.data_dir, self.settings.store)

    @cached_property
    def answerer(self) -> Answerer:
        return Answerer(self.chat_model, self.embedder, self.settings.answer)

    @cached_property
    def summarizer(self) -> Summarizer:
        return Summarizer(self.chat_model)

    def _name(self, collection: str | None) -> str:
        return check_collection_name(collection or self.settings.collection)

    def writable(self, collection: str | None = None) -> Collection:
        """Returns the collection to write into, created for the configured embedding model if
        new; the caller holds `lock`."""
        name = self._name(collection)
        self.store.settle(name)
        if name in self.store.names():
            return self.store.open(name)
        e, configured = self.embedder, self.settings.embedding
        return self.store.create(name, e.name, e.dimension, configured.kind, configured.model)

    # -- ingestion -------------------------------------------------------------------------------

    def ingest(
        self,
        paths: Sequence[Path],
        collection: str | None = None,
        prune: bool = False,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Returns the outcome per file after bringing the collection in step with paths."""
        with self.lock.held():
            return self._ingest(paths, collection, prune, progress)

    def _ingest(
        self,
        paths: Sequence[Path],
        collection: str | None,
        prune: bool = False,
        progress: Progress | None = None,
    ) -> IngestReport:
        target = self.writable(collection)
        embedder = self.embedder_for(target)
        ingestor = Ingestor(
            target, embedder, self.settings.chunking, self.settings.ingest, batch_chunks=512
        )
        report = ingestor.run(paths, prune=prune, progress=progress)
        self.lexicals.sync(target)
        return report

    def prune(self, paths: Sequence[Path], collection: str | None = None) -> IngestReport:
        """Returns the documents removed: those whose file is gone and was one of paths or lay
        under one of them. No file is read (a watched folder's deletions and moves out)."""
        name = self._name(collection)
        with self.lock.held():
            if name not in self.store.names():
                return IngestReport()
            target = self.store.open(name)
            gone = vanished(target.documents(), paths)
            for record in gone:
                target.delete(record)
            if gone:
                self.lexicals.sync(target)
            removed = [FileOutcome(r.source, "removed", doc_id=r.id) for r in gone]
            return IngestReport(removed, target.count())

    def ingest_uploads(
        self,
        files: Sequence[Upload],
        collection: str | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Saves files handed over as bytes into the data dir and ingests them; returns one
        outcome per upload, in order, named as sent, with its document id.

        A file that fails (or repeats a document already there) leaves nothing behind, and the
        version it was meant to replace stays.
        """
        name = self._name(collection)
        with self.lock.held():
            return ingest_uploads(
                self._uploads_dir(name),
                files,
                lambda paths: self._ingest(paths, name, progress=progress),
            )

    def _uploads_dir(self, name: str) -> Path:
        return (self.settings.data_dir / "uploads" / name).absolute()

    # -- collections and documents ---------------------------------------------------------------

    def collections(self) -> list[str]:
        """Returns the names of the collections in the store, sorted."""
        return self.store.names()

    def create_collection(self, name: str) -> None:
        """Creates an empty collection for the configured embedding model (no-op if it exists)."""
        with self.lock.held():
            self.writable(name)

    def delete_collection(self, name: str) -> None:
        """Deletes a collection with its documents, lexical index and uploaded files."""
        name = check_collection_name(name)
        with self.lock.held():
            self.store.delete(name)
            self.lexicals.delete(name)
            shutil.rmtree(self._uploads_dir(name), ignore_errors=True)

    def reindex(
        self, collection: str | None, embedding: str, progress: Progress | None = None
    ) -> Reindexed:
        """Returns what was done after re-embedding a collection's stored chunks with embedding
        model `embedding` (a registered name or a model folder) and switching the collection to
        them in one step; a crash meanwhile leaves it answering with its old model."""
        name = self._name(collection)
        settings = choose_embedding(self.registry, embedding, self.settings.embedding)
        embedder = self.embedders.get(settings)
        model = EmbeddingModel(embedder.name, embedder.dimension, settings.kind, settings.model)
        with self.lock.held():
            batch = self.settings.store.write_batch
            done = reindex(self.store, name, embedder, model, batch, progress)
            self.lexicals.sync(self.store.open(name))  # a no-op unless it was out of step before
        return done

    def status(self, collection: str | None = None) -> Status:
        """Returns what answers come from: models (as configured, none loaded) and the contents."""
        name = self._name(collection)
        exists = name in self.collections()
        records = self.documents(name) if exists else []
        # a collection is searched with the model it was built with, not the configured one
        built = self.store.open(name).embedding.name if exists else ""
        return Status(
            engine=self.settings.engine.kind,
            model=self.chat_models.default,
            embedding=built or model_label(self.settings.embedding.model),
            collection=name,
            documents=len(records),
            chunks=sum(r.chunks for r in records),
        )

    def documents(self, collection: str | None = None) -> list[DocumentRecord]:
        """Returns the documents in a collection (no model is loaded for this)."""
        return self.store.open(self._name(collection)).documents()

    def remove(self, id_or_path: str, collection: str | None = None) -> DocumentRecord:
        """Removes one document, named by id, id prefix or path; returns its record."""
        with self.lock.held():
            target = self.store.open(self._name(collection))
            record = find_document(target.documents(), id_or_path)
            target.delete(record)
            self.lexicals.sync(target)
            if display_path(self._uploads_dir(target.name)) == str(Path(record.source).parent):
                Path(record.source).unlink(missing_ok=True)  # privatellm's own copy of an upload
            return record

    # -- retrieval -------------------------------------------------------------------------------

    def lexical(self, collection: str | None = None) -> LexicalIndex:
        """Returns the collection's lexical index, in step with the store."""
        return self.lexicals.read(self.store.open(self._name(collection)))

    def retriever(self, collection: str | None = None) -> Retriever:
        """Returns a retriever over one collection, lexical index in step with the store."""
        target = self.store.open(self._name(collection))
        embedder = self.embedder_for(target)
        lexical = self.lexicals.read(target)
        return Retriever(target, lexical, embedder, self.settings.retrieval)

    def search(
        self,
        question: str,
        collection: str | None = None,
        top_k: int | None = None,
        mode: Mode | None = None,
        sources: Sequence[str] | None = None,
    ) -> Retrieval:
        """Returns the best chunks for question and the evidence behind them.

        sources (document ids, id prefixes or paths) restricts the search to those documents.
        """
        doc_ids = None
        if sources:
            records = self.documents(collection)
            doc_ids = [find_document(records, s).id for s in sources]
        return self.retriever(collection).search(question, top_k, mode, doc_ids)

    def retrieve(
        self,
        question: str,
        collection: str | None = None,
        top_k: int | None = None,
        mode: Mode | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[ScoredChunk]:
        """Returns the top_k chunks for the question, best first."""
        return self.search(question, collection, top_k, mode, sources).hits

    def neighbours(
        self, hit: ScoredChunk, count: int, collection: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Returns the texts of up to count chunks before and after hit in its document."""
        if count <= 0:
            return [], []
        return self.store.open(self._name(collection)).neighbours(hit.chunk, count)

    def page_image(
        self,
        doc_id: str,
        page: int,
        highlight: tuple[int, int] | None = None,
        collection: str | None = None,
    ) -> bytes:
        """Returns a PNG of one page (from 1) of a PDF or image document, the characters
        highlight (START, END offsets into its stored page text, as chunks give them) marked."""
        record = find_document(self.documents(collection), doc_id)
        boxes = self.store.open(self._name(collection)).page_boxes(record.id, page)
        return document_page(record, page, highlight, boxes)

    # -- answering -------------------------------------------------------------------------------

    def ask(
        self,
        question: str,
        collection: str | None = None,
        history: Sequence[Message] = (),
        top_k: int | None = None,
        mode: Mode | None = None,
        sources: Sequence[str] | None = None,
        sampling: Sampling = DEFAULT,
        system: str | None = None,
        answer_mode: AnswerMode | None = None,
    ) -> Reply:
        """Returns the answer being generated: iterate it for the text, then call .answer().

        answer_mode (default: setting answer.mode): generate, extract or auto. system, if
        given, is sent ahead of the passages as the system prompt."""
        standalone = self.answerer.condense(question, history)
        found = self.search(standalone, collection, top_k, mode, sources)
        return self.answerer.reply(question, standalone, found, sampling, system, answer_mode)

    def chat(self, messages: Sequence[Message], sampling: Sampling = DEFAULT) -> Iterator[str]:
        """Yields the model's reply to a conversation, with no documents involved."""
        return self.chat_model.generate(messages, sampling)

    def count_tokens(self, text: str) -> int:
        """Returns the length of text in the chat model's tokens."""
        return self.chat_model.count_tokens(text)

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Returns the embedding of each text and how many model tokens they held."""
        vectors = self.embedder.embed_batch(list(texts))
        return vectors.tolist(), sum(self.embedder.count_tokens(t) for t in texts)

    # -- summaries -------------------------------------------------------------------------------

    def summarize(
        self, id_or_path: str, collection: str | None = None, instructions: str | None = None
    ) -> Iterator[str]:
        """Yields a summary of one document."""
        target = self.store.open(self._name(collection))
        record = find_document(target.documents(), id_or_path)
        return self.summarizer.summarize(document_texts(target, record), instructions)

    def summarize_text(self, text: str, instructions: str | None = None) -> Iterator[str]:
        """Yields a summary of text."""
        if not text.strip():
            raise ConfigError("nothing to summarize: the text is empty")
        return self.summarizer.summarize([text], instructions)

    def summarize_documents(
        self,
        sources: Sequence[str] | None = None,
        collection: str | None = None,
        query: str | None = None,
        instructions: str | None = None,
    ) -> Iterator[str]:
        """Yields a summary of documents (ids, id prefixes or paths; None: all of them): of the
        passages retrieved for query if one is given, else of their whole text."""
        if query:
            texts = [h.chunk.text for h in self.retrieve(query, collection, sources=sources)]
        else:
            target = self.store.open(self._name(collection))
            records = target.documents()
            chosen = [find_document(records, s) for s in sources] if sources else records
            texts = [t for r in chosen for t in document_texts(target, r)]
        if not texts:
            raise NotFoundError("nothing to summarize: no passage matches")
        return self.summarizer.summarize(texts, instructions)


def find_document(records: Sequence[DocumentRecord], id_or_path: str) -> DocumentRecord:
    """Returns the one record named by id, id prefix (6 characters or more) or path."""
    path = display_path(Path(id_or_path).absolute())
    matches = [r for r in records if r.source == path or r.id == id_or_path]
    if not matches and len(id_or_path) >= 6:
        matches = [r for r in records if r.id.startswith(id_or_path)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFoundError(f"no document with id or path {id_or_path!r}")
    raise NotFoundError(f"{id_or_path!r} matches {len(matches)} documents: give more of the id")
