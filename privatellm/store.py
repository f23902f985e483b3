"""The vector store: the only module that imports chromadb.

A document's record is the metadata of its first chunk (the "head"), so vectors and records live
in one place and move together (embedded or in a Chroma server). Writes are ordered so that a
crash leaves nothing half-visible: a document's other chunks are written before its head, and its
head is deleted before the rest. Chunks whose head is missing are orphans: queries drop them and
`repair()` deletes them.

A collection records the embedding model that built it (name, dimension, and the embedding.kind
and embedding.model values that build it again). Moving a collection C to another model
(privatellm/reindex.py) writes a hidden collection `C--reindex`, then switches names: C ->
`C--old`, `C--reindex` -> C, `C--old` deleted. Readers resolve a name to whichever of the three
is complete (`open`); writers, holding the write lock, finish or undo a switch a crash
interrupted (`settle`). Names ending in those suffixes are reserved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from privatellm.chunking import chunk_id
from privatellm.config import StoreSettings
from privatellm.errors import ConfigError, EmbeddingMismatchError, NotFoundError, StoreError
from privatellm.types import Box, Chunk, ChunkText, DocumentRecord, ScoredChunk

if TYPE_CHECKING:
    from numpy.typing import NDArray

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
MODEL_KEY = "privatellm:embedding_model"
DIM_KEY = "privatellm:embedding_dim"
KIND_KEY = "privatellm:embedding_kind"  # the embedding.kind that builds the model
REF_KEY = "privatellm:embedding_ref"  # the embedding.model value: a path or 'bundled:...'
BUILDING_KEY = "privatellm:building"  # set while a reindex writes the collection: not complete
STAGING = "--reindex"  # suffix of the hidden collection a reindex writes
RETIRED = "--old"  # suffix a collection's old version has for a moment during the switch
_HIDDEN = (STAGING, RETIRED)


def check_collection_name(name: str) -> str:
    """Returns name if Chroma accepts it as a collection name, else raises ConfigError."""
    if not _NAME.match(name) or ".." in name:
        raise ConfigError(
            f"invalid collection name {name!r}: use 3-63 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    if name.endswith(_HIDDEN):
        raise ConfigError(
            f"invalid collection name {name!r}: names ending in {STAGING!r} or {RETIRED!r} are "
            "reserved for reindexing"
        )
    return name


@dataclass(frozen=True)
class EmbeddingModel:
    """The embedding model a collection's vectors came from: what the store checks vectors
    against (name, dimension) and what builds the model again (kind, ref)."""

    name: str
    dimension: int
    kind: str = ""  # embedding.kind; "" in collections made before it was recorded
    ref: str = ""  # embedding.model: a model folder's path or 'bundled:...'

    def metadata(self) -> dict[str, Any]:
        """Returns the collection metadata that records this model."""
        meta: dict[str, Any] = {MODEL_KEY: self.name, DIM_KEY: self.dimension}
        if self.kind:
            meta.update({KIND_KEY: self.kind, REF_KEY: self.ref})
        return meta


class ChromaStore:
    """Chroma, embedded in data_dir/chroma or a server (store.kind), telemetry off, never
    Chroma's own embedding function."""

    def __init__(self, data_dir: Path, settings: StoreSettings) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        self._settings = settings
        chroma = ChromaSettings(anonymized_telemetry=False)
        if settings.kind == "chroma-server":
            self._client = _server_client(settings, chroma)
            return
        path = data_dir / "chroma"
        path.mkdir(parents=True, exist_ok=True)
        self._client = chromadb.PersistentClient(path=str(path), settings=chroma)

    def names(self) -> list[str]:
        """Returns the names of the collections in the store, sorted; the hidden parts of a
        reindex never show, and a collection caught mid-switch by a crash shows once."""
        found = self._listing()
        bases = {name.removesuffix(STAGING).removesuffix(RETIRED) for name in found}
        return sorted(name for name in bases if self._serving(name, found) is not None)

    def open(self, name: str) -> Collection:
        """Returns an existing collection, or raises NotFoundError.

        Where a crash interrupted a reindex's switch, this is whichever version is complete,
        under its usual name; the next writer renames it back into place (`settle`)."""
        check_collection_name(name)
        serving = self._serving(name, self._listing())
        if serving is None:
            raise NotFoundError(f"no collection named {name!r} (nothing ingested into it yet)")
        return self._collection(serving, name)

    def create(
        self, name: str, model: str, dimension: int, kind: str = "", ref: str = ""
    ) -> Collection:
        """Returns the collection, created for this embedding model if it did not exist; the
        caller holds the write lock."""
        check_collection_name(name)
        self.settle(name)
        if name in self._listing():
            collection = self.open(name)
        else:
            collection = self._new(name, EmbeddingModel(model, dimension, kind, ref))
        collection.check_model(model, dimension)
        return collection

    def delete(self, name: str) -> None:
        """Deletes a collection, with whatever an interrupted reindex left of it."""
        self.open(name)
        for physical in (name, name + STAGING, name + RETIRED):
            if physical in self._listing():
                self._client.delete_collection(physical)

    # -- moving a collection to another embedding model (the caller holds the write lock) --------

    def staging(self, name: str, model: EmbeddingModel) -> Collection:
        """Returns a new, empty, hidden collection to re-embed collection name into, marked
        incomplete; one an earlier reindex left behind is deleted first."""
        self.settle(name)
        return self._new(name + STAGING, model, {BUILDING_KEY: True})

    def switch(self, name: str) -> Collection:
        """Returns collection name answering from its staging collection, which replaced the
        old version.

        Each step leaves a state that `open` serves and `settle` completes: staging marked
        complete (the old version still answers), name -> name--old (staging answers), staging
        -> name, name--old deleted.
        """
        chroma = self._client.get_collection(name + STAGING, embedding_function=None)
        chroma.modify(metadata={k: v for k, v in chroma.metadata.items() if k != BUILDING_KEY})
        self._client.get_collection(name, embedding_function=None).modify(name=name + RETIRED)
        chroma.modify(name=name)
        self._client.delete_collection(name + RETIRED)
        return self.open(name)

    def settle(self, name: str) -> None:
        """Finishes a switch a crash interrupted, or drops what an unfinished reindex left."""
        found = self._listing()
        staged, retired = found.get(name + STAGING), found.get(name + RETIRED)
        if name not in found and staged is not None and _complete(staged):
            staged.modify(name=name)
            staged = None
        elif name not in found and retired is not None:
            retired.modify(name=name)
            retired = None
        for leftover in (staged, retired):
            if leftover is not None:
                self._client.delete_collection(leftover.name)

    def _listing(self) -> dict[str, Any]:
        return {c.name: c for c in self._client.list_collections()}

    def _serving(self, name: str, found: dict[str, Any]) -> str | None:
        """Returns the stored collection that answers for name, or None."""
        staged = found.get(name + STAGING)
        if name in found:
            return name
        if staged is not None and _complete(staged):
            return staged.name  # type: ignore[no-any-return]
        return name + RETIRED if name + RETIRED in found else None

    def _collection(self, physical: str, name: str) -> Collection:
        chroma = self._client.get_collection(physical, embedding_function=None)
        return Collection(chroma, self._settings.write_batch, name)

    def _new(
        self, physical: str, model: EmbeddingModel, extra: dict[str, Any] | None = None
    ) -> Collection:
        s = self._settings
        chroma = self._client.create_collection(
            physical,
            embedding_function=None,
            configuration={
                "hnsw": {
                    "space": s.hnsw_space,
                    "ef_construction": s.hnsw_construction_ef,
                    "ef_search": s.hnsw_search_ef,
                    "max_neighbors": s.hnsw_max_neighbors,
                }
            },
            metadata={**model.metadata(), "privatellm:created_at": _now(), **(extra or {})},
        )
        return Collection(chroma, s.write_batch, physical.removesuffix(STAGING))


def _complete(chroma: Any) -> bool:
    return not (chroma.metadata or {}).get(BUILDING_KEY)


def _server_client(settings: StoreSettings, chroma: Any) -> Any:
    import chromadb

    headers: dict[str, str] = {}
    if settings.auth_token:
        bearer = settings.auth_header == "Authorization"
        headers[settings.auth_header] = (
            f"Bearer {settings.auth_token}" if bearer else settings.auth_token
        )
    where = f"{'https' if settings.ssl else 'http'}://{settings.host}:{settings.port}"
    try:
        return chromadb.HttpClient(
            host=settings.host,
            port=settings.port,
            ssl=settings.ssl,
            headers=headers,
            settings=chroma,
        )
    except Exception as e:  # chromadb raises ValueError, httpx or its own errors here
        raise StoreError(f"cannot use the Chroma server at {where}: {e}".splitlines()[0]) from e


_PAGE = 10_000  # rows per paged read


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _chunk_metadata(chunk: Chunk) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "doc_id": chunk.doc_id,
        "source": chunk.source,
        "chunk_index": chunk.index,
        "start": chunk.start,
        "end": chunk.end,
    }
    if chunk.page is not None:
        meta["page"] = chunk.page
    if chunk.boxes:  # Chroma metadata holds scalars: the boxes travel as JSON
        meta["boxes"] = json.dumps([[*b[:2], *(round(v, 4) for v in b[2:])] for b in chunk.boxes])
    return meta


def _head_metadata(record: DocumentRecord) -> dict[str, Any]:
    return {
        "doc_hash": record.content_hash,
        "doc_pages": record.pages,
        "doc_chunks": record.chunks,
        "ingested_at": record.ingested_at,
    }


def _record(meta: dict[str, Any]) -> DocumentRecord:
    return DocumentRecord(
        id=str(meta["doc_id"]),
        source=str(meta["source"]),
        content_hash=str(meta["doc_hash"]),
        pages=int(meta["doc_pages"]),
        chunks=int(meta["doc_chunks"]),
        ingested_at=str(meta["ingested_at"]),
    )


@dataclass(frozen=True)
class StoredRow:
    """One chunk exactly as the store holds it."""

    id: str
    text: str
    metadata: dict[str, Any]
    vector: NDArray[np.float32]


@dataclass(frozen=True)
class StoredText:
    """One chunk's text and metadata exactly as the store holds them, without its vector."""

    id: str
    text: str
    metadata: dict[str, Any]


class Collection:
    """One Chroma collection of chunks, with document records on the head chunks."""

    def __init__(self, chroma: Any, write_batch: int = 1000, name: str | None = None) -> None:
        """name: what users call it, where the stored collection has another name for a
        moment (a reindex's staging collection)."""
        self._c = chroma
        self._write_batch = write_batch
        self._name = name or str(chroma.name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> tuple[str, int]:
        """Returns (embedding model name, dimension) this collection was built with."""
        return self.embedding.name, self.embedding.dimension

    @property
    def embedding(self) -> EmbeddingModel:
        """Returns the embedding model this collection was built with, as recorded."""
        meta = self._c.metadata or {}
        return EmbeddingModel(
            str(meta.get(MODEL_KEY, "")),
            int(meta.get(DIM_KEY, 0)),
            str(meta.get(KIND_KEY, "")),
            str(meta.get(REF_KEY, "")),
        )

    def record_model(self, model: EmbeddingModel) -> None:
        """Records where the collection's model is now (same name and dimension, new ref)."""
        self.check_model(model.name, model.dimension)
        self._c.modify(metadata={**(self._c.metadata or {}), **model.metadata()})

    def check_model(self, model: str, dimension: int) -> None:
        built, dim = self.model
        if (built, dim) != (model, dimension):
            raise EmbeddingMismatchError(
                f"collection {self.name!r} was built with embedding model {built} ({dim} dims), "
                f"not {model} ({dimension} dims): use that model, or ingest into a new collection"
            )

    def count(self) -> int:
        """Returns the number of chunks stored, orphans included."""
        return int(self._c.count())

    def documents(self) -> list[DocumentRecord]:
        """Returns every complete document, sorted by source."""
        heads = self._c.get(where={"chunk_index": 0}, include=["metadatas"])
        return sorted((_record(m) for m in heads["metadatas"]), key=lambda r: r.source)

    def add(
        self, record: DocumentRecord, chunks: Sequence[Chunk], vectors: NDArray[np.float32]
    ) -> None:
        """Writes a document's chunks; the head goes last, so the document appears whole."""
        order = [*range(1, len(chunks)), 0]
        for start in range(0, len(order), self._write_batch):
            part = order[start : start + self._write_batch]
            metadatas = [_chunk_metadata(chunks[i]) for i in part]
            if part[-1] == 0:
                metadatas[-1].update(_head_metadata(record))
            self._c.upsert(
                ids=[chunks[i].id for i in part],
                embeddings=vectors[part],
                documents=[chunks[i].text for i in part],
                metadatas=metadatas,
            )

    def delete(self, record: DocumentRecord, keep: int = 0) -> None:
        """Removes a document's chunks from index `keep` on; with keep=0 its head goes first, so
        the document is never listed half-deleted."""
        ids = [chunk_id(record.id, i) for i in range(keep, record.chunks)]
        for start in range(0, len(ids), self._write_batch):
            self._c.delete(ids=ids[start : start + self._write_batch])

    def repair(self, records: Iterable[DocumentRecord]) -> int:
        """Deletes chunks whose document has no head (left by a crash); returns how many."""
        records = list(records)
        if self.count() == sum(r.chunks for r in records):
            return 0  # the usual case, answered without reading every chunk's metadata
        expected = {r.id for r in records}
        orphans = []
        for offset in range(0, self.count(), _PAGE):  # paged: see chunk_texts
            part = self._c.get(include=["metadatas"], limit=_PAGE, offset=offset)
            orphans += [
                cid
                for cid, meta in zip(part["ids"], part["metadatas"], strict=True)
                if meta.get("doc_id") not in expected
            ]
        for start in range(0, len(orphans), self._write_batch):
            self._c.delete(ids=orphans[start : start + self._write_batch])
        return len(orphans)

    def chunk_texts(self, doc_ids: Sequence[str]) -> list[ChunkText]:
        """Returns the text of every stored chunk of the given documents."""
        found: list[ChunkText] = []
        ids = sorted(set(doc_ids))
        for start in range(0, len(ids), 100):
            where = {"doc_id": {"$in": ids[start : start + 100]}}
            # Paged: Chroma reads a get's rows through one SQL statement with a variable per row,
            # and SQLite refuses more than 32,766 (35 10-K filings hold 31,000 chunks).
            offset = 0
            while True:
                part = self._c.get(
                    where=where, include=["documents", "metadatas"], limit=_PAGE, offset=offset
                )
                found += [
                    ChunkText(cid, str(meta["doc_id"]), str(meta["source"]), text)
                    for cid, text, meta in zip(
                        part["ids"], part["documents"], part["metadatas"], strict=True
                    )
                ]
                if len(part["ids"]) < _PAGE:
                    break
                offset += _PAGE
        return found

    def chunks(self, ids: Sequence[str]) -> list[Chunk]:
        """Returns the stored chunks with the given ids, in that order, from complete documents."""
        if not ids:
            return []
        got = self._c.get(ids=list(ids), include=["documents", "metadatas"])
        by_id = {
            cid: _chunk(cid, text, meta)
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        }
        found = [ScoredChunk(by_id[i], 0.0) for i in ids if i in by_id]
        return [h.chunk for h in self._complete(found)]

    def rows(self, batch: int = 5000) -> Iterator[StoredRow]:
        """Yields every stored chunk as it is stored, orphans included: for exports and checks
        that compare whole stores."""
        for offset in range(0, self.count(), batch):
            got = self._c.get(
                include=["documents", "metadatas", "embeddings"], limit=batch, offset=offset
            )
            for cid, text, meta, vector in zip(
                got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
            ):
                yield StoredRow(cid, text, dict(meta), np.asarray(vector, dtype=np.float32))

    def stored(self, ids: Sequence[str]) -> list[StoredText]:
        """Returns the chunks with these ids that are stored, in that order, as stored."""
        got = self._c.get(ids=list(ids), include=["documents", "metadatas"])
        found = {
            cid: StoredText(cid, text, dict(meta))
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        }
        return [found[i] for i in ids if i in found]

    def put(self, rows: Sequence[StoredText], vectors: NDArray[np.float32]) -> None:
        """Writes chunks exactly as given (metadata and all), with these vectors."""
        for start in range(0, len(rows), self._write_batch):
            part = rows[start : start + self._write_batch]
            self._c.upsert(
                ids=[r.id for r in part],
                embeddings=vectors[start : start + len(part)],
                documents=[r.text for r in part],
                metadatas=[r.metadata for r in part],
            )

    def page_boxes(self, doc_id: str, page: int) -> list[Box]:
        """Returns where the OCR'd lines of a document's page sit (none if it was not OCR'd)."""
        got = self._c.get(
            where={"$and": [{"doc_id": doc_id}, {"page": page}]}, include=["metadatas"]
        )
        boxes: dict[tuple[int, int], Box] = {}
        for meta in got["metadatas"] or []:
            for box in json.loads(str(meta.get("boxes") or "[]")):
                x0, y0, x1, y1 = (float(v) for v in box[2:6])
                boxes[box[0], box[1]] = (int(box[0]), int(box[1]), x0, y0, x1, y1)
        return sorted(boxes.values())

    def neighbours(self, chunk: Chunk, count: int) -> tuple[list[str], list[str]]:
        """Returns the texts of up to count chunks before and after chunk in its document."""
        if count <= 0:
            return [], []
        index = chunk.index
        before = [chunk_id(chunk.doc_id, i) for i in range(max(0, index - count), index)]
        after = [chunk_id(chunk.doc_id, i) for i in range(index + 1, index + count + 1)]
        found = {c.id: c.text for c in self.chunks(before + after)}
        return [found[i] for i in before if i in found], [found[i] for i in after if i in found]

    def query(
        self, vector: Sequence[float], k: int, doc_ids: Sequence[str] | None = None
    ) -> list[ScoredChunk]:
        """Returns up to k chunks nearest to vector, best first, from complete documents only."""
        total = self.count()
        if total == 0 or k <= 0:
            return []
        where: dict[str, Any] | None = None
        if doc_ids:
            where = {"doc_id": {"$in": list(doc_ids)}}
        result = self._c.query(
            query_embeddings=[list(vector)],
            n_results=min(k, total),
            where=where,
            include=["documents", "metadatas", "distances"],
        )
        hits = [
            ScoredChunk(_chunk(cid, text, meta), 1.0 - float(distance), dense=1.0 - float(distance))
            for cid, text, meta, distance in zip(
                result["ids"][0],
                result["documents"][0],
                result["metadatas"][0],
                result["distances"][0],
                strict=True,
            )
        ]
        return self._complete(hits)

    def _complete(self, hits: list[ScoredChunk]) -> list[ScoredChunk]:
        heads = {chunk_id(h.chunk.doc_id, 0) for h in hits}
        present = set(self._c.get(ids=sorted(heads), include=[])["ids"]) if heads else set()
        return [h for h in hits if chunk_id(h.chunk.doc_id, 0) in present]


def _chunk(cid: str, text: str, meta: dict[str, Any]) -> Chunk:
    page = meta.get("page")
    return Chunk(
        id=cid,
        doc_id=str(meta["doc_id"]),
        source=str(meta["source"]),
        page=int(page) if page is not None else None,
        index=int(meta["chunk_index"]),
        start=int(meta["start"]),
        end=int(meta["end"]),
        text=text,
    )
