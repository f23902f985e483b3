"""Chroma's HNSW index is approximate: with our explicit parameters, its top-5 on real
embeddings must match exact search."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import numpy as np

from privatellm.config import StoreSettings
from privatellm.embeddings import Embedder
from privatellm.store import ChromaStore


def _paragraphs(limit: int) -> list[str]:
    """Returns real English prose available on any machine: the standard library's docstrings."""
    found: list[str] = []
    seen: set[str] = set()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module):
                doc = ast.get_docstring(node) or ""
                for para in doc.split("\n\n"):
                    text = " ".join(para.split())[:300]
                    if len(text) >= 80 and text not in seen:
                        seen.add(text)
                        found.append(text)
                        if len(found) == limit:
                            return found
    return found


def test_hnsw_top5_matches_exact_search(tmp_path: Path, real_embedder: Embedder) -> None:
    texts = _paragraphs(1700)
    assert len(texts) == 1700
    vectors = real_embedder.embed_batch(texts)
    stored, queries = vectors[200:], vectors[:200]  # held-out paragraphs ask the questions
    settings = StoreSettings()
    store = ChromaStore(tmp_path, settings)
    collection = store.create("recall", real_embedder.name, real_embedder.dimension)
    hnsw = collection._c.configuration_json["hnsw"]
    assert (hnsw["ef_search"], hnsw["ef_construction"], hnsw["max_neighbors"]) == (
        settings.hnsw_search_ef,
        settings.hnsw_construction_ef,
        settings.hnsw_max_neighbors,
    )
    # Raw index rows (no document records): recall is a property of the index alone.
    collection._c.upsert(
        ids=[f"d{i}" for i in range(len(stored))],
        embeddings=stored,
        documents=texts[200:],
    )
    assert collection.count() == len(stored)
    norms = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    found = 0
    for q in queries:
        exact = set(np.argsort(-(norms @ (q / np.linalg.norm(q))))[:5].tolist())
        got = collection._c.query(query_embeddings=[q.tolist()], n_results=5, include=[])
        found += len(exact & {int(cid[1:]) for cid in got["ids"][0]})
    recall = found / (5 * len(queries))
    assert recall >= 0.98, recall
