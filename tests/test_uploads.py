"""Uploads: names made safe, kept inside the data dir, replaced or rolled back as a unit."""

from __future__ import annotations

from pathlib import Path

import pytest

from privatellm.config import model_label
from privatellm.errors import ConfigError, NotFoundError
from privatellm.service import Service
from privatellm.uploads import MAX_NAME_BYTES, Upload, safe_filename

TEXT = b"The Eiffel Tower was completed in 1889 for the World's Fair in Paris."
OTHER = b"Mount Everest is 8,849 metres high and lies on the border of Nepal and China."


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("report.pdf", "report.pdf"),
        ("本地运行Llama笔记.txt", "本地运行Llama笔记.txt"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/abs/path/notes.md", "notes.md"),
        (".hidden.txt", "hidden.txt"),
        ("..", "upload"),
        ("", "upload"),
        ("a\x00b<c>:d?.txt", "a_b_c__d_.txt"),
    ],
)
def test_safe_filename(sent: str, kept: str) -> None:
    assert safe_filename(sent) == kept


def test_long_names_are_cut_on_a_character_boundary_keeping_the_extension() -> None:
    name = safe_filename("长" * 300 + ".pdf")
    assert name.endswith("长.pdf") and len(name.encode()) <= MAX_NAME_BYTES


def _upload_dir(service: Service) -> Path:
    return service.settings.data_dir / "uploads" / "default"


def test_uploads_stay_inside_the_data_dir(fake_service: Service, tmp_path: Path) -> None:
    report = fake_service.ingest_uploads([Upload("../../escape.txt", TEXT)])
    assert [(o.path, o.outcome) for o in report.outcomes] == [("../../escape.txt", "added")]
    assert not (tmp_path / "escape.txt").exists()
    assert (_upload_dir(fake_service) / "escape.txt").read_bytes() == TEXT
    [record] = fake_service.documents()
    assert Path(record.source) == (_upload_dir(fake_service) / "escape.txt").absolute()


def test_same_name_twice_in_one_batch_keeps_both(fake_service: Service) -> None:
    fake_service.ingest_uploads([Upload("a.txt", TEXT), Upload("a.txt", OTHER)])
    assert sorted(p.name for p in _upload_dir(fake_service).iterdir()) == ["a (2).txt", "a.txt"]
    assert len(fake_service.documents()) == 2


def test_reupload_replaces_the_document(fake_service: Service) -> None:
    fake_service.ingest_uploads([Upload("a.txt", TEXT)])
    report = fake_service.ingest_uploads([Upload("a.txt", OTHER)])
    assert [o.outcome for o in report.outcomes] == ["updated"]
    [record] = fake_service.documents()
    assert "Everest" in fake_service.retrieve("How high is Mount Everest?")[0].chunk.text
    assert (_upload_dir(fake_service) / "a.txt").read_bytes() == OTHER
    assert record.source.endswith("a.txt")


def test_failed_reupload_keeps_the_previous_version(fake_service: Service) -> None:
    fake_service.ingest_uploads([Upload("a.txt", TEXT)])
    report = fake_service.ingest_uploads([Upload("a.txt", b"\x00\x01\x02" * 1000)])
    assert [o.outcome for o in report.outcomes] == ["failed"]
    assert (_upload_dir(fake_service) / "a.txt").read_bytes() == TEXT  # file and document kept
    assert len(fake_service.documents()) == 1


def test_failed_or_duplicate_upload_leaves_nothing_behind(fake_service: Service) -> None:
    fake_service.ingest_uploads([Upload("a.txt", TEXT)])
    report = fake_service.ingest_uploads(
        [Upload("broken.pdf", b"%PDF-1.4 junk"), Upload("b.txt", TEXT)]
    )
    assert [o.outcome for o in report.outcomes] == ["failed", "duplicate"]
    assert sorted(p.name for p in _upload_dir(fake_service).iterdir()) == ["a.txt"]
    assert len(fake_service.documents()) == 1


def test_removing_an_uploaded_document_deletes_its_copy(fake_service: Service) -> None:
    fake_service.ingest_uploads([Upload("a.txt", TEXT)])
    [record] = fake_service.documents()
    fake_service.remove(record.id)
    assert not (_upload_dir(fake_service) / "a.txt").exists()
    assert fake_service.documents() == []


def test_removing_an_ingested_file_leaves_the_users_file_alone(
    fake_service: Service, tmp_path: Path
) -> None:
    mine = tmp_path / "mine.txt"
    mine.write_bytes(TEXT)
    fake_service.ingest([mine])
    fake_service.remove(str(mine))
    assert mine.read_bytes() == TEXT


def test_delete_collection_removes_its_index_and_uploads(fake_service: Service) -> None:
    fake_service.create_collection("other")
    fake_service.ingest_uploads([Upload("a.txt", TEXT)], "other")
    fake_service.retrieve("Eiffel Tower", "other")  # builds the lexical index
    data = fake_service.settings.data_dir
    assert (data / "lexical" / "other.npz").exists()
    fake_service.delete_collection("other")
    assert "other" not in fake_service.collections()
    assert not (data / "lexical" / "other.npz").exists()
    assert not (data / "uploads" / "other").exists()
    with pytest.raises(NotFoundError):
        fake_service.delete_collection("other")


def test_status_counts_documents_and_chunks(fake_service: Service) -> None:
    empty = fake_service.status()
    assert (empty.documents, empty.chunks) == (0, 0)
    assert empty.embedding == "all-MiniLM-L6-v2"  # no collection yet: the setting's label
    fake_service.ingest_uploads([Upload("a.txt", TEXT), Upload("b.txt", OTHER)])
    status = fake_service.status()
    assert (status.collection, status.documents, status.chunks) == ("default", 2, 2)
    assert status.engine == "llamacpp" and status.model == "SmolLM2-135M-Instruct"
    assert status.embedding == "fake-hashing-256"  # the model the collection is searched with


def test_a_model_has_one_label_wherever_it_is_shown() -> None:
    assert model_label("bundled:SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"
    assert (
        model_label("/models/Llama-3.2-1B-Instruct-Q4_K_M.gguf") == "Llama-3.2-1B-Instruct-Q4_K_M"
    )
    assert model_label("/models/Qwen2.5-1.5B-Instruct") == "Qwen2.5-1.5B-Instruct"  # a folder
    assert model_label("llama3.1:8b") == "llama3.1:8b"  # a server's model name


def test_with_engine_shares_store_and_embedder(fake_service: Service, tmp_path: Path) -> None:
    other = fake_service.with_engine(model=str(tmp_path / "other.gguf"), temperature=0.7)
    assert other.settings.engine.model.endswith("other.gguf")
    assert other.settings.engine.temperature == 0.7
    assert other.store is fake_service.store and other.embedder is fake_service.embedder
    assert other.lock is fake_service.lock  # one store, one writer at a time
    assert fake_service.settings.engine.temperature == 0.0  # the original is unchanged
    with pytest.raises(ConfigError, match=r"engine\.temperature"):
        fake_service.with_engine(temperature=9)
