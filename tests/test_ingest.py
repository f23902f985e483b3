"""Ingest end to end on the real embedder and real Chroma: idempotent, incremental, deletable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import make_pdf, run_cli

from privatellm.config import Settings
from privatellm.errors import EmbeddingMismatchError, NotFoundError
from privatellm.service import Service


def test_samples_ingest_once_and_reingest_adds_nothing(
    real_service: Service, sample_copy: Path
) -> None:
    first = real_service.ingest([sample_copy])
    assert len(first.paths("added")) == 3 and not first.paths("failed")
    again = real_service.ingest([sample_copy])
    assert again.paths("added") == [] and len(again.paths("unchanged")) == 3
    assert again.total_chunks == first.total_chunks
    assert [r.id for r in real_service.documents()] == [r.id for r in real_service.documents()]


def test_retrieval_finds_the_right_page(real_service: Service, sample_copy: Path) -> None:
    real_service.ingest([sample_copy])
    best = real_service.retrieve("When was Llama 2 released and how many tokens?", top_k=3)[0]
    assert best.chunk.source.endswith("llama-history.pdf") and best.chunk.page == 2
    assert "July 2023" in best.chunk.text
    chinese = real_service.retrieve("没有显卡 NCCL 报错", top_k=1)[0]
    assert chinese.chunk.source.endswith("本地运行Llama笔记.txt")


def test_changed_file_replaces_its_old_chunks(real_service: Service, tmp_path: Path) -> None:
    doc = make_pdf(tmp_path / "notes.pdf", ["The secret code is WALRUS.", "Second page."])
    real_service.ingest([tmp_path])
    make_pdf(doc, ["The secret code is PELICAN.", "Second page.", "A third page."])
    report = real_service.ingest([tmp_path])
    assert report.paths("updated") == [str(doc)]
    (record,) = real_service.documents()
    assert record.pages == 3
    texts = " ".join(h.chunk.text for h in real_service.retrieve("secret code", top_k=10))
    assert "PELICAN" in texts and "WALRUS" not in texts
    assert report.total_chunks == record.chunks


def test_prune_removes_vanished_files_and_rm_removes_one(
    real_service: Service, sample_copy: Path
) -> None:
    real_service.ingest([sample_copy])
    (sample_copy / "privatellm-guide.md").unlink()
    kept = real_service.ingest([sample_copy])
    assert kept.paths("removed") == [] and len(real_service.documents()) == 3
    pruned = real_service.ingest([sample_copy], prune=True)
    assert [Path(p).name for p in pruned.paths("removed")] == ["privatellm-guide.md"]
    pdf = next(r for r in real_service.documents() if r.source.endswith(".pdf"))
    real_service.remove(pdf.id[:8])
    (left,) = real_service.documents()
    real_service.remove(left.source)
    assert real_service.documents() == []
    assert real_service.retrieve("Llama", top_k=5) == []
    with pytest.raises(NotFoundError):
        real_service.remove("no-such-document")


def test_moved_file_keeps_one_document(real_service: Service, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("Zebras have black and white stripes.")
    real_service.ingest([folder])
    (folder / "a.md").rename(folder / "b.md")
    report = real_service.ingest([folder])
    assert [Path(p).name for p in report.paths("updated")] == ["b.md"]
    (record,) = real_service.documents()
    assert record.source.endswith("b.md")
    assert real_service.retrieve("zebra stripes", top_k=1)[0].chunk.source.endswith("b.md")


def test_collection_keeps_its_embedding_model(real_service: Service, sample_copy: Path) -> None:
    real_service.ingest([sample_copy / "privatellm-guide.md"])
    other = Service(real_service.settings.model_copy(update={"embedding": _fake()}))
    # Configured for another model, a service still writes and searches a collection with the
    # model the collection records (more in tests/test_reindex.py).
    note = sample_copy / "zebra.md"
    note.write_text("Zebra stripes confuse biting flies.", encoding="utf-8")
    assert other.ingest([note]).paths("added") == [str(note)]
    assert other.store.open("default").model == ("all-MiniLM-L6-v2", 384)
    assert other.retrieve("zebra stripes", top_k=1, mode="dense")[0].chunk.source == str(note)
    # A collection that does not record how to build its model refuses another one.
    other.store.create("legacy", "all-MiniLM-L6-v2", 384)
    with pytest.raises(EmbeddingMismatchError, match="all-MiniLM-L6-v2"):
        other.ingest([note], collection="legacy")
    with pytest.raises(EmbeddingMismatchError):
        other.retrieve("anything", collection="legacy")


def _fake():  # type: ignore[no-untyped-def]
    from privatellm.config import EmbeddingSettings

    return EmbeddingSettings(kind="fake")


def test_cli_contract(tmp_path: Path, sample_copy: Path) -> None:
    """The JSON shapes and exit codes other tools rely on, through the real CLI and model."""
    data = tmp_path / "data"
    result = run_cli("--data-dir", data, "ingest", sample_copy, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"added", "updated", "unchanged", "removed", "failed", "chunks"}
    assert len(report["added"]) == 3 and report["chunks"] > 3

    listed = json.loads(run_cli("--data-dir", data, "docs", "list", "--json").stdout)
    assert {tuple(sorted(d)) for d in listed} == {
        ("chunks", "id", "ingested_at", "pages", "source")
    }
    assert sorted(d["pages"] for d in listed) == [1, 1, 4]

    hits = json.loads(
        run_cli(
            "--data-dir", data, "retrieve", "Llama 3 context length", "--json", "-k", "2"
        ).stdout
    )
    assert len(hits) == 2
    assert set(hits[0]) == {"source", "page", "text", "score", "dense", "lexical"}
    assert hits[0]["page"] == 2 and hits[0]["score"] >= hits[1]["score"]

    removed = run_cli("--data-dir", data, "docs", "rm", listed[0]["id"])
    assert removed.returncode == 0 and listed[0]["id"] in removed.stdout
    missing = run_cli("--data-dir", data, "docs", "rm", "0000000000")
    assert missing.returncode == 1 and missing.stderr.startswith("error: no document")
    bad = run_cli("--data-dir", data, "docs", "list", "--collection", "x")
    assert bad.returncode == 2 and "invalid collection name" in bad.stderr


def test_second_writer_is_refused_while_one_runs(fake_settings: Settings, tmp_path: Path) -> None:
    from filelock import FileLock

    (tmp_path / "a.txt").write_text("hello")
    service = Service(fake_settings)
    fake_settings.data_dir.mkdir(parents=True)
    with FileLock(str(fake_settings.data_dir / "write.lock")):
        result = run_cli("--data-dir", fake_settings.data_dir, "ingest", tmp_path / "a.txt")
    assert result.returncode == 1 and "another ingest or reindex is running" in result.stderr
    assert service.ingest([tmp_path / "a.txt"]).paths("added")


def test_symlinks_out_of_the_folder_are_not_followed(fake_service: Service, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the index")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "link.txt").symlink_to(outside / "secret.txt")
    (folder / "inside.txt").write_text("indexed")
    (folder / "alias.txt").symlink_to(folder / "inside.txt")
    report = fake_service.ingest([folder])
    assert [Path(p).name for p in report.paths("added")] == ["alias.txt"]
    reasons = {Path(o.path).name: o.detail for o in report.outcomes if o.outcome == "skipped"}
    assert "outside" in reasons["link.txt"]
    shutil.rmtree(outside)
