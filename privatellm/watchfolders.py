"""The folders settings declare (`ingest.watch`), kept in step while `serve` or the page runs.

One FolderWatcher per declared folder, all started and stopped together; a watcher's state reads
the same on the page, in the API and in the terminal through `describe`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from privatellm.service import Service
from privatellm.watching import FolderWatcher, WatchState


def start_watchers(
    service: Service, on_event: Callable[[str], None] | None = None
) -> list[FolderWatcher]:
    """Returns one started watcher per folder in service's `ingest.watch` (none started if one
    fails to start: those already running are stopped again)."""
    ingest = service.settings.ingest
    watchers: list[FolderWatcher] = []
    try:
        for folder in ingest.watch:
            watcher = FolderWatcher(
                service,
                folder.path.expanduser().resolve(),
                folder.collection,
                polling=folder.polling,
                debounce_seconds=ingest.watch_debounce_seconds,
                on_event=on_event,
            )
            watcher.start()
            watchers.append(watcher)
    except BaseException:
        stop_watchers(watchers)
        raise
    return watchers


def stop_watchers(watchers: Iterable[FolderWatcher]) -> None:
    """Stops every watcher, each one even if stopping another failed."""
    failures: list[BaseException] = []
    for watcher in watchers:
        try:
            watcher.stop()
        except Exception as e:  # the others must still stop; the first failure is raised after
            failures.append(e)
    if failures:
        raise failures[0]


def describe(state: WatchState) -> str:
    """Returns how a watched folder stands, in a few words: 'in step', '3 pending', 'starting',
    'last error: ...', or one of the first three followed by the last error."""
    error = f"last error: {state.last_error}" if state.last_error else ""
    if state.state == "error":
        return error or "error"
    now = f"{state.pending} pending" if state.state == "pending" else state.state
    return f"{now}; {error}" if error else now
