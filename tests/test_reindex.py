"""`privatellm reindex`: a collection moved to another embedding model keeps its chunks and
records, answers with that model (whatever is configured), gets dense scores for Chinese once
the model declares Chinese, and survives a kill -9 at any moment of the move.

The second model is the bundled all-MiniLM-L6-v2 under another name, with a model card that
declares English and Chinese: real, cheap, and a different model as far as the store can tell.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings as ChromaSettings
from click.testing import CliRunner

from privatellm.cli import cli
from privatellm.config import Settings, StoreSettings
from privatellm.embeddings import Embedder, bundled_model_dir
from privatellm.errors import ConfigError, ModelError, NotFoundError
from privatellm.registry import RegisteredModel, Registry
from privatellm.retrieval import reads
from privatellm.service import Service
from privatellm.store import ChromaStore, Collection, EmbeddingModel, check_collection_name
from privatellm.text import cjk_language

NEW = "minilm-zh"
TEXTS = {
    "lighthouse.txt": "The old lighthouse on the northern cape guides fishing boats through "
    "the fog. Its keeper climbs 120 steps every evening to light the lamp.",
    "orchard.txt": "Our orchard grows apples and pears. The apple harvest starts in September "
    "and the fruit is pressed into cider in the barn.",
    "panda.txt": "大熊猫生活在中国四川的山区竹林里。"
    "它们每天要吃大量的竹子，几乎整天都在进食和休息。",
}
ZH_QUESTION = "大熊猫吃什么？"


@pytest.fixture(scope="module")
def new_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the bundled model's files (linked) under another name, its model card
    declaring English and Chinese."""
    folder = tmp_path_factory.mktemp("models") / NEW
    folder.mkdir()
    bundled = bundled_model_dir()
    for entry in bundled.iterdir():
        if entry.name != "README.md":
            (folder / entry.name).symlink_to(entry)
    (folder / "README.md").write_text("---\nlanguage:\n- en\n- zh\n---\n# test\n", "utf-8")
    return folder


def _register(data_dir: Path, folder: Path, languages: tuple[str, ...] = ("en", "zh")) -> None:
    Registry(data_dir).add(
        RegisteredModel(folder.name, "embedding", "sentence-transformers", str(folder),
                        languages=languages)
    )  # fmt: skip


def _corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in TEXTS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _stored(service: Service, name: str = "default") -> list[tuple[str, str, dict[str, Any]]]:
    return sorted((r.id, r.text, r.metadata) for r in service.store.open(name).rows())


@pytest.fixture
def ingested(tmp_path: Path, real_embedder: Embedder, new_model: Path) -> tuple[Service, Path]:
    """A service whose collection 'default' holds the corpus, embedded with the bundled model;
    the new model is registered."""
    data = tmp_path / "data"
    service = Service(Settings(data_dir=data), embedder=real_embedder)
    _register(data, new_model)
    corpus = _corpus(tmp_path / "docs")
    service.ingest([corpus])
    return service, corpus


def test_reindex_moves_the_collection_and_keeps_its_chunks(
    ingested: tuple[Service, Path], new_model: Path
) -> None:
    service, corpus = ingested
    before = _stored(service)
    records = service.documents()
    lexical_file = service.lexicals.path("default")
    lexical_stamp = lexical_file.stat().st_mtime_ns
    assert service.store.open("default").embedding.name == "all-MiniLM-L6-v2"

    done = service.reindex(None, NEW)

    assert (done.changed, done.chunks, done.model, done.dimension) == (True, len(before), NEW, 384)
    collection = service.store.open("default")
    assert collection.embedding == EmbeddingModel(NEW, 384, "sentence-transformers", str(new_model))
    assert service.collections() == ["default"]  # the hidden parts are gone
    after = _stored(service)
    assert [row[:2] for row in after] == [row[:2] for row in before]  # ids and texts
    assert [row[2] for row in after] == [row[2] for row in before]  # records and all
    assert service.documents() == records
    assert lexical_file.stat().st_mtime_ns == lexical_stamp  # still in step: not rewritten
    assert service.lexical().stale(records) == (set(), [])

    # Unchanged files are not embedded again; a new one is, with the collection's model.
    (corpus / "river.txt").write_text("The river floods the valley every spring.", "utf-8")
    report = service.ingest([corpus])
    assert sorted(o.outcome for o in report.outcomes) == ["added"] + ["unchanged"] * 3
    assert service.store.open("default").embedding.name == NEW


def test_chinese_questions_get_dense_scores_once_the_model_declares_chinese(
    ingested: tuple[Service, Path],
) -> None:
    service, _ = ingested
    found = service.search(ZH_QUESTION)
    assert found.evidence.dense is None  # English-only model: dense_weight_cjk, 0
    assert all(hit.dense is None for hit in found.hits)

    service.reindex(None, NEW)
    found = service.search(ZH_QUESTION)
    assert found.evidence.dense is not None and found.evidence.dense > 0.3
    assert found.hits[0].chunk.source.endswith("panda.txt")
    assert found.hits[0].dense is not None  # ranked by dense_weight, not dense_weight_cjk
    english = service.search("When does the apple harvest start?")
    assert english.hits[0].chunk.source.endswith("orchard.txt")


def test_a_collection_answers_with_its_own_model_whatever_is_configured(
    ingested: tuple[Service, Path], real_embedder: Embedder
) -> None:
    service, corpus = ingested
    service.reindex(None, NEW)
    # A fresh service configured with the bundled model (shared with the tests, so the
    # registry's languages are not pinned on it): the collection still uses its own.
    other = Service(Settings(data_dir=service.settings.data_dir), embedder=real_embedder)
    retriever_embedder = other.embedder_for(other.store.open("default"))
    assert retriever_embedder.name == NEW and retriever_embedder is not real_embedder
    assert retriever_embedder.languages == ("en", "zh")
    hits = other.retrieve("lighthouse keeper steps", mode="dense")
    assert hits[0].chunk.source.endswith("lighthouse.txt")
    assert other.retrieve(ZH_QUESTION, mode="dense")[0].chunk.source.endswith("panda.txt")
    # New collections get the configured model.
    other.ingest([corpus / "orchard.txt"], collection="fresh")
    assert other.store.open("fresh").embedding.name == "all-MiniLM-L6-v2"


def test_reindex_on_a_chroma_server(
    tmp_path: Path, real_embedder: Embedder, new_model: Path, chroma_server: StoreSettings
) -> None:
    data = tmp_path / "data"
    service = Service(Settings(data_dir=data, store=chroma_server), embedder=real_embedder)
    _register(data, new_model)
    service.ingest([_corpus(tmp_path / "docs")], collection="served")
    before = _stored(service, "served")
    assert service.reindex("served", NEW).changed
    assert _stored(service, "served") == before
    assert service.store.open("served").model == (NEW, 384)
    assert [n for n in _physical(data, chroma_server) if n.startswith("served")] == ["served"]
    assert service.retrieve(ZH_QUESTION, "served")[0].chunk.source.endswith("panda.txt")


def test_reindex_to_the_same_model_is_a_no_op_and_cli_reports(
    ingested: tuple[Service, Path], new_model: Path
) -> None:
    service, _ = ingested
    data = str(service.settings.data_dir)
    runner = CliRunner()
    same = runner.invoke(cli, ["--data-dir", data, "reindex", "--embedding", "all-MiniLM-L6-v2"])
    assert same.exit_code == 0, same.output
    assert "'default' already uses all-MiniLM-L6-v2 (384 dims): nothing to do" in same.output

    moved = runner.invoke(cli, ["--data-dir", data, "reindex", "-e", str(new_model)])
    assert moved.exit_code == 0, moved.output
    line = moved.stdout.strip()
    assert line.startswith(f"reindexed 'default': {len(_stored(service))} chunks with {NEW} ")
    assert "(384 dims) in " in line and line.endswith(" s")


def test_missing_models_are_one_line_errors_naming_the_fix(
    ingested: tuple[Service, Path], new_model: Path, tmp_path: Path
) -> None:
    service, _ = ingested
    with pytest.raises(NotFoundError, match=r"no embedding model named 'nope' \(registered: "):
        service.reindex(None, "nope")
    with pytest.raises(ConfigError, match="not an embedding model"):
        service.reindex(None, "SmolLM2-135M-Instruct")
    # A model folder that is gone later: the collection says which model and how to fix it.
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    for entry in new_model.iterdir():
        (doomed / entry.name).symlink_to(entry.resolve())
    service.reindex(None, str(doomed))
    for entry in doomed.iterdir():
        entry.unlink()
    doomed.rmdir()
    other = Service(Settings(data_dir=service.settings.data_dir), embedder=service.embedder)
    with pytest.raises(ModelError) as error:
        other.retrieve("lighthouse")
    message = str(error.value)
    assert "doomed" in message and "privatellm reindex --embedding NAME -c default" in message
    assert "\n" not in message


def test_hidden_names_are_reserved() -> None:
    for name in ("notes--reindex", "notes--old"):
        with pytest.raises(ConfigError, match="reserved for reindexing"):
            check_collection_name(name)
    assert check_collection_name("notes-old") == "notes-old"


def test_question_languages() -> None:
    assert [cjk_language(q) for q in (ZH_QUESTION, "これは何ですか", "이것은 무엇입니까")] == [
        "zh",
        "ja",
        "ko",
    ]
    assert cjk_language("What do pandas eat?") is None
    assert reads(("en", "zh"), "zh") and reads(("zh-CN",), "zh") and reads(("multilingual",), "ko")
    assert not reads(("en",), "zh") and not reads((), "zh")


# -- a switch interrupted after each of its steps ------------------------------------------------

OLD_MODEL = EmbeddingModel("old-model", 4, "fake", "old")
NEW_MODEL = EmbeddingModel("new-model", 4, "fake", "new")
STEPS = 4  # switch(): mark complete, rename C -> C--old, rename C--reindex -> C, delete C--old


class Crash(Exception):
    pass


def _rows(n: int) -> tuple[list[str], np.ndarray]:
    vectors = np.random.default_rng(n).normal(size=(n, 4)).astype(np.float32)
    return [f"c{i}" for i in range(n)], vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _physical(data: Path, settings: StoreSettings) -> list[str]:
    """Returns the names Chroma itself holds, hidden ones included."""
    quiet = ChromaSettings(anonymized_telemetry=False)
    if settings.kind == "chroma":
        client: Any = chromadb.PersistentClient(path=str(data / "chroma"), settings=quiet)
    else:
        client = chromadb.HttpClient(host=settings.host, port=settings.port, settings=quiet)
    return sorted(c.name for c in client.list_collections())


@pytest.fixture
def crash_after(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Makes the store's renames and deletes raise Crash once [n] of them have run."""
    from chromadb.api.client import Client
    from chromadb.api.models.Collection import Collection as ChromaCollection

    budget = [10**9]

    def counted(original: Any) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            if budget[0] <= 0:
                raise Crash
            budget[0] -= 1
            return original(*args, **kwargs)

        return step

    monkeypatch.setattr(ChromaCollection, "modify", counted(ChromaCollection.modify))
    monkeypatch.setattr(Client, "delete_collection", counted(Client.delete_collection))
    yield budget


@pytest.mark.parametrize("steps", range(STEPS))
def test_a_switch_interrupted_after_any_step_leaves_one_whole_collection(
    tmp_path: Path, store_settings: StoreSettings, crash_after: list[int], steps: int
) -> None:
    name = f"sw{steps}-{store_settings.kind}"
    store = ChromaStore(tmp_path, store_settings)
    old = store.create(name, OLD_MODEL.name, 4, OLD_MODEL.kind, OLD_MODEL.ref)
    ids, vectors = _rows(5)
    old._c.upsert(ids=ids, embeddings=vectors, documents=ids)
    staged = store.staging(name, NEW_MODEL)
    staged._c.upsert(ids=ids[:3], embeddings=vectors[:3], documents=ids[:3])
    assert [n for n in store.names() if n.startswith(name)] == [name]
    assert store.open(name).model == ("old-model", 4)  # the incomplete one is never served

    crash_after[0] = steps
    with pytest.raises(Crash):
        store.switch(name)
    crash_after[0] = 10**9

    # What a reader sees right after the crash: one whole collection, under its own name.
    served_new = steps >= 2  # from the moment the old one is renamed away
    reader = ChromaStore(tmp_path, store_settings)
    assert [n for n in reader.names() if n.startswith(name)] == [name]
    served = reader.open(name)
    assert served.name == name
    assert served.model == (("new-model" if served_new else "old-model"), 4)
    assert served.count() == (3 if served_new else 5)

    # The next writer puts it in order: the served version under the name, nothing else.
    reader.settle(name)
    assert [n for n in _physical(tmp_path, store_settings) if n.startswith(name)] == [name]
    assert reader.open(name).model == served.model

    # And a reindex after that goes through.
    reader.staging(name, EmbeddingModel("third", 4, "fake", "third"))
    assert reader.switch(name).model == ("third", 4)
    assert [n for n in _physical(tmp_path, store_settings) if n.startswith(name)] == [name]


def test_only_the_old_version_left_is_served_and_restored(
    tmp_path: Path, store_settings: StoreSettings
) -> None:
    name = f"alone-{store_settings.kind}"
    store = ChromaStore(tmp_path, store_settings)
    store.create(name, OLD_MODEL.name, 4)
    store._client.get_collection(name).modify(name=f"{name}--old")
    assert name in store.names() and store.open(name).model == ("old-model", 4)
    store.settle(name)
    assert [n for n in _physical(tmp_path, store_settings) if n.startswith(name)] == [name]
    store.delete(name)
    assert name not in store.names()


# -- kill -9 in the middle of a real reindex -----------------------------------------------------

FAKE = {"PRIVATELLM_EMBEDDING__KIND": "fake"}
# A reindex of seconds, not milliseconds, so that the kill lands well inside it: small writes,
# one text per forward pass on one thread.
SLOW = {
    "PRIVATELLM_STORE__WRITE_BATCH": "4",
    "PRIVATELLM_EMBEDDING__BATCH_SIZE": "1",
    "PRIVATELLM_EMBEDDING__THREADS": "1",
}


def _staged_rows(data: Path) -> int:
    """Returns how many chunks the hidden collection holds, read from Chroma's SQLite file
    (read-only; reading through a Chroma client of this process would cache the store)."""
    try:
        with sqlite3.connect(f"file:{data / 'chroma' / 'chroma.sqlite3'}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT count(*) FROM embeddings e JOIN segments s ON e.segment_id = s.id "
                "JOIN collections c ON s.collection = c.id WHERE c.name = 'default--reindex'"
            ).fetchone()
    except sqlite3.Error:
        return 0  # busy or not there yet
    return int(row[0])


def _special_vector_is_from(service: Service, collection: Collection) -> bool:
    """Returns whether the odd chunk's vector is the one the collection's model gives.

    Checked on the vector, not through a dense search: HNSW may miss the one odd chunk among
    hundreds of near-duplicates (1 of 4 builds did). 0.99, not 0.999: on CPUs with AMX the
    embedder runs in bf16, where the chunk embedded inside a padded batch and embedded alone
    agree to 0.9987 (seen here); another chunk of these notes scores ~0.13."""
    (row,) = [r for r in collection.rows() if "zeppelin" in r.text]
    expected = service.embedder_for(collection).embed_batch([row.text])[0]
    return float(row.vector @ expected) > 0.99


def test_kill_9_in_the_middle_leaves_the_old_model_answering(
    tmp_path: Path, new_model: Path
) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, embedding={"kind": "fake"}, chunking={"chunk_tokens": 16})  # type: ignore[arg-type]
    words = ["harbour", "lighthouse", "orchard", "glacier", "river", "bridge", "meadow", "quarry"]
    folder = tmp_path / "notes"
    folder.mkdir()
    for n in range(5):
        lines = [f"Note {n} line {k}: the {words[(n + k) % 8]} {n * k}." for k in range(60)]
        (folder / f"note-{n:02d}.txt").write_text("\n".join(lines), encoding="utf-8")
    (folder / "special.txt").write_text("The zeppelin hangar stands empty.", encoding="utf-8")
    service = Service(settings)
    service.ingest([folder])
    _register(data, new_model)
    total = service.store.open("default").count()
    assert total > 250

    log = (tmp_path / "reindex.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "privatellm", "--data-dir", str(data), "reindex", "-e", NEW],
        env={**os.environ, **FAKE, **SLOW},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while _staged_rows(data) < total // 4 and child.poll() is None:
            assert time.monotonic() < deadline, "the reindex never got going"
            time.sleep(0.02)
        assert child.poll() is None, "the reindex ended before it could be killed: enlarge it"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()
    at_kill = _staged_rows(data)
    assert total // 4 <= at_kill < total, at_kill  # killed in the middle

    after = Service(settings)
    collection = after.store.open("default")
    assert after.collections() == ["default"]
    assert collection.model == ("fake-hashing-256", 256)  # the old model still answers
    assert collection.count() == total
    assert _special_vector_is_from(after, collection)
    hits = after.retrieve("zeppelin hangar", mode="lexical")
    assert hits[0].chunk.source.endswith("special.txt")

    done = after.reindex(None, NEW)
    assert (done.changed, done.chunks) == (True, total)
    moved = after.store.open("default")
    assert moved.model == (NEW, 384)
    assert _physical(data, StoreSettings()) == ["default"]  # the leftover is gone
    assert _special_vector_is_from(after, moved)
    hits = after.retrieve("zeppelin hangar", mode="lexical")
    assert hits[0].chunk.source.endswith("special.txt")
