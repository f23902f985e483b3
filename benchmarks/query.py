"""Query-side benchmark: retrieval latency at 10k and 100k chunks, `ask` time to first token,
decode speed against bare llama-cpp-python on the same prompt, and peak RSS of `ask`.

    python benchmarks/query.py --source-data /work/evaldata --source-collection dev \\
        --qa ../shared/eval/dev/qa.jsonl

The chunks come from a collection ingested earlier (the dev set: ~25k real chunks). The 100k
collection repeats them four times, each copy's vector nudged by small noise and re-normalised,
so the index holds 100k distinct points with the structure of real embeddings. The baseline for
retrieval is the LangChain tutorial's query path (HuggingFaceEmbeddings fp32 + Chroma
similarity_search, dense only) over the very same Chroma collection, timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from privatellm.chunking import chunk_id
from privatellm.config import EngineSettings, load_settings
from privatellm.service import Service
from privatellm.store import Collection
from privatellm.types import Chunk, DocumentRecord


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def read_chunks(data: Path, collection: str) -> tuple[list[Any], np.ndarray]:
    """Returns (ids, texts, metadatas) rows and vectors of every chunk of a collection."""
    service = Service(load_settings([], {"data_dir": data}))
    stored = list(service.store.open(collection).rows())
    rows = [(r.id, r.text, r.metadata) for r in stored]
    return rows, np.stack([r.vector for r in stored])


def build(service: Service, rows: list[Any], vectors: np.ndarray, copies: int, limit: int) -> int:
    """Writes `limit` chunks into the service's default collection; returns how many."""
    with service.lock.held():
        return _build(service, service.writable(), rows, vectors, copies, limit)


def _build(
    service: Service,
    target: Collection,
    rows: list[Any],
    vectors: np.ndarray,
    copies: int,
    limit: int,
) -> int:
    rng = np.random.default_rng(0)
    written = 0
    for copy in range(copies):
        noise = rng.normal(0, 0.02, vectors.shape).astype(np.float32) if copy else 0
        moved = vectors + noise
        moved /= np.linalg.norm(moved, axis=1, keepdims=True)
        by_doc: dict[str, list[int]] = {}
        for i, (_, _, meta) in enumerate(rows):
            by_doc.setdefault(f"{copy}{meta['doc_id'][1:]}", []).append(i)
        for doc_id, members in by_doc.items():
            if written >= limit:
                break
            members = members[: limit - written]
            chunks = [
                Chunk(
                    id=chunk_id(doc_id, n),
                    doc_id=doc_id,
                    source=f"{rows[i][2]['source']}#{copy}",
                    page=rows[i][2].get("page"),
                    index=n,
                    start=0,
                    end=len(rows[i][1]),
                    text=rows[i][1],
                )
                for n, i in enumerate(members)
            ]
            record = DocumentRecord(doc_id, chunks[0].source, doc_id, 1, len(chunks), "now")
            target.add(record, chunks, moved[members].astype(np.float32))
            written += len(chunks)
    service.lexicals.sync(target)
    return written


def time_retrieval(service: Service, questions: list[str]) -> dict[str, float]:
    times = []
    for q in questions:
        started = time.perf_counter()
        service.search(q)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": percentile(times, 0.5), "p95_ms": percentile(times, 0.95)}


def time_baseline(data: Path, questions: list[str]) -> dict[str, float]:
    import warnings

    warnings.filterwarnings("ignore")
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    from langchain_chroma import Chroma
    from langchain_huggingface import HuggingFaceEmbeddings

    from privatellm.embeddings import bundled_model_dir

    client = chromadb.PersistentClient(
        path=str(data / "chroma"), settings=ChromaSettings(anonymized_telemetry=False)
    )
    store = Chroma(
        client=client,
        collection_name="default",
        embedding_function=HuggingFaceEmbeddings(model_name=str(bundled_model_dir())),
    )
    times = []
    for q in questions:
        started = time.perf_counter()
        store.similarity_search(q, k=5)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": percentile(times, 0.5), "p95_ms": percentile(times, 0.95)}


def retrieval(rows: list[Any], vectors: np.ndarray, questions: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, copies, limit in (("10k", 1, 10_000), ("100k", 4, 100_000)):
        with tempfile.TemporaryDirectory() as tmp:
            service = Service(load_settings([], {"data_dir": Path(tmp)}))
            started = time.perf_counter()
            n = build(service, rows, vectors, copies, limit)
            built = time.perf_counter() - started
            service.search("warm up")  # loads the embedder and the lexical index
            ours = time_retrieval(service, questions)
            base = time_baseline(Path(tmp), questions)
            results[label] = {"chunks": n, "build_s": built, "ours": ours, "baseline": base}
            print(f"retrieval {label}: {json.dumps(results[label])}", flush=True)
    return results


def ask_timing(data: Path, collection: str, questions: list[str]) -> dict[str, Any]:
    """Time to first token and total of `ask`, and its decode rate vs bare llama-cpp-python."""
    from privatellm.prompts import build_messages

    settings = load_settings([], {"data_dir": data, "collection": collection})
    service = Service(settings)
    engine = service.engine
    llm = bare_llama(settings.engine)
    service.search("warm up")
    first, total, ours_rate, bare_rate = [], [], [], []
    for q in questions:
        started = time.perf_counter()
        reply = service.ask(q)
        pieces = iter(reply)
        head = next(pieces, "")
        t_first = time.perf_counter()
        count = 1 + sum(1 for _ in pieces)
        t_end = time.perf_counter()
        answer = reply.answer()
        if answer.abstained:
            continue
        first.append(t_first - started)
        total.append(time.perf_counter() - started)
        if count > 8 and head:
            ours_rate.append((count - 1) / (t_end - t_first))
        # The same prompt, straight into llama-cpp-python.
        found = service.search(answer.standalone)
        messages, _ = build_messages(
            answer.standalone, found.hits, engine, settings.engine.max_tokens
        )
        stream = llm.create_chat_completion(
            messages=messages,
            max_tokens=settings.engine.max_tokens,
            temperature=settings.engine.temperature,
            stream=True,
        )
        n, t0 = 0, None
        for part in stream:
            if part["choices"][0]["delta"].get("content"):
                n += 1
                t0 = t0 or time.perf_counter()
        if n > 8 and t0:
            bare_rate.append((n - 1) / (time.perf_counter() - t0))
    return {
        "answered": len(first),
        "ttft_p50_s": statistics.median(first) if first else None,
        "total_p50_s": statistics.median(total) if total else None,
        "decode_ours_tok_s": statistics.median(ours_rate) if ours_rate else None,
        "decode_bare_tok_s": statistics.median(bare_rate) if bare_rate else None,
    }


def bare_llama(settings: EngineSettings) -> Any:
    """Returns the configured GGUF loaded by llama-cpp-python itself, with the options the
    engine passes (threads, context, batch), and nothing of privatellm around it."""
    from llama_cpp import Llama

    from privatellm.engines.llamacpp import llama_options, resolve_gguf

    return Llama(model_path=str(resolve_gguf(settings.model)), **llama_options(settings))


# The child reports its own peak: RUSAGE_CHILDREN would also count the pages a child shares
# with this (large) process between fork and exec.
_REPORT_PEAK = (
    "import atexit, resource, sys; "
    "atexit.register(lambda: sys.stderr.write("
    "f'MAXRSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')); "
    "from privatellm.cli import main; main(sys.argv[1:])"
)


def ask_rss(data: Path, collection: str, question: str) -> float:
    """Returns the peak RSS (MB) of one `privatellm ask` process."""
    args = ["--data-dir", str(data), "ask", question, "-c", collection]
    done = subprocess.run(
        [sys.executable, "-c", _REPORT_PEAK, *args],
        check=True,
        capture_output=True,
        text=True,
    )
    peak = next(line for line in done.stderr.splitlines() if line.startswith("MAXRSS_KB"))
    return int(peak.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-data", type=Path, required=True)
    parser.add_argument("--source-collection", default="dev")
    parser.add_argument("--qa", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--ask-questions", type=int, default=12)
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--skip-ask", action="store_true")
    args = parser.parse_args()
    items = [json.loads(line) for line in args.qa.read_text(encoding="utf-8").splitlines()]
    step = max(1, len(items) // args.questions)
    questions = [i["question"] for i in items[::step]][: args.questions]
    print(f"machine: {platform.processor() or platform.machine()}, {platform.platform()}")
    results: dict[str, Any] = {}
    if not args.skip_retrieval:
        rows, vectors = read_chunks(args.source_data, args.source_collection)
        results["retrieval"] = retrieval(rows, vectors, questions)
    english = [i["question"] for i in items if i["lang"] == "en" and i["answerable"]]
    chinese = [i["question"] for i in items if i["lang"] == "zh" and i["answerable"]]
    pick = english[:: max(1, len(english) // 8)][:8] + chinese[:: max(1, len(chinese) // 4)][:4]
    results["ask"] = ask_timing(
        args.source_data, args.source_collection, pick[: args.ask_questions]
    )
    print(f"ask: {json.dumps(results['ask'])}", flush=True)
    results["ask_rss_mb"] = ask_rss(args.source_data, args.source_collection, english[0])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
