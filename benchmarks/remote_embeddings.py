"""Ingest throughput with the embedding model in process vs behind `privatellm serve`, side by side.

    python benchmarks/remote_embeddings.py [--corpus DIR] [--every N] [--repeat R] [--quick]

The corpus is every Nth text file of DIR (default: the dev set's SQuAD articles, N=5), read where
it lies. Two rows: in-process (the bundled all-MiniLM-L6-v2, embedding.kind sentence-transformers)
and remote (embedding.kind openai, pointed at a `privatellm serve` subprocess on a loopback port,
which this script starts, waits for and stops). Each row runs R times, interleaved with the other,
each run ingesting the same files into a fresh data dir in a child process of its own; the median
run is shown. Both rows measure chunks in the same model's tokens (embedding.tokenizer), so both
embed the same chunks. Model loading is not timed: the in-process model is loaded before the
clock starts, and the remote one answers its dimension probe first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from ttft import machine  # benchmarks run as scripts: this folder is on sys.path

REPO = Path(__file__).resolve().parent.parent
DEV_DOCS = REPO.parent / "shared" / "eval" / "dev" / "docs" / "squad"


def measure(files: list[Path], data: Path, embedding: dict[str, Any]) -> dict[str, Any]:
    """Returns the ingest's chunk count, seconds, and seconds spent waiting for embeddings."""
    from privatellm.config import load_settings
    from privatellm.service import Service

    service = Service(load_settings(overrides={"data_dir": data, "embedding": embedding}))
    embedder = service.embedder  # loaded (or probed) before the clock starts
    embed_seconds = 0.0
    real_embed = embedder.embed_batch

    def timed_embed(texts: Any) -> Any:
        nonlocal embed_seconds
        started = time.perf_counter()
        try:
            return real_embed(texts)
        finally:
            embed_seconds += time.perf_counter() - started

    embedder.embed_batch = timed_embed  # type: ignore[method-assign]
    started = time.perf_counter()
    report = service.ingest(files)
    seconds = time.perf_counter() - started
    return {
        "embedder": f"{type(embedder).__name__} ({embedder.name}, {embedder.dimension} dims)",
        "documents": len(report.paths("added")),
        "failed": len(report.paths("failed")),
        "chunks": report.total_chunks,
        "ingest_s": round(seconds, 2),
        "chunks_per_s": round(report.total_chunks / seconds, 1),
        "embedding_share": round(embed_seconds / seconds, 2),
    }


def start_server(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Returns a `privatellm serve` on 127.0.0.1:port, answering /health."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIVATELLM_")}
    cmd = [sys.executable, "-m", "privatellm", "--data-dir", str(data), "serve"]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*cmd, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"privatellm serve exited ({server.returncode}): see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if b'"ok"' in answer.read():
                    return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"privatellm serve did not answer /health within 300 s: see {log}")


def run_child(files: list[Path], embedding: dict[str, Any], tmp: Path, label: str) -> Any:
    """Returns what `measure` gives, run in a child process of its own."""
    spec = json.dumps({"files": [str(f) for f in files], "embedding": embedding})
    data = tmp / f"data-{label}"
    cmd = [sys.executable, __file__, "--child", spec, "--child-data", str(data)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{label} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEV_DOCS, help="folder of documents")
    parser.add_argument("--every", type=int, default=5, help="take every Nth file")
    parser.add_argument("--quick", action="store_true", help="every 20th file, one run each")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per request (remote)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row (median shown)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        files = [Path(f) for f in spec["files"]]
        print(json.dumps(measure(files, args.child_data, spec["embedding"])))
        return
    every = 20 if args.quick else args.every
    files = sorted(p for p in args.corpus.rglob("*") if p.is_file())[::every]
    tokenizer = "bundled:all-MiniLM-L6-v2"  # the in-process model's: the same chunks in both rows
    remote_label = f"openai -> privatellm serve (batch {args.batch_size})"
    runs: dict[str, list[dict[str, Any]]] = {"in-process": [], remote_label: []}
    with tempfile.TemporaryDirectory(prefix="privatellm-remote-emb-") as name:
        tmp = Path(name)
        port = free_port()
        server = start_server(tmp / "served", port, tmp / "serve.log")
        remote = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "tokenizer": tokenizer,
            "batch_size": args.batch_size,
        }
        try:
            # Interleaved, so that load from others on a shared machine falls on both rows.
            for n in range(1 if args.quick else args.repeat):
                runs["in-process"].append(run_child(files, {}, tmp, f"local-{n}"))
                runs[remote_label].append(run_child(files, remote, tmp, f"remote-{n}"))
        finally:
            server.terminate()
            server.wait(timeout=60)
    rows = [summary(label, results) for label, results in runs.items()]
    for row in rows:
        row["throughput_vs_in_process"] = round(row["chunks_per_s"] / rows[0]["chunks_per_s"], 2)
    report = {"machine": machine(), "corpus": f"{len(files)} files of {args.corpus}", "rows": rows}
    print(json.dumps(report, indent=2))


def summary(label: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Returns one row: the first run's counts, the median run's rates, and the range."""
    rates = [r["chunks_per_s"] for r in results]
    middle = sorted(results, key=lambda r: float(r["chunks_per_s"]))[len(results) // 2]
    return {
        "row": label,
        **middle,
        "runs": len(results),
        "chunks_per_s_range": f"{min(rates)}-{max(rates)}",
    }


if __name__ == "__main__":
    main()
