"""Keeping a collection in step with a folder: a catch-up pass, then a sync per settled change.

A watchdog observer (inotify on Linux, the native API elsewhere, or polling) reports changes. A
changed path waits until no event has come for it for `debounce_seconds` and its size and mtime
held still over that time, so an editor's save dance or a file still being copied is read once,
whole. The paths that settle together are synced in one ingest, then the documents of those that
vanished are removed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from privatellm.errors import PrivateLLMError
from privatellm.ingest import display_path
from privatellm.loaders import supported
from privatellm.types import FileOutcome, IngestReport

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from privatellm.service import Service

LOG = logging.getLogger("privatellm.watch")

State = Literal["starting", "in step", "pending", "error"]
Signature = tuple[int, int] | None  # (size, mtime in ns); None: the path does not exist

# Names editors, office suites and browsers give the files they write before the real one.
TEMPORARY_SUFFIXES = ("~", ".swp", ".swx", ".part", ".crdownload", ".tmp")
# Opening and closing a file unwritten (as ingest itself does) must not count as a change.
EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
# A sync that raised (the store locked by another process, a full disk) is tried again after this.
RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class WatchState:
    path: str  # the watched folder, as given (absolute)
    collection: str
    state: State
    pending: int  # paths waiting to be synced
    last_error: str | None  # last failure, one line
    last_event: str | None  # last one-line event ("added report.pdf (12 chunks)")


def is_temporary(name: str) -> bool:
    """Returns whether a file name is hidden or one of an editor's or download's scratch files."""
    lowered = name.lower()
    return (
        name.startswith(".")
        or lowered.endswith(TEMPORARY_SUFFIXES)
        or (len(name) > 1 and name.startswith("#") and name.endswith("#"))
    )


def signature(path: str) -> Signature:
    """Returns the path's size and mtime, or None if it is gone."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def event_line(outcome: FileOutcome, name: str) -> str | None:
    """Returns the one line an outcome is reported with; None for those that stay quiet."""
    if outcome.outcome in ("added", "updated"):
        chunks = f"{outcome.chunks} chunk{'' if outcome.chunks == 1 else 's'}"
        return f"{outcome.outcome} {name} ({chunks})"
    if outcome.outcome == "removed":
        return f"removed {name}"
    if outcome.outcome == "failed":
        return f"failed {name}: {outcome.detail}"
    return None


@dataclass
class _Change:
    due: float  # monotonic time from which the path may be synced
    seen: Signature  # at its last event (or look)


class _Handler(FileSystemEventHandler):
    def __init__(self, note: Callable[[str], None]) -> None:
        self._note = note

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._note(os.fsdecode(event.src_path))
        if event.dest_path:  # a move: the destination is where the content now is
            self._note(os.fsdecode(event.dest_path))


class FolderWatcher:
    """Keeps one collection in step with one folder, from a thread of its own."""

    def __init__(
        self,
        service: Service,
        path: Path,
        collection: str | None = None,
        *,
        polling: bool = False,
        debounce_seconds: float = 1.0,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path.absolute()
        self.collection = collection or service.settings.collection
        self._service = service
        self._polling = polling
        self._debounce = debounce_seconds
        self._on_event = on_event or LOG.info
        self._root = display_path(self.path)
        self._data_dir = display_path(service.settings.data_dir.absolute())
        self._changes: dict[str, _Change] = {}
        self._syncing = 0  # paths in the sync under way
        self._caught_up = False
        self._failing = False  # the last sync could not run
        self._last_error: str | None = None
        self._last_event: str | None = None
        self._stopping = False
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    # -- the public face ---------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the thread that runs the catch-up pass, then follows changes; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"watch {self._root}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stops following changes once the sync under way (if any) ends; waits for that."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def state(self) -> WatchState:
        """Returns where the watcher stands now."""
        with self._cv:
            pending = len(self._changes) + self._syncing
            state: State = "pending" if pending else "in step"
            if self._failing:
                state = "error"
            elif not self._caught_up:
                state = "starting"
            return WatchState(
                self._root, self.collection, state, pending, self._last_error, self._last_event
            )

    def wait_in_step(self, timeout: float) -> bool:
        """Returns True once the catch-up pass is done and no change waits to be synced, False
        if that did not happen within timeout seconds."""
        with self._cv:
            return self._cv.wait_for(
                lambda: self._caught_up and not self._changes and not self._syncing, timeout
            )

    # -- events, from the observer's thread --------------------------------------------------------

    def _note(self, path: str) -> None:
        if self._ignored(path):
            return
        with self._cv:
            self._changes[path] = _Change(time.monotonic() + self._debounce, signature(path))
            self._cv.notify_all()

    def _ignored(self, path: str) -> bool:
        if path == self._root or not path.startswith(self._root + os.sep):
            return True  # the folder itself: its entries report their own changes
        if path == self._data_dir or path.startswith(self._data_dir + os.sep):
            return True  # the store's own writes, when it lives inside the folder
        relative = path[len(self._root) + 1 :].split(os.sep)
        # ingest skips hidden folders and everything in them
        return any(part.startswith(".") for part in relative) or is_temporary(relative[-1])

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        observer = self._observe()
        if observer is None:
            return  # the error is reported; nothing can be followed
        try:
            while True:
                with self._cv:
                    while not self._due_or_stopping():
                        # the first due change may be a newer, earlier one: recompute each time
                        self._cv.wait(self._wait_seconds())
                    if self._stopping:
                        return
                    batch = self._settled() if self._caught_up else []
                if not self._caught_up or batch:
                    self._sync(batch)
        finally:
            observer.stop()
            observer.join()

    def _observe(self) -> BaseObserver | None:
        """Returns the started observer; a native one that cannot start (inotify's watch limit
        reached) gives way to polling, and with neither the error is reported."""
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        kinds: list[Callable[[], BaseObserver]] = [
            lambda: PollingObserver(timeout=max(self._debounce, 0.1))
        ]
        if not self._polling:
            kinds.insert(0, Observer)
        for make in kinds:
            observer = make()
            try:
                observer.schedule(
                    _Handler(self._note), self._root, recursive=True, event_filter=EVENTS
                )
                observer.start()
                return observer
            except OSError as e:
                self._failed(f"cannot watch {self._root}: {e}")
        return None

    def _due_or_stopping(self) -> bool:
        if self._stopping or not self._caught_up:
            return True
        now = time.monotonic()
        return any(change.due <= now for change in self._changes.values())

    def _wait_seconds(self) -> float | None:
        """Returns how long until the first change is due (None: until the next event)."""
        if not self._changes:
            return None
        return max(0.0, min(c.due for c in self._changes.values()) - time.monotonic())

    def _settled(self) -> list[str]:
        """Returns the due paths whose size and mtime held still since their last event (the
        caller holds the lock); those still changing wait another debounce."""
        now = time.monotonic()
        batch = []
        for path, change in list(self._changes.items()):
            if change.due > now:
                continue
            current = signature(path)
            if current == change.seen:
                batch.append(path)
                del self._changes[path]
            else:  # written to without an event (a network share between two polls)
                self._changes[path] = _Change(now + self._debounce, current)
        self._syncing = len(batch)
        return batch

    def _sync(self, batch: list[str]) -> None:
        try:
            if not self._caught_up:
                report = self._service.ingest([self.path], self.collection, prune=True)
            else:
                report = self._apply(batch)
        except Exception as e:  # the watcher keeps going, whatever a sync meets
            self._retry_later(batch)
            reason = str(e) if isinstance(e, PrivateLLMError) else f"{type(e).__name__}: {e}"
            self._failed(f"sync failed: {reason}; retrying in {RETRY_SECONDS:g} s")
            return
        self._report(report)
        with self._cv:
            self._caught_up = True
            self._syncing = 0
            # A file that cannot be read leaves the folder in step (a clean ingest fails it too):
            # it shows as the last error, and "error" is kept for syncs that could not run.
            self._failing = False
            self._cv.notify_all()

    def _apply(self, batch: Sequence[str]) -> IngestReport:
        """Returns what happened after ingesting the batch's paths that exist (in one ingest)
        and then removing the documents of those that vanished.

        Ingest first: it recognises a moved file's content at its new path and moves its
        document, which removing the old path first would throw away."""
        present = [
            Path(p) for p in batch if os.path.isdir(p) or (os.path.isfile(p) and supported(Path(p)))
        ]
        report = IngestReport()
        if present:
            report = self._service.ingest(present, self.collection)
        gone = [Path(p) for p in batch if not os.path.lexists(p)]
        if gone:
            pruned = self._service.prune(gone, self.collection)
            report.outcomes += pruned.outcomes
            report.total_chunks = pruned.total_chunks
        return report

    def _report(self, report: IngestReport) -> None:
        """Tells one line per change; a failed file becomes the last error."""
        for outcome in report.outcomes:
            line = event_line(outcome, self._name(outcome.path))
            if line is None:
                continue
            with self._cv:
                if outcome.outcome == "failed":
                    self._last_error = line
                self._last_event = line
            self._on_event(line)

    def _name(self, source: str) -> str:
        prefix = self._root + os.sep
        return source[len(prefix) :] if source.startswith(prefix) else source

    def _retry_later(self, batch: Sequence[str]) -> None:
        with self._cv:
            due = time.monotonic() + RETRY_SECONDS
            for path in batch:
                self._changes.setdefault(path, _Change(due, signature(path)))
            self._syncing = 0
            if not self._caught_up:  # the catch-up pass is tried again after the same pause
                self._cv.wait_for(lambda: self._stopping, RETRY_SECONDS)

    def _failed(self, line: str) -> None:
        with self._cv:
            repeated = line == self._last_error
            self._last_error = line
            self._failing = True
        if not repeated:  # a lasting failure is told once, not at every retry
            self._on_event(f"error: {line}")
