"""Live folders: how soon a saved file can be found, what an idle watcher costs, and the catch-up.

    python benchmarks/watch.py [--repeat N] [--files N] [--idle SECONDS] [--quick]

1. Latency: a new file is written (in one write, its bytes made beforehand) into a folder a
   FolderWatcher follows; the clock runs from the file's close to the moment
   `service.retrieve(a phrase only that file holds)` first returns it as the top hit (polled every
   20 ms). A one-page text file and a 50-page PDF (fpdf2, generated prose), the bundled embedder
   at default settings, the watcher's default debounce (1.0 s) and 0.25 s. Baseline in the same
   run: a direct `service.ingest([file])` of a like file, and one retrieve after it.
2. Idle CPU: a tree of small text files in 100 folders, ingested with the fake hashing embedder
   (the real one would take an hour and does not matter here: an idle watcher embeds nothing);
   this process's CPU time over SECONDS of idleness, as % of one core, with no watcher (the
   baseline: Chroma's own threads), the native observer (inotify here) and the PollingObserver.
3. Catch-up: `service.ingest([tree], prune=True)` over the unchanged tree vs the first ingest.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ttft import machine  # benchmarks run as scripts: this folder is on sys.path

from privatellm.config import load_settings
from privatellm.service import Service
from privatellm.watching import FolderWatcher

POLL_SECONDS = 0.02
PROSE_NOUNS = (
    "river harbour council winter ledger orchard engine archive valley merchant bridge season "
    "garden library market signal harvest province charter museum railway quarry festival "
    "lantern meadow treaty village canal workshop granary observatory"
)
PROSE_VERBS = "built crossed recorded opened measured repaired described reached traded kept"
WORDS = PROSE_NOUNS.split()
VERBS = PROSE_VERBS.split()


def prose(rng: random.Random, words: int) -> str:
    """Returns about `words` words of plain sentences (deterministic for a seeded rng)."""
    sentences = []
    count = 0
    while count < words:
        a, b, c = rng.sample(WORDS, 3)
        year = rng.randint(1700, 1990)
        sentence = f"In {year} the {a} {rng.choice(VERBS)} the old {b} near the {c}."
        sentences.append(sentence)
        count += len(sentence.split())
    return " ".join(sentences)


def marker(n: int) -> str:
    """Returns a sentence of made-up words that no other file holds (nor any like it: markers
    sharing a template lose to each other's shorter chunks in the dense half of retrieval)."""
    rng = random.Random(n)
    words = [
        "".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(4))
        for _ in range(6)
    ]
    return " ".join(words).capitalize() + "."


def text_bytes(n: int) -> bytes:
    """Returns a one-page text file (about 450 words) holding marker(n) in its middle."""
    rng = random.Random(n)
    return f"{prose(rng, 220)}\n\n{marker(n)}\n\n{prose(rng, 220)}\n".encode()


def pdf_bytes(n: int, pages: int) -> bytes:
    """Returns a PDF of `pages` pages: prose (about 350 words each), then marker(n) alone on the
    last (in a chunk of its own, as in the text file: amid prose it can lose to them)."""
    from fpdf import FPDF

    rng = random.Random(n)
    pdf = FPDF(format="A4")
    for page in range(pages):
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, marker(n) if page == pages - 1 else prose(rng, 350))
    return bytes(pdf.output())


# ---------------------------------------------------------------- 1. write -> retrievable


def write(path: Path, content: bytes) -> float:
    """Returns the perf_counter time at which the file was written whole and closed."""
    with path.open("wb") as f:
        f.write(content)
    return time.perf_counter()


def top_source(service: Service, question: str, collection: str | None) -> str | None:
    """Returns the file name of the top hit for the question, None if there is none."""
    hits = service.retrieve(question, collection, top_k=1)
    return Path(hits[0].chunk.source).name if hits else None


def until_found(service: Service, path: Path, question: str, timeout: float = 120) -> float:
    """Returns the perf_counter time at which path became the top hit for question."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if top_source(service, question, None) == path.name:
            return time.perf_counter()
        time.sleep(POLL_SECONDS)
    raise SystemExit(f"{path.name} was not retrievable within {timeout} s")


def watched_latencies(
    service: Service,
    folder: Path,
    make: Callable[[int], bytes],
    suffix: str,
    runs: range,
    debounce: float,
) -> list[float]:
    """Returns seconds from each file's write to its being the top hit, through a watcher."""
    watcher = FolderWatcher(service, folder, debounce_seconds=debounce, on_event=lambda _: None)
    watcher.start()
    try:
        if not watcher.wait_in_step(600):
            raise SystemExit("the watcher's catch-up pass did not end")
        seconds = []
        for n in runs:
            content = make(n)  # made before the clock starts: only the write is timed
            path = folder / f"doc-{n}{suffix}"
            written = write(path, content)
            seconds.append(until_found(service, path, marker(n)) - written)
        return seconds
    finally:
        watcher.stop()


def direct_ingests(
    service: Service, folder: Path, make: Callable[[int], bytes], suffix: str, runs: range
) -> tuple[list[float], list[float]]:
    """Returns the seconds of each direct ingest of a new file, and of one retrieve after it."""
    ingests, retrieves = [], []
    for n in runs:
        path = folder / f"direct-{n}{suffix}"
        write(path, make(n))
        started = time.perf_counter()
        service.ingest([path], "direct")
        ingested = time.perf_counter()
        found = top_source(service, marker(n), "direct")
        retrieves.append(time.perf_counter() - ingested)
        if found != path.name:
            raise SystemExit(f"direct ingest: {path.name} is not the top hit for its marker")
        ingests.append(ingested - started)
    return ingests, retrieves


def p(values: list[float], q: int) -> float:
    """Returns the q-th percentile (q in 1..99) by the inclusive method."""
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def latency_rows(root: Path, repeat: int, pages: int) -> None:
    """Prints p50/p95 write-to-retrievable per file kind and debounce, and the direct baseline."""
    service = Service(load_settings(overrides={"data_dir": root / "data-latency"}))
    folder = root / "live"
    folder.mkdir()
    write(folder / "seed.txt", text_bytes(-1))  # so the collection exists before the first poll
    print(
        f"embedder: {service.embedder.name}, {service.embedder.precision}"
    )  # loaded off the clock
    kinds: list[tuple[str, Callable[[int], bytes], str]] = [
        ("one-page text", text_bytes, ".txt"),
        (f"{pages}-page PDF", lambda n: pdf_bytes(n, pages), ".pdf"),
    ]
    print(f"\n1. write -> top hit, {repeat} runs each (seconds):")
    print(f"  {'file':16} {'path':22} {'p50':>6} {'p95':>6} {'min':>6} {'max':>6}  overhead p50")
    start = 0
    for label, make, suffix in kinds:
        ingests, retrieves = direct_ingests(
            service, root, make, suffix, range(start, start + repeat)
        )
        start += repeat
        base = statistics.median(ingests)
        row(label, "direct ingest (base)", ingests, "")
        row(label, "  + one retrieve", retrieves, "")
        for debounce in (1.0, 0.25):
            runs = range(start, start + repeat)
            start += repeat
            seconds = watched_latencies(service, folder, make, suffix, runs, debounce)
            over = statistics.median(seconds) - base - debounce
            ratio = statistics.median(seconds) / base
            row(
                label,
                f"watcher, debounce {debounce:g}",
                seconds,
                f"{over:+.2f} s, {ratio:.1f}x base",
            )


def row(label: str, path: str, values: list[float], note: str) -> None:
    print(
        f"  {label:16} {path:22} {p(values, 50):6.2f} {p(values, 95):6.2f} "
        f"{min(values):6.2f} {max(values):6.2f}  {note}"
    )


# ---------------------------------------------------------------- 2-3. a large tree


def make_tree(root: Path, files: int, folders: int) -> Path:
    """Returns a folder of `files` small text files spread over `folders` subfolders."""
    tree = root / "tree"
    rng = random.Random(7)
    for n in range(files):
        folder = tree / f"folder-{n % folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"note-{n:05d}.txt").write_text(f"Note {n}. {prose(rng, 40)}\n")
    return tree


def idle_cpu(seconds: float) -> float:
    """Returns this process's CPU time over `seconds` of sleeping, as % of one core."""
    cpu, wall = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    return 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)


@contextmanager
def watching(service: Service, tree: Path, polling: bool) -> Iterator[float]:
    """Yields the seconds the watcher took to start and catch up; stops it after."""
    started = time.perf_counter()
    watcher = FolderWatcher(service, tree, polling=polling, on_event=lambda _: None)
    watcher.start()
    try:
        if not watcher.wait_in_step(3600):
            raise SystemExit("the watcher's catch-up pass did not end")
        yield time.perf_counter() - started
    finally:
        watcher.stop()


def tree_rows(root: Path, files: int, idle: float) -> None:
    """Prints the idle CPU of each observer over the tree, and the catch-up against the first."""
    folders = 100 if files >= 1000 else 10
    t = time.perf_counter()
    tree = make_tree(root, files, folders)
    print(f"\n{files} files in {folders} folders written in {time.perf_counter() - t:.1f} s")
    settings = load_settings(
        overrides={"data_dir": root / "data-tree", "embedding": {"kind": "fake"}}
    )
    service = Service(settings)
    t = time.perf_counter()
    first = service.ingest([tree], prune=True)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    again = service.ingest([tree], prune=True)
    again_s = time.perf_counter() - t
    changed = len(again.paths("added")) + len(again.paths("updated")) + len(again.paths("removed"))
    print("\n3. catch-up (fake embedder):")
    print(
        f"  first ingest        {first_s:7.2f} s  ({len(first.paths('added'))} added, "
        f"{first.total_chunks} chunks)"
    )
    print(
        f"  unchanged, prune    {again_s:7.2f} s  = {again_s / first_s:.1%} of the first, "
        f"{changed} changed"
    )
    print(f"\n2. idle CPU over {idle:g} s, % of one core:")
    print(f"  {'no watcher (base)':22} {idle_cpu(idle):5.2f} %")
    for label, polling in (("native (inotify)", False), ("PollingObserver", True)):
        with watching(service, tree, polling) as start_s:
            cpu = idle_cpu(idle)
        print(f"  {label:22} {cpu:5.2f} %   (start + catch-up pass {start_s:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs per latency row")
    parser.add_argument("--pages", type=int, default=50, help="pages of the PDF")
    parser.add_argument("--files", type=int, default=10_000, help="files in the idle tree")
    parser.add_argument("--idle", type=float, default=60, help="seconds of idleness measured")
    parser.add_argument("--skip-tree", action="store_true", help="measure latency only")
    parser.add_argument("--quick", action="store_true", help="3 runs, 5 pages, 500 files, 10 s")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.pages, args.files, args.idle = 3, 5, 500, 10
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"machine at start: {machine()}")
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="privatellm-watch-") as tmp:
        if not args.skip_tree:
            tree_rows(Path(tmp), args.files, args.idle)  # first: no model threads yet
        latency_rows(Path(tmp), args.repeat, args.pages)
    print(f"\nmachine at end: {machine()}; run took {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
