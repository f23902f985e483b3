"""Load check of `privatellm serve`: concurrent clients asking while a folder ingests.

    python benchmarks/load.py --qa ../shared/eval/dev/qa.jsonl --docs ../shared/eval/dev/docs

A fresh data dir gets the documents of --base-docs answerable dev questions (SQuAD, CMRC,
DomainRAG: English and Chinese text and HTML). A real `privatellm serve` process then answers
first one client alone (the baseline: unloaded latency), then --clients clients x --questions
questions each (POST /v1/chat/completions, use_context) while another client uploads
--ingest-docs further documents one by one (POST /v1/ingest/file). Errors are any answer that
is not HTTP 200 (target 0); uploads refused for a reason of their own (a scanned PDF) are
counted apart. The dev documents are read in place, never copied into the repository.

`--store chroma --store chroma-server` runs the whole check once per store kind, one after the
other (the server is a `chroma run` started here), and prints them side by side; `--engine fake`
takes the model out of the measurement, which otherwise hides the store behind its queue.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from privatellm.evaluate import load_items

DATASETS = ("squad", "cmrc2018", "domainrag")


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    abstained: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies) or [0.0]
        answered = len(self.latencies)
        return {
            "answered": answered,
            "errors": len(self.errors),
            "abstained": self.abstained,
            "p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "throughput_qps": round(answered / self.seconds, 3) if self.seconds else 0.0,
            "seconds": round(self.seconds, 1),
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pick(qa: Path, docs: Path, base: int, extra: int) -> tuple[list[str], list[Path], list[Path]]:
    """Returns questions, the documents that answer them, and other documents to ingest."""
    items = [i for i in load_items(qa) if i.answerable and i.dataset in DATASETS and i.gold_source]
    chosen: list[str] = []
    sources: list[Path] = []
    for item in items:
        source = docs / str(item.gold_source)
        if source not in sources:
            if len(sources) == base:
                continue
            sources.append(source)
        chosen.append(item.question)
    used = set(sources)
    others = sorted(
        p for d in DATASETS for p in (docs / d).iterdir() if p.is_file() and p not in used
    )
    return chosen, sources, others[:extra]


def _privatellm(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "privatellm", "--data-dir", str(data), *args]


def _serve(data: Path, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = _privatellm(data, "serve", "--port", str(port))
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait(url: str, server: subprocess.Popen[bytes], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("the server did not start")


def _ask(http: httpx.Client, question: str, phase: Phase, lock: threading.Lock) -> None:
    body = {"messages": [{"role": "user", "content": question}], "use_context": True}
    started = time.perf_counter()
    try:
        response = http.post("/v1/chat/completions", json=body)
        ok = response.status_code == 200
        detail = "" if ok else f"HTTP {response.status_code}: {response.text[:200]}"
        abstained = ok and bool(response.json()["choices"][0].get("abstained"))
    except httpx.HTTPError as e:
        ok, detail, abstained = False, f"{type(e).__name__}: {e}", False
    elapsed = time.perf_counter() - started
    with lock:
        if ok:
            phase.latencies.append(elapsed)
            phase.abstained += abstained
        else:
            phase.errors.append(detail)


def _run_clients(url: str, questions: list[str], clients: int, each: int) -> Phase:
    phase, lock = Phase(), threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=900) as http:
            for k in range(each):
                _ask(http, questions[(n * each + k) % len(questions)], phase, lock)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.seconds = time.perf_counter() - started
    return phase


def _ingest(url: str, files: list[Path], report: dict[str, Any], stop: threading.Event) -> None:
    started = time.perf_counter()
    done, refused, errors = 0, 0, []
    with httpx.Client(base_url=url, timeout=900) as http:
        for path in files:
            if stop.is_set():
                break
            response = http.post("/v1/ingest/file", files={"file": (path.name, path.read_bytes())})
            if response.status_code == 200:
                done += 1
            elif response.status_code in (413, 415, 422):
                refused += 1  # the file's own problem, reported with its reason
            else:
                errors.append(f"{path.name}: HTTP {response.status_code}")
    report.update(
        files=done,
        refused=refused,
        errors=len(errors),
        seconds=round(time.perf_counter() - started, 1),
    )


def _peak_rss(pid: int, stop: threading.Event, out: dict[str, float], prefix: str = "") -> None:
    import psutil

    process = psutil.Process(pid)
    peak = 0
    while not stop.is_set():
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.5)
    out[f"{prefix}peak_rss_mb"] = round(peak / 2**20)


def _chroma_server(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Starts `chroma run` (shipped with chromadb) on a free loopback port."""
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    port = _free_port()
    cmd = [chroma, "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)]
    with (folder.parent / "chroma.log").open("wb") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2).is_success:
                return server, port
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("the Chroma server did not start")


def run(args: argparse.Namespace, store: str) -> dict[str, Any]:
    """One full load check against one store kind; returns its summary."""
    questions, base, extra = _pick(args.qa, args.docs, args.base_docs, args.ingest_docs)
    env = {
        **os.environ,
        "PRIVATELLM_ENGINE__KIND": args.engine,
        "PRIVATELLM_ENGINE__MAX_TOKENS": str(args.max_tokens),
        # every client may wait behind all the others' answers
        "PRIVATELLM_ENGINE__WAIT_SECONDS": "900",
    }
    with tempfile.TemporaryDirectory(prefix="privatellm-load-") as tmp:
        chroma = None
        memory: dict[str, float] = {}
        if store == "chroma-server":
            (Path(tmp) / "chroma").mkdir()
            chroma, chroma_port = _chroma_server(Path(tmp) / "chroma", env)
            env |= {"PRIVATELLM_STORE__KIND": store, "PRIVATELLM_STORE__PORT": str(chroma_port)}
        data = Path(tmp) / "data"
        subprocess.run(
            _privatellm(data, "ingest", *map(str, base)), env=env, check=True, capture_output=True
        )
        port = _free_port()
        server = _serve(data, port, env, Path(tmp) / "serve.log")
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(url, server)
            stop = threading.Event()
            watchers = [threading.Thread(target=_peak_rss, args=(server.pid, stop, memory))]
            if chroma is not None:
                watchers.append(
                    threading.Thread(target=_peak_rss, args=(chroma.pid, stop, memory, "chroma_"))
                )
            for watcher in watchers:
                watcher.start()
            baseline = _run_clients(url, questions, 1, args.baseline_questions)
            ingest: dict[str, Any] = {}
            ingester = threading.Thread(
                target=_ingest, args=(url, extra, ingest, threading.Event())
            )
            ingester.start()
            loaded = _run_clients(url, questions, args.clients, args.questions)
            ingester.join()
            stop.set()
            for watcher in watchers:
                watcher.join()
        finally:
            server.terminate()
            server.wait(timeout=60)
            if chroma is not None:
                chroma.terminate()
                chroma.wait(timeout=60)
    return {
        "store": store,
        "engine": args.engine,
        "max_tokens": args.max_tokens,
        "base_docs": len(base),
        "baseline_1_client": baseline.summary(),
        f"load_{args.clients}_clients": loaded.summary(),
        "ingest_during_load": ingest,
        **memory,
        "ratio_p50_load_vs_alone": round(
            statistics.median(loaded.latencies or [0])
            / statistics.median(baseline.latencies or [1]),
            2,
        ),
        "ratio_throughput_load_vs_alone": round(
            (loaded.summary()["throughput_qps"] or 0) / (baseline.summary()["throughput_qps"] or 1),
            2,
        ),
        "first_errors": (baseline.errors + loaded.errors)[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qa", type=Path, required=True)
    parser.add_argument("--docs", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--questions", type=int, default=50, help="per client")
    parser.add_argument("--baseline-questions", type=int, default=10)
    parser.add_argument("--base-docs", type=int, default=60)
    parser.add_argument("--ingest-docs", type=int, default=100)
    parser.add_argument("--engine", choices=["llamacpp", "fake"], default="llamacpp")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--store",
        action="append",
        choices=["chroma", "chroma-server"],
        help="store kind, repeatable: several run one after the other, side by side",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = [run(args, store) for store in args.store or ["chroma"]]
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "runs": runs,
    }
    if len(runs) > 1:
        key = f"load_{args.clients}_clients"
        first = runs[0][key]
        result["ratios_vs_first_store"] = {
            r["store"]: {
                "p50": round(r[key]["p50_s"] / (first["p50_s"] or 1), 2),
                "p95": round(r[key]["p95_s"] / (first["p95_s"] or 1), 2),
                "throughput": round(r[key]["throughput_qps"] / (first["throughput_qps"] or 1), 2),
            }
            for r in runs
        }
    print(json.dumps(result, ensure_ascii=False, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
