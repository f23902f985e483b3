"""Crash safety: `privatellm ingest` killed with SIGKILL at 20 seeded random moments, each time
on a fresh data dir and then re-run to completion, ends in exactly the state of a clean run; after
each kill nothing is half-visible. Ctrl-C (SIGINT) stops cleanly with a message.

The hashing embedder keeps the 42 ingests fast; the crash points are in the store's write order,
which does not depend on the embedding model. "The same state" is: the same documents, chunk
count, every stored chunk's id, text, metadata and vector (one digest), the lexical index in step,
and the same lexical (BM25, exact) results. Dense results are not compared: HNSW search is
approximate and its graph depends on the order vectors arrive in, which a crash changes (with
the hashing embedder's vectors two builds found different 12th-30th neighbours). State is read
by a child process each time, so no Chroma client of this process caches a store that a child
then changes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_pdf

FILES, PDFS, KILLS, SEED = 200, 20, 20, 7
ENV = {"PRIVATELLM_EMBEDDING__KIND": "fake"}
QUERIES = ["harbour lighthouse 17", "orchard apples 42", "glacier 123 survey", "river 199 bridge"]
STATE = r"""
import hashlib, json, sys
import numpy
from pathlib import Path
from privatellm.config import Settings
from privatellm.service import Service

service = Service(Settings(data_dir=Path(sys.argv[1]), embedding={"kind": "fake"}))
if "default" not in service.collections():
    print(json.dumps({"documents": [], "chunks": 0, "half_visible": [], "lexical_in_step": True}))
    raise SystemExit
collection = service.store.open("default")
records = collection.documents()
stored = {}
for chunk in collection.chunk_texts([r.id for r in records]):
    stored[chunk.doc_id] = stored.get(chunk.doc_id, 0) + 1
drop, add = service.lexical().stale(records)
# Everything stored, compared whole: ids, texts, metadata and vectors of every chunk.
digest = hashlib.sha256()
for row in sorted(collection.rows(), key=lambda r: r.id):
    meta = {k: v for k, v in row.metadata.items() if k != "ingested_at"}
    digest.update(json.dumps([row.id, row.text, meta], sort_keys=True).encode())
    digest.update(numpy.asarray(row.vector, dtype="<f4").tobytes())
hits = {q: [(h.chunk.id, round(h.score, 4)) for h in service.retrieve(q, top_k=5, mode="lexical")]
        for q in sys.argv[2:]}
print(json.dumps({
    "documents": sorted([r.id, Path(r.source).name, r.pages, r.chunks] for r in records),
    "chunks": collection.count(),
    "half_visible": [r.id for r in records if stored.get(r.id, 0) != r.chunks],
    "lexical_in_step": not drop and not add,
    "stored": digest.hexdigest(),
    "hits": hits,
}))
"""


def _corpus(folder: Path) -> Path:
    folder.mkdir()
    words = ["harbour", "lighthouse", "orchard", "apples", "glacier", "survey", "river", "bridge"]
    rng = random.Random(SEED)
    for n in range(FILES - PDFS):
        lines = [
            f"Note {n}, line {k}: the {rng.choice(words)} {n} and the {rng.choice(words)} "
            f"{rng.randrange(1000)} were recorded on day {k}."
            for k in range(rng.randrange(20, 80))
        ]
        (folder / f"note-{n:03d}.txt").write_text("\n".join(lines), encoding="utf-8")
    for n in range(PDFS):
        make_pdf(
            folder / f"report-{n:02d}.pdf",
            [f"Report {n} page {p} on the river {n}." for p in (1, 2, 3)],
        )
    return folder


def _ingest(data: Path, corpus: Path) -> subprocess.Popen[bytes]:
    """Starts an ingest whose stderr goes to DATA.log (a file: a pipe would also hang on any
    process the ingest left behind, which is one of the things checked)."""
    cmd = [sys.executable, "-m", "privatellm", "--data-dir", str(data), "ingest", str(corpus)]
    with data.with_suffix(".log").open("ab") as log:
        return subprocess.Popen(
            cmd,
            env={**os.environ, **ENV},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _complete(data: Path, corpus: Path) -> float:
    started = time.perf_counter()
    process = _ingest(data, corpus)
    assert process.wait(timeout=600) == 0, data.with_suffix(".log").read_text()
    return time.perf_counter() - started


def _stat(pid: int) -> list[str] | None:
    """Returns /proc/PID/stat's fields after the name (state, parent, ...), None if gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _gone(pids: list[int], seconds: float = 10) -> bool:
    """Waits until none of pids runs (zombies count as gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if (fields := _stat(p)) is not None and fields[0] != "Z"]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def _state(data: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", STATE, str(data), *QUERIES],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def corpus_and_clean(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, object], float]:
    root = tmp_path_factory.mktemp("crash")
    corpus = _corpus(root / "corpus")
    seconds = _complete(root / "clean", corpus)
    clean = _state(root / "clean")
    assert len(clean["documents"]) == FILES  # type: ignore[arg-type]
    return corpus, clean, seconds


def test_sigkill_at_20_random_moments_converges_to_a_clean_run(
    tmp_path: Path, corpus_and_clean: tuple[Path, dict[str, object], float]
) -> None:
    corpus, clean, seconds = corpus_and_clean
    rng = random.Random(SEED)
    killed_mid_run = 0
    for kill in range(KILLS):
        data = tmp_path / f"run-{kill:02d}"
        process = _ingest(data, corpus)
        time.sleep(rng.uniform(0.05, 1.1) * seconds)
        if process.poll() is None:
            killed_mid_run += 1
        helpers = _children_of(process.pid)  # parser worker, multiprocessing's resource tracker
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        assert _gone(helpers), f"kill {kill}: a helper process outlived the ingest"
        after_crash = _state(data)
        assert after_crash["half_visible"] == [], f"kill {kill}: a document is half-visible"
        assert after_crash["lexical_in_step"], f"kill {kill}: lexical index out of step"
        _complete(data, corpus)
        final = _state(data)
        assert final == clean, f"kill {kill} at a random moment did not converge"
    assert killed_mid_run >= KILLS // 2  # most kills really interrupted an ingest


def test_ctrl_c_stops_cleanly_with_a_message(
    tmp_path: Path, corpus_and_clean: tuple[Path, dict[str, object], float]
) -> None:
    corpus, clean, seconds = corpus_and_clean
    data = tmp_path / "interrupted"
    process = _ingest(data, corpus)
    time.sleep(0.5 * seconds)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    err = data.with_suffix(".log").read_text()
    if process.returncode == 130:
        assert "interrupted" in err and "Traceback" not in err
    else:  # it finished before the signal arrived
        assert process.returncode == 0
    assert _state(data)["half_visible"] == []
    _complete(data, corpus)
    assert _state(data) == clean
