"""The lexical index: BM25 (bm25s) over every chunk of a collection, persisted beside the store.

The store is the source of truth. The index records which version of each document it holds
(id, chunk count, ingest time), so `LexicalIndex.synced()` can bring it in step with the store
after an ingest, a delete or a crash by re-tokenising only what changed. It is saved as one file
replaced atomically, so a reader never sees half of it. `LexicalIndexes` keeps one such file per
collection of a data directory and decides when to read, rebuild and save it.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from functools import cache
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from privatellm.errors import StoreLockedError
from privatellm.locking import WriteLock
from privatellm.text import CJK, is_cjk_char
from privatellm.types import ChunkText, DocumentRecord

if TYPE_CHECKING:
    from numpy.typing import NDArray

FORMAT = 2  # bump when the tokeniser or the file layout changes: old files are rebuilt

# A run of CJK letters (written without spaces) or a word of any other script.
_TOKEN = re.compile(rf"[{CJK}]+|[^\W_{CJK}]+")


@cache
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


@cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def tokenize(text: str) -> list[str]:
    """Returns the BM25 terms of text: stemmed words, and character bigrams for Chinese.

    Chinese has no spaces, and bm25s' own tokeniser would make a whole sentence one term. Runs of
    Han characters become overlapping character bigrams (as Lucene's CJKAnalyzer does): no
    dictionary, and on the dev set within 1.3 points of jieba word segmentation at a sixth of
    its tokenising time (docs/EVALUATION.md).
    """
    words: list[str] = []
    terms: list[str] = []
    stop = _stopwords()
    for match in _TOKEN.finditer(text.lower()):
        run = match.group()
        if is_cjk_char(run[0]):
            terms.extend([run[i : i + 2] for i in range(len(run) - 1)] or [run])
        elif run not in stop and (len(run) > 1 or run.isdigit()):
            words.append(run)
    return _stemmer().stemWords(words) + terms  # type: ignore[no-any-return]


# Words that ask rather than say: an answer does not repeat them. Kept out of what evidence is
# measured on (coverage, quotes): in a small corpus "什么" or "how" is rare, so its idf weight made
# natural questions look unanswered (9 of 14 Chinese questions over new manuals were declined).
_QUESTION_WORDS = re.compile(
    r"为什么|是不是|有没有|什么|怎么|怎样|如何|哪些|哪个|哪里|哪儿|为何|多少|是否|请问|能否"
    r"|多[长久远高大重]"
    r"|[吗呢吧谁哪的了几]|(?i:\b(?:what|which|who|whom|whose|when|where|why|how|do|does|did)\b)"
)


def question_terms(question: str) -> list[str]:
    """Returns the terms of a question that an answer can be expected to hold: its terms
    without the words that only ask (什么, 如何, how, which)."""
    return tokenize(_QUESTION_WORDS.sub(" ", question))


def title_terms(source: str) -> list[str]:
    """Returns the terms of a file's name, indexed with each of its chunks.

    Questions name the document ("Adobe's 2022 10-K", "the RoBERTa paper") far more often than
    its pages repeat that name; a chunk of a balance sheet rarely says whose it is.
    """
    stem = PurePath(source.replace("\\", "/")).stem
    return tokenize(re.sub(r"[_\-.]+", " ", stem))


def doc_key(record: DocumentRecord) -> str:
    """Returns what identifies one version of a document's chunks in the index."""
    return f"{record.id}:{record.chunks}:{record.ingested_at}"


def _join(items: Iterable[str]) -> NDArray[np.uint8]:
    return np.frombuffer("\n".join(items).encode("utf-8"), dtype=np.uint8)


def _split(data: NDArray[np.uint8]) -> list[str]:
    text = data.tobytes().decode("utf-8")
    return text.split("\n") if text else []


class Indexed(Protocol):
    """What an index is kept in step with: a collection of the store."""

    @property
    def name(self) -> str: ...

    def documents(self) -> list[DocumentRecord]: ...

    def chunk_texts(self, doc_ids: Sequence[str]) -> list[ChunkText]: ...


class LexicalIndex:
    """BM25 over chunks. Immutable: `updated()` returns a new index."""

    def __init__(
        self,
        vocab: list[str],
        tokens: NDArray[np.int32],
        offsets: NDArray[np.int64],
        chunk_ids: list[str],
        doc_ids: list[str],
        doc_keys: list[str],
    ) -> None:
        self.vocab = vocab
        self._ids = {t: i for i, t in enumerate(vocab)}
        self.tokens = tokens
        self.offsets = offsets  # row r's tokens are tokens[offsets[r]:offsets[r + 1]]
        self.chunk_ids = chunk_ids
        self.doc_ids = np.array(doc_ids)
        self.doc_keys = doc_keys
        self._bm25 = self._build() if chunk_ids else None
        n = len(chunk_ids)
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
        pairs = np.unique(rows * max(len(vocab), 1) + tokens)  # each (row, term) once
        df = np.bincount(pairs % max(len(vocab), 1), minlength=len(vocab))
        # Lucene's idf; a term the corpus lacks gets the highest idf a term can have.
        self._idf = np.log1p((n - df + 0.5) / (df + 0.5))
        self._idf_unknown = float(np.log1p((n + 0.5) / 0.5))

    @classmethod
    def empty(cls) -> LexicalIndex:
        return cls([], np.zeros(0, np.int32), np.zeros(1, np.int64), [], [], [])

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def _row(self, row: int) -> NDArray[np.int32]:
        return self.tokens[self.offsets[row] : self.offsets[row + 1]]

    def _build(self) -> Any:
        import bm25s

        rows = [self._row(r).tolist() for r in range(len(self.chunk_ids))]
        bm25 = bm25s.BM25()
        bm25.index((rows, self._ids), show_progress=False)
        return bm25

    # -- keeping in step with the store ------------------------------------------------------

    def synced(self, collection: Indexed) -> LexicalIndex:
        """Returns this index brought in step with the collection (itself if it already is)."""
        drop, add = self.stale(collection.documents())
        if not drop and not add:
            return self
        return self.updated(drop, add, collection.chunk_texts([r.id for r in add]))

    def stale(self, records: Iterable[DocumentRecord]) -> tuple[set[str], list[DocumentRecord]]:
        """Returns (document ids to drop, records to add) to match the store's records."""
        wanted = {r.id: r for r in records}
        have = {key.split(":", 1)[0]: key for key in self.doc_keys}
        drop = {i for i, key in have.items() if i not in wanted or doc_key(wanted[i]) != key}
        add = [r for i, r in wanted.items() if i not in have or i in drop]
        return drop, add

    def updated(
        self, drop: set[str], add: Sequence[DocumentRecord], chunks: Sequence[ChunkText]
    ) -> LexicalIndex:
        """Returns a new index without the documents in drop and with the given chunks added."""
        keep = [r for r in range(len(self.chunk_ids)) if self.doc_ids[r] not in drop]
        vocab = list(self.vocab)
        ids = dict(self._ids)
        rows = [self._row(r) for r in keep]
        for chunk in chunks:
            terms = tokenize(chunk.text) + title_terms(chunk.source)
            row = [ids.setdefault(t, len(ids)) for t in terms]
            rows.append(np.array(row, dtype=np.int32))
        vocab.extend(list(ids)[len(vocab) :])
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
        kept_keys = [k for k in self.doc_keys if k.split(":", 1)[0] not in drop]
        return LexicalIndex(
            vocab,
            tokens,
            offsets,
            [self.chunk_ids[r] for r in keep] + [c.id for c in chunks],
            [str(self.doc_ids[r]) for r in keep] + [c.doc_id for c in chunks],
            kept_keys + [doc_key(r) for r in add],
        )

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Writes the index to path, replacing the old file in one step."""
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            format=np.array(FORMAT),
            vocab=_join(self.vocab),
            tokens=self.tokens,
            offsets=self.offsets,
            chunk_ids=_join(self.chunk_ids),
            doc_ids=_join(str(d) for d in self.doc_ids),
            doc_keys=_join(self.doc_keys),
        )
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> LexicalIndex | None:
        """Returns the index saved at path, or None if there is none or it is of another format."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) != FORMAT:
                    return None
                return cls(
                    _split(data["vocab"]),
                    data["tokens"],
                    data["offsets"],
                    _split(data["chunk_ids"]),
                    _split(data["doc_ids"]),
                    _split(data["doc_keys"]),
                )
        except (OSError, ValueError, KeyError):
            return None  # missing or unreadable: the caller rebuilds it from the store

    # -- searching ----------------------------------------------------------------------------

    def search(
        self, query: str, k: int, doc_ids: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """Returns up to k (row, BM25 score) pairs, best first; rows with no query term left out."""
        terms = [self._ids[t] for t in tokenize(query) if t in self._ids]
        if not terms or self._bm25 is None or k <= 0:
            return []
        mask = None
        if doc_ids is not None:
            mask = np.isin(self.doc_ids, list(doc_ids)).astype(np.float32)
        scores = self._bm25.get_scores(terms, weight_mask=mask)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(r), float(scores[r])) for r in top if scores[r] > 0]

    def coverage(self, query: str, row: int) -> float:
        """Returns the share of the query's idf weight whose terms occur in the chunk at row
        (question words left out).

        Near 1 when a chunk holds the query's rare words; near 0 when the documents lack them,
        which is the lexical half of the evidence the abstention decision rests on.
        """
        terms = set(question_terms(query))
        if not terms:
            return 0.0
        present = set(self._row(row).tolist())
        total = found = 0.0
        for term in terms:
            i = self._ids.get(term)
            weight = self._idf_unknown if i is None else float(self._idf[i])
            total += weight
            if i is not None and i in present:
                found += weight
        return found / total if total else 0.0


class LexicalIndexes:
    """The lexical index of each collection: a file per collection in folder, in step with the
    store, cached in memory for as long as its file is unchanged."""

    def __init__(self, folder: Path, lock: WriteLock) -> None:
        self._folder = folder
        self._lock = lock
        self._cache: dict[str, tuple[int | None, LexicalIndex]] = {}

    def path(self, name: str) -> Path:
        """Returns where the index of collection `name` is saved."""
        return self._folder / f"{name}.npz"

    def read(self, collection: Indexed) -> LexicalIndex:
        """Returns the collection's index in step with the store, for searching.

        A reader saves what it had to rebuild only if no writer is busy; otherwise it keeps its
        in-step copy in memory.
        """
        path = self.path(collection.name)
        cached = self._cache.get(collection.name)
        # A writer replaces the file after every change, so an unchanged file means an
        # unchanged index (a stat per query, not a read of the store).
        if cached is not None and cached[0] == _stamp(path):
            return cached[1]
        index = self._synced(collection, self._save_if_idle)
        self._cache[collection.name] = (_stamp(path), index)
        return index

    def sync(self, collection: Indexed) -> LexicalIndex:
        """Returns the collection's index brought in step with the store, saved if it changed;
        the caller holds the write lock."""
        return self._synced(collection, LexicalIndex.save)

    def delete(self, name: str) -> None:
        """Forgets the index of collection `name`, file and all."""
        self.path(name).unlink(missing_ok=True)
        self._cache.pop(name, None)

    def _synced(
        self, collection: Indexed, save: Callable[[LexicalIndex, Path], None]
    ) -> LexicalIndex:
        path = self.path(collection.name)
        old = LexicalIndex.load(path) or LexicalIndex.empty()
        index = old.synced(collection)
        if index is not old:
            save(index, path)
        return index

    def _save_if_idle(self, index: LexicalIndex, path: Path) -> None:
        with suppress(StoreLockedError), self._lock.held(wait=False):
            index.save(path)


def _stamp(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
