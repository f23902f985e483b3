"""Parsing: files in, their chunks out, in order; in parser processes beside the embedder.

PDF text extraction costs about as much CPU as embedding the text, and OCR of a scanned page
far more, so ingest parses the next files in other processes while the main process embeds.
At most a few files are parsed ahead, so memory stays flat however large the corpus.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from privatellm.chunking import Chunker
from privatellm.config import ChunkingSettings, IngestSettings
from privatellm.embeddings import TokenCounter
from privatellm.errors import LoaderError
from privatellm.loaders import file_hash, parse, read_file
from privatellm.types import Chunk, Document, Reading


@dataclass(frozen=True)
class Job:
    path: Path
    shown: str  # the path as stored and printed
    known_hash: str | None  # content hash already ingested for this path, if any


@dataclass
class Parsed:
    """What became of one file: unchanged, failed (with a reason), or a chunked document."""

    job: Job
    digest: str = ""
    document: Document | None = None
    chunks: list[Chunk] = field(default_factory=list)
    error: str = ""

    @property
    def unchanged(self) -> bool:
        return not self.error and self.document is None


class _Worker:
    """Per-process state: the chunker, built once from picklable parts."""

    chunker: Chunker | None = None
    settings: IngestSettings | None = None
    reading: Reading = Reading()


def _setup(chunking: ChunkingSettings, counter: TokenCounter, settings: IngestSettings) -> None:
    _Worker.chunker = Chunker(chunking, counter)
    _Worker.settings = settings
    _Worker.reading = settings.reading()


def _setup_worker(
    chunking: ChunkingSettings, counter: TokenCounter, settings: IngestSettings, parent: int
) -> None:
    # Ctrl-C is the main process's to handle: it stops cleanly and says so; workers printing
    # their own KeyboardInterrupt tracebacks would bury that message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(parent)
    _setup(chunking, counter, settings)


def _die_with(parent: int) -> None:
    """Ends this worker when the ingest that started it dies, even by SIGKILL (Linux).

    Without this, `kill -9` of an ingest left its parser process waiting for work forever,
    holding the ingest's stdout and stderr open (found by tests/test_crash_safety.py).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _parse(job: Job) -> Parsed:
    chunker, settings = _Worker.chunker, _Worker.settings
    assert chunker is not None and settings is not None, "_setup() runs first"
    try:
        data = read_file(job.path, int(settings.max_file_mb * 2**20))
        digest = file_hash(data)
        if digest == job.known_hash:  # unchanged: one read, no parse
            return Parsed(job, digest)
        document = parse(job.path, data, job.shown, settings.max_line_chars, _Worker.reading)
        return Parsed(job, digest, document, chunker.split(document))
    except LoaderError as e:
        return Parsed(job, error=str(e))
    except Exception as e:  # a parser bug on one file must not end the whole ingest
        return Parsed(job, error=f"{job.path.name}: unexpected {type(e).__name__}: {e}"[:300])


def parse_all(
    jobs: Iterable[Job],
    chunking: ChunkingSettings,
    counter: TokenCounter,
    settings: IngestSettings,
    parallel: bool,
) -> Iterator[Parsed]:
    """Yields each job's result in job order, parsing ahead in worker processes if parallel."""
    if not parallel or settings.workers == 0:
        _setup(chunking, counter, settings)
        yield from map(_parse, jobs)
        return
    # spawn, not fork: the parent holds torch's thread pools, which a forked child would inherit.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        settings.workers,
        mp_context=context,
        initializer=_setup_worker,
        initargs=(chunking, counter, settings, os.getpid()),
    ) as pool:
        ahead: deque[Future[Parsed]] = deque()
        for job in jobs:
            ahead.append(pool.submit(_parse, job))
            if len(ahead) > 2 * settings.workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
