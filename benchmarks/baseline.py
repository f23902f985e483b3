"""The baseline privatellm is measured against: the LangChain tutorial pipeline as its users
write it (PyPDFLoader / BSHTMLLoader / TextLoader -> RecursiveCharacterTextSplitter(1000, 200)
-> all-MiniLM-L6-v2 fp32 -> Chroma). Shared by the ingest benchmark and the eval baseline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def tutorial_store(corpus: Path, data: Path) -> tuple[Any, dict[str, Any]]:
    """Returns the tutorial's Chroma store built from corpus in data, and timings."""
    import warnings

    warnings.filterwarnings("ignore")
    from langchain_chroma import Chroma
    from langchain_community.document_loaders import BSHTMLLoader, PyPDFLoader, TextLoader
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from privatellm.embeddings import bundled_model_dir

    started = time.perf_counter()
    embeddings = HuggingFaceEmbeddings(model_name=str(bundled_model_dir()))
    loaded = time.perf_counter()
    documents: list[Any] = []
    failed = 0
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        loader: Any
        if path.suffix == ".pdf":
            loader = PyPDFLoader(str(path))
        elif path.suffix in (".html", ".htm"):
            loader = BSHTMLLoader(str(path), open_encoding="utf-8")
        else:
            loader = TextLoader(str(path), encoding="utf-8")
        try:
            documents.extend(loader.load())
        except Exception:
            failed += 1
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(
        documents
    )
    parsed = time.perf_counter()
    store = Chroma.from_documents(chunks, embeddings, persist_directory=str(data))
    done = time.perf_counter()
    return store, {
        "seconds": done - started,
        "load_seconds": loaded - started,
        "ingest_seconds": done - loaded,
        "parse_seconds": parsed - loaded,
        "embed_seconds": done - parsed,
        "pages": len(documents),
        "chunks": len(chunks),
        "failed": failed,
    }


def open_tutorial_store(data: Path) -> Any:
    """Returns a tutorial store built earlier in data."""
    import warnings

    warnings.filterwarnings("ignore")
    from langchain_chroma import Chroma
    from langchain_huggingface import HuggingFaceEmbeddings

    from privatellm.embeddings import bundled_model_dir

    embeddings = HuggingFaceEmbeddings(model_name=str(bundled_model_dir()))
    return Chroma(persist_directory=str(data), embedding_function=embeddings)
