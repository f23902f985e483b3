"""Ingest benchmark: privatellm against the LangChain-tutorial baseline, in one run.

    python benchmarks/ingest.py [--corpus DIR] [--every N] [--skip-10x]

The 1x corpus is every Nth file of DIR (default: the dev set, N=10), copied to a temp folder; the
10x corpus is all of DIR. Each measurement runs in its own child process, so peak RSS is that
run's alone. Printed: seconds and ratios side by side, pages/s, chunks/s, the share of time in the
embedding forward pass, unchanged re-ingest, `docs rm`, CLI start-up, and peak RSS at 1x and 10x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEV_DOCS = REPO.parent / "shared" / "eval" / "dev" / "docs"


# ---------------------------------------------------------------- workers (run in a child)


def work_ours(corpus: Path, data: Path) -> dict[str, Any]:
    from privatellm.config import load_settings
    from privatellm.service import Service

    started = time.perf_counter()
    service = Service(load_settings(overrides={"data_dir": data}))
    embedder = service.embedder
    loaded = time.perf_counter()
    embed_seconds = 0.0
    real_embed = embedder.embed_batch

    def timed_embed(texts: Any) -> Any:
        nonlocal embed_seconds
        t = time.perf_counter()
        try:
            return real_embed(texts)
        finally:
            embed_seconds += time.perf_counter() - t

    embedder.embed_batch = timed_embed  # type: ignore[method-assign]
    report = service.ingest([corpus])
    done = time.perf_counter()
    records = service.documents()
    again = time.perf_counter()
    unchanged = service.ingest([corpus])
    reingest = time.perf_counter() - again
    biggest = max(records, key=lambda r: r.chunks)
    t = time.perf_counter()
    service.remove(biggest.id)
    rm_seconds = time.perf_counter() - t
    return {
        "seconds": done - started,
        "load_seconds": loaded - started,
        "ingest_seconds": done - loaded,
        "embed_seconds": embed_seconds,
        "documents": len(records),
        "failed": len(report.paths("failed")),
        "pages": sum(r.pages for r in records),
        "chunks": report.total_chunks,
        "reingest_seconds": reingest,
        "reingest_added": len(unchanged.paths("added")) + len(unchanged.paths("updated")),
        "rm_seconds": rm_seconds,
        "rm_chunks": biggest.chunks,
        "precision": embedder.precision,
    }


def work_baseline(corpus: Path, data: Path) -> dict[str, Any]:
    """The LangChain tutorial pipeline, as its users write it."""
    from baseline import tutorial_store

    return tutorial_store(corpus, data)[1]


def work_startup(data: Path) -> dict[str, Any]:
    def best_of(args: list[str], n: int = 3) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "privatellm", *args], check=True, capture_output=True
            )
            times.append(time.perf_counter() - t)
        return min(times)

    return {
        "help_seconds": best_of(["--help"]),
        "docs_list_seconds": best_of(["--data-dir", str(data), "docs", "list"]),
    }


WORKERS = {"ours": work_ours, "baseline": work_baseline}


# ---------------------------------------------------------------- the run (parent)


def child(kind: str, corpus: Path, data: Path) -> dict[str, Any]:
    """Returns a worker's numbers; each worker reports its own process's peak RSS."""
    cmd = [sys.executable, __file__, "--worker", kind, "--corpus", str(corpus), "--data", str(data)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    out = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def sample(corpus: Path, every: int, target: Path) -> Path:
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    for path in files[::every]:
        dest = target / path.relative_to(corpus)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    return target


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEV_DOCS)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--skip-10x", action="store_true")
    parser.add_argument("--worker", choices=[*sorted(WORKERS), "startup"])
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.worker:
        return _run_worker(args)

    with tempfile.TemporaryDirectory(prefix="privatellm-bench-") as tmp:
        root = Path(tmp)
        small = sample(args.corpus, args.every, root / "corpus-1x")
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}"
        )
        print(
            f"1x corpus: {sum(1 for p in small.rglob('*') if p.is_file())} files, "
            f"{size_mb(small):.1f} MB (every {args.every}th file of {args.corpus})"
        )
        base = child("baseline", small, root / "baseline")
        ours = child("ours", small, root / "ours")
        startup = child_startup(root / "ours")
        big = None if args.skip_10x else child("ours", args.corpus, root / "ours-10x")
        report(base, ours, big, startup, size_mb(small), size_mb(args.corpus))


def child_startup(data: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", "startup", "--data", str(data)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _run_worker(args: argparse.Namespace) -> None:
    import resource

    if args.worker == "startup":
        result = work_startup(args.data)
    else:
        result = WORKERS[args.worker](args.corpus, args.data)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def report(
    base: dict[str, Any],
    ours: dict[str, Any],
    big: dict[str, Any] | None,
    startup: dict[str, Any],
    small_mb: float,
    big_mb: float,
) -> None:
    def row(label: str, b: float, o: float, unit: str = "s") -> None:
        print(f"  {label:34} baseline {b:9.2f} {unit:4} ours {o:9.2f} {unit:4} ratio {b / o:6.2f}x")

    print("\n1x corpus, same files, one run:")
    row("total (model load + ingest)", base["seconds"], ours["seconds"])
    row("ingest (after model load)", base["ingest_seconds"], ours["ingest_seconds"])
    print(
        f"  pages {ours['pages']} (baseline {base['pages']}), chunks {ours['chunks']} "
        f"(baseline {base['chunks']}), failed files {ours['failed']} (baseline {base['failed']})"
    )
    print(
        f"  ours: {ours['pages'] / ours['ingest_seconds']:.1f} pages/s, "
        f"{ours['chunks'] / ours['ingest_seconds']:.1f} chunks/s, embedding precision "
        f"{ours['precision']}"
    )
    print(
        f"  baseline: {base['pages'] / base['ingest_seconds']:.1f} pages/s, "
        f"{base['chunks'] / base['ingest_seconds']:.1f} chunks/s "
        f"(parse {base['parse_seconds']:.1f} s, embed+index {base['embed_seconds']:.1f} s)"
    )
    share = ours["embed_seconds"] / ours["ingest_seconds"]
    overhead = (ours["ingest_seconds"] - ours["embed_seconds"]) / ours["embed_seconds"]
    print(
        f"  ours: embedding forward pass {ours['embed_seconds']:.1f} s = {share:.0%} of ingest; "
        f"pipeline overhead {overhead:.0%} of embedding time"
    )
    print(
        f"  unchanged re-ingest: {ours['reingest_seconds']:.2f} s = "
        f"{ours['reingest_seconds'] / ours['ingest_seconds']:.1%} of the first run "
        f"({ours['reingest_added']} re-added)"
    )
    print(
        f"  docs rm of the largest document ({ours['rm_chunks']} chunks): "
        f"{ours['rm_seconds'] * 1000:.0f} ms"
    )
    print(
        f"  start-up: --help {startup['help_seconds']:.2f} s, docs list "
        f"{startup['docs_list_seconds']:.2f} s"
    )
    print(f"  peak RSS: baseline {base['peak_rss_mb']:.0f} MB, ours {ours['peak_rss_mb']:.0f} MB")
    if big:
        print(f"\n10x corpus ({big_mb:.1f} MB, {big_mb / small_mb:.1f}x the bytes):")
        print(
            f"  ours: {big['ingest_seconds']:.1f} s, {big['documents']} documents, "
            f"{big['pages']} pages, {big['chunks']} chunks, {big['failed']} failed, "
            f"{big['chunks'] / big['ingest_seconds']:.1f} chunks/s"
        )
        print(
            f"  peak RSS {big['peak_rss_mb']:.0f} MB = "
            f"{big['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x the 1x run"
        )


if __name__ == "__main__":
    main()
