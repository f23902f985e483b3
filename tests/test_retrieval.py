"""Lexical index, hybrid fusion, filters, and the lexical index kept in step with the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privatellm.lexical import LexicalIndex, tokenize
from privatellm.service import Service
from privatellm.text import is_cjk
from privatellm.types import ChunkText, DocumentRecord


def _record(doc_id: str, chunks: int) -> DocumentRecord:
    return DocumentRecord(doc_id, f"/d/{doc_id}.txt", doc_id * 4, 1, chunks, "2026-01-01T00:00:00")


def _index(texts: dict[str, list[str]]) -> LexicalIndex:
    records = [_record(d, len(t)) for d, t in texts.items()]
    chunks = [
        ChunkText(f"{d}-{i}", d, f"/d/{d}.txt", text)
        for d, t in texts.items()
        for i, text in enumerate(t)
    ]
    return LexicalIndex.empty().updated(set(), records, chunks)


def test_tokenize_stems_english_and_splits_chinese_into_bigrams() -> None:
    assert tokenize("The companies' operating margins") == ["compani", "oper", "margin"]
    assert tokenize("北京大学 2019年") == ["2019", "北京", "京大", "大学", "年"]
    assert is_cjk("清华大学在哪里?") and not is_cjk("Where is MIT?")


def test_chinese_phrase_finds_its_paragraph_among_others() -> None:
    index = _index(
        {
            "a": ["长城是中国古代的军事防御工程。", "故宫位于北京市中心。"],
            "b": ["黄河是中国第二长河。", "The Great Wall is long."],
        }
    )
    best = index.search("故宫在哪个城市", k=3)
    assert index.chunk_ids[best[0][0]] == "a-1"
    assert [index.chunk_ids[r] for r, _ in index.search("great walls", k=3)] == ["b-1"]
    # Restricted to document b, the palace paragraph is out of reach.
    assert all(index.doc_ids[r] == "b" for r, _ in index.search("故宫", 3, doc_ids=["b"]))


def test_coverage_separates_present_from_absent_rare_words() -> None:
    index = _index({"a": ["Adobe reported an operating margin of 34.6% in fiscal 2022."]})
    assert index.coverage("Adobe operating margin 2022", 0) == pytest.approx(1.0)
    assert index.coverage("Who won the 2022 Nobel prize in chemistry?", 0) < 0.3


def test_question_words_do_not_count_against_coverage() -> None:
    # In a small corpus "如何" and "how" are rare, so their weight used to make a question the
    # passage answers look unanswered.
    index = _index(
        {"a": ["按住复位键五秒即可重置路由器密码。", "Hold the reset button to restore defaults."]}
    )
    assert index.coverage("如何重置路由器的密码？", 0) == pytest.approx(1.0)
    assert index.coverage("How do I restore the defaults?", 1) == pytest.approx(1.0)
    assert index.coverage("如何更换路由器的天线？", 0) < 0.5


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    index = _index({"a": ["alpha beta", "gamma 中文"], "b": ["delta"]})
    index.save(tmp_path / "x.npz")
    loaded = LexicalIndex.load(tmp_path / "x.npz")
    assert loaded is not None
    assert loaded.chunk_ids == index.chunk_ids and loaded.doc_keys == index.doc_keys
    assert np.array_equal(loaded.tokens, index.tokens)
    assert loaded.search("gamma", 2) == index.search("gamma", 2)
    (tmp_path / "bad.npz").write_bytes(b"not an index")
    assert LexicalIndex.load(tmp_path / "bad.npz") is None


def test_stale_names_changed_and_vanished_documents() -> None:
    index = _index({"a": ["one"], "b": ["two"]})
    drop, add = index.stale([_record("a", 1), _record("c", 1), _record("b", 2)])
    assert drop == {"b"} and sorted(r.id for r in add) == ["b", "c"]
    smaller = index.updated({"b"}, [], [])
    assert smaller.chunk_ids == ["a-0"] and smaller.search("two", 5) == []


def _lexical_sources(service: Service, query: str) -> list[str]:
    return [Path(h.chunk.source).name for h in service.retrieve(query, top_k=5, mode="lexical")]


def test_lexical_index_follows_ingest_update_and_delete(
    fake_service: Service, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The quokka lives on Rottnest Island.", encoding="utf-8")
    (docs / "b.txt").write_text("Penguins live in Antarctica.", encoding="utf-8")
    fake_service.ingest([docs])
    saved = fake_service.settings.data_dir / "lexical" / "default.npz"
    assert saved.exists()
    assert _lexical_sources(fake_service, "quokka island") == ["a.txt"]

    (docs / "a.txt").write_text("The numbat lives in Western Australia.", encoding="utf-8")
    fake_service.ingest([docs])
    assert _lexical_sources(fake_service, "quokka") == []
    assert _lexical_sources(fake_service, "numbat") == ["a.txt"]

    fake_service.remove(str(docs / "b.txt"))
    assert _lexical_sources(fake_service, "penguins") == []
    index = LexicalIndex.load(saved)
    assert index is not None and len(index) == 1


def test_missing_or_stale_lexical_index_is_rebuilt_from_the_store(
    fake_service: Service, fake_settings: object, sample_copy: Path
) -> None:
    fake_service.ingest([sample_copy])
    saved = fake_service.settings.data_dir / "lexical" / "default.npz"
    saved.unlink()  # as if a crash came between the store write and the index write
    fresh = Service(fake_service.settings)
    assert _lexical_sources(fresh, "NCCL 报错")[0] == "本地运行Llama笔记.txt"
    assert saved.exists()  # no writer was busy, so the reader saved what it rebuilt
    index = LexicalIndex.load(saved)
    assert index is not None
    assert len(index) == sum(r.chunks for r in fresh.documents())


def test_hybrid_finds_what_only_one_ranking_finds(fake_service: Service, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(6):
        (docs / f"f{n}.txt").write_text(f"Filler paragraph number {n} about weather.", "utf-8")
    (docs / "code.txt").write_text("The access code is XK-4471 for the vault.", encoding="utf-8")
    fake_service.ingest([docs])
    hybrid = fake_service.retrieve("XK-4471", top_k=3, mode="hybrid")
    assert Path(hybrid[0].chunk.source).name == "code.txt"
    assert hybrid[0].lexical is not None and 0 < hybrid[0].score <= 1
    only = fake_service.retrieve("weather", top_k=5, sources=[str(docs / "f3.txt")])
    assert {Path(h.chunk.source).name for h in only} == {"f3.txt"}


def test_langchain_retriever_returns_documents(fake_service: Service, sample_copy: Path) -> None:
    from langchain_core.documents import Document

    from privatellm.langchain import PrivateLLMRetriever

    fake_service.ingest([sample_copy])
    retriever = PrivateLLMRetriever(service=fake_service, k=2, mode="lexical")
    docs = retriever.invoke("NCCL 报错")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    assert Path(docs[0].metadata["source"]).name == "本地运行Llama笔记.txt"
    assert docs[0].metadata["score"] >= docs[1].metadata["score"]


def test_tied_scores_share_a_rank_so_fusion_ignores_tie_order() -> None:
    from privatellm.retrieval import _ranks

    assert _ranks([3.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.5]) == [1, 2, 2, 4, 4, 4, 7]
    assert _ranks([]) == [] and _ranks([0.7]) == [1]
