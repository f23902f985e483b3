"""The data directory's write lock: one writer at a time, across threads and processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from privatellm.errors import StoreLockedError


class WriteLock:
    """Held by whatever changes a data directory (ingest, delete, a lexical index save).

    Writers in this process (the page's tabs, the API's requests) take turns on a thread lock;
    a file lock keeps out writers in other processes. Embedded Chroma is not safe for two
    writing processes, so a second one stops at once with a clear message instead of
    corrupting the store.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "write.lock"
        self._threads = threading.Lock()

    @contextmanager
    def held(self, wait: bool = True) -> Iterator[None]:
        """Holds the data directory for the block; wait=False fails at once if a writer in this
        process holds it (a reader's optional save must never wait behind an ingest)."""
        if not self._threads.acquire(blocking=wait):
            raise self._busy()
        try:
            with self._across_processes():
                yield
        finally:
            self._threads.release()

    @contextmanager
    def _across_processes(self) -> Iterator[None]:
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise self._busy() from None
        try:
            yield
        finally:
            lock.release()

    def _busy(self) -> StoreLockedError:
        folder = self.path.parent
        return StoreLockedError(
            f"another ingest or reindex is running on {folder}; wait for it to finish"
        )
