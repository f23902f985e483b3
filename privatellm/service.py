"""The composition root: builds the embedder, store and engine from settings, once, lazily.

The CLI, the HTTP API and the Streamlit page all talk to a Service and to nothing below it.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from privatellm.chunking import chunk_id
from privatellm.citations import attribute, citations, render, split_sentences
from privatellm.config import EngineSettings, Settings
from privatellm.embeddings import Embedder, build_embedder
from privatellm.engines import DEFAULT, Engine, Message, Sampling, build_engine
from privatellm.errors import ConfigError, NotFoundError, StoreLockedError
from privatellm.gate import ModelGate
from privatellm.ingest import Ingestor, display_path
from privatellm.lexical import LexicalIndex
from privatellm.prompts import (
    build_messages,
    condense_messages,
    summary_budget,
    summary_messages,
)
from privatellm.retrieval import Mode, Retrieval, Retriever
from privatellm.store import ChromaStore, Collection, check_collection_name
from privatellm.types import (
    Answer,
    DocumentRecord,
    IngestReport,
    Progress,
    ScoredChunk,
    Status,
)
from privatellm.uploads import Upload, stage


class Service:
    """privatellm's operations over one data directory."""

    def __init__(
        self, settings: Settings, embedder: Embedder | None = None, engine: Engine | None = None
    ) -> None:
        self.settings = settings
        self._lexicals: dict[str, tuple[int | None, LexicalIndex]] = {}
        engine_settings = settings.engine
        self._gate = ModelGate(engine_settings.wait_seconds, engine_settings.max_waiting)
        # Writers in this process (the page's tabs, the API's requests) take turns; the file
        # lock in _writing() keeps out writers in other processes.
        self._write_lock = threading.Lock()
        # Injected parts replace the ones the settings would build (a shared model in tests).
        if embedder is not None:
            self.__dict__["embedder"] = embedder
        if engine is not None:
            self.__dict__["engine"] = engine

    def with_engine(self, **changes: Any) -> Service:
        """Returns a service over the same store and embedding model whose engine settings have
        these changes (the page's model picker); each service loads its own engine."""
        try:
            engine = EngineSettings.model_validate({**self.settings.engine.model_dump(), **changes})
        except ValidationError as e:
            first = e.errors()[0]
            raise ConfigError(f"invalid setting engine.{first['loc'][0]}: {first['msg']}") from e
        settings = self.settings.model_copy(update={"engine": engine})
        clone = Service(settings, embedder=self.embedder)
        clone.__dict__["store"] = self.store
        clone._write_lock = self._write_lock  # one store, one writer at a time
        return clone

    @cached_property
    def embedder(self) -> Embedder:
        return build_embedder(self.settings.embedding)

    @cached_property
    def engine(self) -> Engine:
        return build_engine(self.settings.engine)

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
    def _writing(self, wait: bool = True) -> Iterator[None]:
        """Holds the data directory for writing; wait=False fails at once if a writer in this
        process holds it (a reader's optional save must never wait behind an ingest)."""
        busy = StoreLockedError(
            f"another ingest is running on {self.settings.data_dir}; wait for it to finish"
        )
        if not self._write_lock.acquire(blocking=wait):
            raise busy
        try:
            with self._file_lock(busy):
                yield
        finally:
            self._write_lock.release()

    @contextmanager
    def _file_lock(self, busy: StoreLockedError) -> Iterator[None]:
        # One writer per data directory: embedded Chroma is not safe for two writing processes,
        # so a second ingest stops at once with a clear message instead of corrupting the store.
        from filelock import FileLock, Timeout

        path = self.settings.data_dir / "write.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise busy from None
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
            return self._ingest(paths, collection, prune, progress)

    def _ingest(
        self,
        paths: Sequence[Path],
        collection: str | None,
        prune: bool = False,
        progress: Progress | None = None,
    ) -> IngestReport:
        target = self._writable(collection)
        ingestor = Ingestor(
            target, self.embedder, self.settings.chunking, self.settings.ingest, batch_chunks=512
        )
        report = ingestor.run(paths, prune=prune, progress=progress)
        self._sync_lexical(target)
        return report

    def ingest_uploads(
        self,
        files: Sequence[Upload],
        collection: str | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Saves files handed over as bytes into the data dir and ingests them.

        Outcomes name the uploads as sent. A file that fails (or repeats a document already
        there) leaves nothing behind, and the version it was meant to replace stays.
        """
        name = self._name(collection)
        with self._writing():
            staged = stage(self._uploads_dir(name), files)
            try:
                report = self._ingest([s.path for s in staged], name, progress=progress)
            except BaseException:
                for s in staged:
                    s.undo()
                raise
            by_path = {o.path: o for o in report.outcomes}
            outcomes = []
            for s in staged:
                outcome = by_path.get(display_path(s.path))  # s.path is absolute
                if outcome is None or outcome.outcome in ("failed", "skipped"):
                    s.undo()  # the store kept the previous version, if any: so does the disk
                elif outcome.outcome == "duplicate":
                    s.discard()  # the store holds no document for this path now
                if outcome is not None:
                    outcomes.append(replace(outcome, path=s.name))
            return IngestReport(outcomes, report.total_chunks)

    def _uploads_dir(self, name: str) -> Path:
        return (self.settings.data_dir / "uploads" / name).absolute()

    # -- collections -----------------------------------------------------------------------------

    def collections(self) -> list[str]:
        """Returns the names of the collections in the store, sorted."""
        return self.store.names()

    def create_collection(self, name: str) -> None:
        """Creates an empty collection for the configured embedding model (no-op if it exists)."""
        with self._writing():
            self._writable(name)

    def delete_collection(self, name: str) -> None:
        """Deletes a collection with its documents, lexical index and uploaded files."""
        name = check_collection_name(name)
        with self._writing():
            self.store.delete(name)
            self._lexical_path(name).unlink(missing_ok=True)
            self._lexicals.pop(name, None)
            shutil.rmtree(self._uploads_dir(name), ignore_errors=True)

    def status(self, collection: str | None = None) -> Status:
        """Returns what answers come from: models (as configured, none loaded) and the contents."""
        name = self._name(collection)
        records = self.documents(name) if name in self.collections() else []
        return Status(
            engine=self.settings.engine.kind,
            model=self.settings.engine.model,
            embedding=self.settings.embedding.model
            if self.settings.embedding.kind != "fake"
            else "fake",
            collection=name,
            documents=len(records),
            chunks=sum(r.chunks for r in records),
        )

    def documents(self, collection: str | None = None) -> list[DocumentRecord]:
        """Returns the documents in a collection (no model is loaded for this)."""
        return self.store.open(self._name(collection)).documents()

    def remove(self, id_or_path: str, collection: str | None = None) -> DocumentRecord:
        """Removes one document, named by id, id prefix or path; returns its record."""
        with self._writing():
            target = self.store.open(self._name(collection))
            record = _find(target.documents(), id_or_path)
            target.delete(record)
            self._sync_lexical(target)
            if display_path(self._uploads_dir(target.name)) == str(Path(record.source).parent):
                Path(record.source).unlink(missing_ok=True)  # privatellm's own copy of an upload
            return record

    # -- retrieval -------------------------------------------------------------------------------

    def lexical(self, collection: str | None = None) -> LexicalIndex:
        """Returns the collection's lexical index, in step with the store."""
        name = self._name(collection)
        path = self._lexical_path(name)
        cached = self._lexicals.get(name)
        # A writer replaces the file after every change, so an unchanged file means an
        # unchanged index (a stat per query, not a read of the store).
        if cached is not None and cached[0] == _stamp(path):
            return cached[1]
        index = self._sync_lexical(self.store.open(name), save=False)
        self._lexicals[name] = (_stamp(path), index)
        return index

    def _lexical_path(self, name: str) -> Path:
        return self.settings.data_dir / "lexical" / f"{name}.npz"

    def _sync_lexical(self, collection: Collection, save: bool = True) -> LexicalIndex:
        """Returns the collection's lexical index brought in step with the store.

        save=True (a writer holding the lock) writes it back when it changed; a reader saves it
        only if no writer is busy, and otherwise keeps its in-step copy in memory.
        """
        path = self._lexical_path(collection.name)
        index = LexicalIndex.load(path) or LexicalIndex.empty()
        drop, add = index.stale(collection.documents())
        if not drop and not add:
            return index
        index = index.updated(drop, add, collection.chunk_texts([r.id for r in add]))
        if save:
            index.save(path)
        else:
            with suppress(StoreLockedError), self._writing(wait=False):
                index.save(path)
        return index

    def retriever(self, collection: str | None = None) -> Retriever:
        """Returns a retriever over one collection, lexical index in step with the store."""
        target = self.store.open(self._name(collection))
        target.check_model(self.embedder.name, self.embedder.dimension)
        return Retriever(target, self.lexical(collection), self.embedder, self.settings.retrieval)

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
            doc_ids = [_find(records, s).id for s in sources]
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

    # -- answering -------------------------------------------------------------------------------

    def condense(self, question: str, history: Sequence[Message]) -> str:
        """Returns the question rewritten to stand alone, given the conversation before it."""
        if not history or not self.settings.answer.condense:
            return question
        limit = self.engine.count_tokens(question) * 3 + 32
        sampling = Sampling(max_tokens=limit, temperature=0.0)
        raw = "".join(self._generate(condense_messages(question, history), sampling)).strip()
        rewritten = " ".join(raw.split()).strip("\"'")
        # The bundled 135M model mostly answers or repeats the conversation instead of rewriting
        # (seen here); then retrieval gets the previous question and the follow-up together,
        # which keeps the topic in view.
        said = {" ".join(m["content"].split()) for m in history}
        if (
            not rewritten.endswith(("?", "？"))
            or rewritten in said
            or len(rewritten) > 3 * len(question) + 100
            or "\n" in raw
        ):
            previous = [m["content"] for m in history if m["role"] == "user"]
            return f"{previous[-1]} {question}" if previous else question
        return rewritten

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
    ) -> Reply:
        """Returns the answer being generated: iterate it for the text, then call .answer().

        system, if given, is sent ahead of the passages as the system prompt."""
        standalone = self.condense(question, history)
        found = self.search(standalone, collection, top_k, mode, sources)
        settings = self.settings.answer
        weak = found.evidence.weak(settings.min_dense, settings.min_lexical)
        if not found.hits or (settings.abstain and weak):
            answer = Answer(question, standalone, ABSTAIN, [], found.hits, abstained=True)
            return Reply(iter([ABSTAIN]), lambda _text: answer, found.hits, 0)
        engine = self.engine
        max_tokens = sampling.max_tokens or self.settings.engine.max_tokens
        messages, used = build_messages(standalone, found.hits, engine, max_tokens, system)

        def finish(text: str) -> Answer:
            sentences = attribute(text, used, self.embedder, settings.min_support, standalone)
            return Answer(
                question,
                standalone,
                render(sentences),
                citations(sentences, used),
                used,
                abstained=False,
                unsupported=[s.text for s in sentences if not s.supported],
            )

        pieces = _until_repeated(self._generate(messages, sampling))
        return Reply(pieces, finish, used, sum(engine.count_tokens(m["content"]) for m in messages))

    def chat(self, messages: Sequence[Message], sampling: Sampling = DEFAULT) -> Iterator[str]:
        """Yields the model's reply to a conversation, with no documents involved."""
        return self._generate(messages, sampling)

    def count_tokens(self, text: str) -> int:
        """Returns the length of text in the chat model's tokens."""
        return self.engine.count_tokens(text)

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Returns the embedding of each text and how many model tokens they held."""
        vectors = self.embedder.embed_batch(list(texts))
        return vectors.tolist(), sum(self.embedder.count_tokens(t) for t in texts)

    def neighbours(
        self, hit: ScoredChunk, count: int, collection: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Returns the texts of up to count chunks before and after hit in its document."""
        if count <= 0:
            return [], []
        index = hit.chunk.index
        before = [chunk_id(hit.chunk.doc_id, i) for i in range(max(0, index - count), index)]
        after = [chunk_id(hit.chunk.doc_id, i) for i in range(index + 1, index + count + 1)]
        found = {
            c.id: c.text for c in self.store.open(self._name(collection)).chunks(before + after)
        }
        return [found[i] for i in before if i in found], [found[i] for i in after if i in found]

    def _generate(self, messages: Sequence[Message], sampling: Sampling = DEFAULT) -> Iterator[str]:
        """Yields the engine's reply, holding the model until it is finished or abandoned."""
        engine = self.engine
        with self._gate.held():
            yield from engine.stream(messages, sampling)

    # -- summaries -------------------------------------------------------------------------------

    def summarize(
        self, id_or_path: str, collection: str | None = None, instructions: str | None = None
    ) -> Iterator[str]:
        """Yields a summary of one document."""
        target = self.store.open(self._name(collection))
        record = _find(target.documents(), id_or_path)
        return self._summarize(_document_texts(target, record), instructions)

    def summarize_text(self, text: str, instructions: str | None = None) -> Iterator[str]:
        """Yields a summary of text."""
        if not text.strip():
            raise ConfigError("nothing to summarize: the text is empty")
        return self._summarize([text], instructions)

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
            chosen = [_find(records, s) for s in sources] if sources else records
            texts = [t for r in chosen for t in _document_texts(target, r)]
        if not texts:
            raise NotFoundError("nothing to summarize: no passage matches")
        return self._summarize(texts, instructions)

    def _summarize(self, texts: list[str], instructions: str | None) -> Iterator[str]:
        """Yields a summary of texts: partial summaries of windows that fit the context,
        combined until one prompt holds them all (map-reduce); instructions shape the last."""
        engine, answer_tokens = self.engine, self.settings.engine.max_tokens
        budget = summary_budget(engine, answer_tokens, instructions)
        combine = False
        while True:
            windows = _windows(texts, engine.count_tokens, budget)
            if len(windows) <= 1:
                text = windows[0] if windows else ""
                last = summary_messages(text, combine, instructions)
                yield from _until_repeated(self._generate(last))
                return
            texts = [
                "".join(_until_repeated(self._generate(summary_messages(w, combine))))
                for w in windows
            ]
            combine = True


ABSTAIN = "The documents don't say: nothing retrieved for this question is close enough to it."


class Reply:
    """An answer in the making: iterating yields its text as generated; answer() finishes it.

    passages are what the model was given ([n] is passages[n-1]; the closest ones when it was
    not called) and prompt_tokens their cost, both known before the first piece."""

    def __init__(
        self,
        pieces: Iterator[str],
        finish: Callable[[str], Answer],
        passages: list[ScoredChunk],
        prompt_tokens: int,
    ) -> None:
        self._pieces = pieces
        self._finish = finish
        self.passages = passages
        self.prompt_tokens = prompt_tokens
        self._text: list[str] = []
        self._answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            self._text.append(piece)
            yield piece

    def close(self) -> None:
        """Stops generating (an answer left unfinished frees the model for the next one)."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def answer(self) -> Answer:
        """Returns the finished answer with citations (generating the rest of it if need be)."""
        if self._answer is None:
            for _ in self:
                pass
            self._answer = self._finish("".join(self._text))
        return self._answer


def _until_repeated(pieces: Iterator[str], min_chars: int = 12) -> Iterator[str]:
    """Yields pieces until the text starts repeating a sentence it already said.

    Small models fall into loops ("It was released in 2023. It was released in 2023. ...");
    stopping there saves the time of the rest of max_tokens. The repeat shows in the stream
    (a sentence is known to be finished only when the next one starts); the finished answer
    drops it.
    """
    text = ""
    seen: set[str] = set()
    checked = 0
    for piece in pieces:
        text += piece
        finished = split_sentences(text)[:-1]  # the last one may still be growing
        for sentence in finished[checked:]:
            key = " ".join(_MARKS.sub("", sentence).lower().split())
            if len(key) >= min_chars and key in seen:
                return
            seen.add(key)
        checked = max(checked, len(finished))
        yield piece


_MARKS = re.compile(r"\[\d+\]")


def _stamp(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _windows(texts: Sequence[str], count: Callable[[str], int], budget: int) -> list[str]:
    """Returns texts joined into as few windows of at most budget tokens as order allows."""
    windows: list[str] = []
    current: list[str] = []
    used = 0
    for text in texts:
        cost = count(text) + 1
        if current and used + cost > budget:
            windows.append("\n".join(current))
            current, used = [], 0
        if cost > budget:  # one text longer than a window: cut it by characters
            text = text[: max(1, len(text) * budget // cost)]
            cost = budget
        current.append(text)
        used += cost
    if current:
        windows.append("\n".join(current))
    return windows


def _document_texts(collection: Collection, record: DocumentRecord) -> list[str]:
    """Returns a document's chunk texts in document order."""
    order = {chunk_id(record.id, i): i for i in range(record.chunks)}
    chunks = sorted(collection.chunk_texts([record.id]), key=lambda c: order[c.id])
    return [c.text for c in chunks]


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
