"""The Chroma store, embedded and a real server: index settings applied, records on head
chunks, crash leftovers harmless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privatellm import store as store_module
from privatellm.chunking import chunk_id
from privatellm.config import StoreSettings
from privatellm.store import ChromaStore, Collection
from privatellm.types import Chunk, DocumentRecord


def _doc(doc_id: str, n: int) -> tuple[DocumentRecord, list[Chunk], np.ndarray]:
    chunks = [
        Chunk(chunk_id(doc_id, i), doc_id, f"/d/{doc_id}.txt", None, i, 0, 5, f"text {doc_id} {i}")
        for i in range(n)
    ]
    record = DocumentRecord(doc_id, f"/d/{doc_id}.txt", doc_id * 4, 1, n, "2026-01-01T00:00:00")
    vectors = np.random.default_rng(len(doc_id) + n).normal(size=(n, 8)).astype(np.float32)
    return record, chunks, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _add_headless(collection: Collection, doc_id: str, n: int) -> np.ndarray:
    """Writes chunks 1..n-1 of a document without its head, what a crash after the first write
    batch leaves; returns the document's vectors."""
    _record, chunks, vectors = _doc(doc_id, n)
    collection._c.upsert(
        ids=[c.id for c in chunks[1:]],
        embeddings=vectors[1:],
        documents=[c.text for c in chunks[1:]],
        metadatas=[
            {"doc_id": doc_id, "source": f"/d/{doc_id}.txt", "chunk_index": i, "start": 0, "end": 5}
            for i in range(1, n)
        ],
    )
    return vectors


def test_hnsw_settings_and_model_are_recorded(
    tmp_path: Path, store_settings: StoreSettings
) -> None:
    settings = store_settings.model_copy(
        update={"hnsw_construction_ef": 123, "hnsw_search_ef": 77, "hnsw_max_neighbors": 24}
    )
    store = ChromaStore(tmp_path, settings)
    collection = store.create("notes", "model-x", 8)
    assert collection.model == ("model-x", 8)
    hnsw = store._client.get_collection("notes").configuration_json["hnsw"]
    assert (hnsw["ef_construction"], hnsw["ef_search"], hnsw["max_neighbors"]) == (123, 77, 24)
    assert hnsw["space"] == "cosine"
    assert "notes" in ChromaStore(tmp_path, settings).names()


def test_half_written_document_is_invisible_and_repaired(
    tmp_path: Path, store_settings: StoreSettings
) -> None:
    collection: Collection = ChromaStore(tmp_path, store_settings).create("c01", "m", 8)
    whole = _doc("whole", 3)
    collection.add(*whole)
    vectors = _add_headless(collection, "torn", 4)
    assert [r.id for r in collection.documents()] == ["whole"]
    hits = collection.query(vectors[2].tolist(), k=7)
    assert {h.chunk.doc_id for h in hits} == {"whole"}
    assert collection.repair(collection.documents()) == 3
    assert collection.count() == 3
    collection.delete(whole[0])
    assert collection.count() == 0 and collection.documents() == []


def test_service_behaves_the_same_on_either_store(
    tmp_path: Path, store_settings: StoreSettings
) -> None:
    """Ingest, re-ingest, delete, collections and the lexical index, on each store kind."""
    from privatellm.config import Settings
    from privatellm.service import Service

    settings = Settings(
        data_dir=tmp_path / "data",
        embedding={"kind": "fake"},  # type: ignore[arg-type]
        store=store_settings,
    )
    service = Service(settings)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The Eiffel Tower was completed in 1889.", encoding="utf-8")
    (docs / "b.txt").write_text("Mount Everest is 8,849 metres high.", encoding="utf-8")
    name = "same-" + tmp_path.name[-8:].replace("_", "-")  # unique on a shared server
    assert service.ingest([docs], name).paths("added")
    assert service.ingest([docs], name).paths("unchanged")  # nothing written twice
    (docs / "b.txt").write_text(
        "Mount Everest is 8,849 metres high; K2 is 8,611.", encoding="utf-8"
    )
    assert [Path(p).name for p in service.ingest([docs], name).paths("updated")] == ["b.txt"]
    assert "K2" in service.retrieve("How high is K2?", name, top_k=1)[0].chunk.text
    service.remove(str(docs / "a.txt"), name)
    assert [Path(r.source).name for r in service.documents(name)] == ["b.txt"]
    drop, add = service.lexical(name).stale(service.documents(name))
    assert not drop and not add  # lexical index in step with the store
    assert name in service.collections()
    service.delete_collection(name)
    assert name not in service.collections()


def test_large_documents_are_read_back_in_pages(
    tmp_path: Path, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chroma over SQLite refuses a get of more than 32,766 rows ("too many SQL variables"); a
    # few 10-K filings with their table rows hold that many. Paged reads, here of 7 rows.
    monkeypatch.setattr(store_module, "_PAGE", 7)
    collection: Collection = ChromaStore(tmp_path, store_settings).create("c02", "m", 8)
    big, small = _doc("big", 30), _doc("small", 2)
    collection.add(*big)
    collection.add(*small)
    texts = collection.chunk_texts(["big", "small"])
    assert sorted(t.text for t in texts) == sorted(c.text for c in [*big[1], *small[1]])
    _add_headless(collection, "torn", 20)
    assert collection.repair(collection.documents()) == 19
    assert collection.count() == 32
