"""100k chunks into each store kind, side by side: insert rate, disk size, retrieval p95, memory.

    python benchmarks/stores.py --source-data ~/.cache/privatellm-eval --source-collection dev \\
        --qa ../shared/eval/dev/qa.jsonl

The chunks and vectors come from a collection ingested earlier (the dev set, ~25k real chunks),
repeated four times with small noise as in benchmarks/query.py. Each store kind runs in its own
child process: embedded Chroma (store.kind chroma) and a real Chroma server on this machine
(`chroma run`, store.kind chroma-server), written through the same privatellm code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from load import _chroma_server
from query import build, read_chunks, time_retrieval

from privatellm.config import StoreSettings, load_settings
from privatellm.evaluate import load_items
from privatellm.service import Service


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    rows, vectors = read_chunks(args.source_data, args.source_collection)
    questions = [i.question for i in load_items(args.qa)][: args.questions]
    with tempfile.TemporaryDirectory(prefix="privatellm-stores-") as tmp:
        chroma_dir = Path(tmp) / "chroma"
        store = StoreSettings.model_validate({})
        server = None
        if kind == "chroma-server":
            chroma_dir.mkdir()
            server, port = _chroma_server(chroma_dir, dict(os.environ))
            store = StoreSettings.model_validate({"kind": "chroma-server", "port": port})
        try:
            settings = load_settings([], {"data_dir": Path(tmp) / "data"})
            service = Service(settings.model_copy(update={"store": store}))
            started = time.perf_counter()
            written = build(service, rows, vectors, 4, args.chunks)
            seconds = time.perf_counter() - started
            service.search("warm up")  # the embedder and the lexical index load here
            latency = time_retrieval(service, questions)
            disk = _size(Path(tmp) / "data") + (_size(chroma_dir) if server else 0)
            server_rss = psutil.Process(server.pid).memory_info().rss if server else 0
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=60)
    return {
        "store": kind,
        "chunks": written,
        "insert_s": round(seconds, 1),
        "insert_chunks_per_s": round(written / seconds),
        "disk_mb": round(disk / 2**20),
        "retrieval_p50_ms": round(latency["p50_ms"], 1),
        "retrieval_p95_ms": round(latency["p95_ms"], 1),
        "client_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "server_rss_mb": round(server_rss / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-data", type=Path, required=True)
    parser.add_argument("--source-collection", default="dev")
    parser.add_argument("--qa", type=Path, required=True)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--one", choices=["chroma", "chroma-server"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    rows = []
    for kind in ("chroma", "chroma-server"):
        cmd = [sys.executable, __file__, "--one", kind, *sys.argv[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]
    for row in rows:
        row["insert_rate_vs_embedded"] = round(
            row["insert_chunks_per_s"] / base["insert_chunks_per_s"], 2
        )
        row["p95_vs_embedded"] = round(row["retrieval_p95_ms"] / base["retrieval_p95_ms"], 2)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
