"""Watching a folder: the real watcher (inotify, and polling) on real files, the hashing embedder;
every case ends with the store equal to a clean ingest of the folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from privatellm.config import Settings
from privatellm.service import Service
from privatellm.types import IngestReport
from privatellm.watching import FolderWatcher, is_temporary

DEBOUNCE = 0.2
WAIT = 30.0  # bound on every wait; a passing case takes a second or two


def text(n: int, words: str = "harbour lighthouse") -> str:
    return "\n".join(f"Line {k} of note {n}: the {words} {n * 31 + k}." for k in range(12))


def snapshot(service: Service, collection: str = "default") -> list[tuple[str, str, int]]:
    """Returns (source, content hash, chunks) of every document, sorted."""
    if collection not in service.collections():
        return []
    return sorted((r.source, r.content_hash, r.chunks) for r in service.documents(collection))


def clean(folder: Path, data_dir: Path) -> list[tuple[str, str, int]]:
    """Returns the snapshot of a fresh data dir after one plain ingest of folder."""
    fresh = Service(Settings.model_validate({"data_dir": data_dir, "embedding": {"kind": "fake"}}))
    fresh.ingest([folder])
    shutil.rmtree(data_dir)
    return snapshot(fresh)


class Watched:
    """A running watcher over a folder, with the lines it told."""

    def __init__(self, service: Service, folder: Path, polling: bool, tmp: Path) -> None:
        self.service, self.folder, self.tmp = service, folder, tmp
        self.lines: list[str] = []
        self.watcher = FolderWatcher(
            service, folder, polling=polling, debounce_seconds=DEBOUNCE, on_event=self.lines.append
        )

    def until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            assert time.monotonic() < deadline, f"not within {WAIT} s: {what}; told {self.lines}"
            time.sleep(0.05)

    def in_step(self) -> None:
        """Waits until the store equals a clean ingest of the folder, and stays so."""
        expected = clean(self.folder, self.tmp / f"clean-{time.monotonic_ns()}")
        self.until(lambda: snapshot(self.service) == expected, "the store equals a clean ingest")
        assert self.watcher.wait_in_step(WAIT)
        time.sleep(DEBOUNCE * 3)  # a late, superfluous sync would show up here
        assert self.watcher.wait_in_step(WAIT)
        assert snapshot(self.service) == expected
        assert self.watcher.state().state == "in step"

    def told(self, prefix: str) -> list[str]:
        return [line for line in self.lines if line.startswith(prefix)]


@pytest.fixture(params=["inotify", "polling"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for n in range(3):
        (folder / f"note{n}.txt").write_text(text(n), encoding="utf-8")
    return folder


def _watch(fake_service: Service, folder: Path, tmp_path: Path, polling: bool) -> Iterator[Watched]:
    watched = Watched(fake_service, folder, polling, tmp_path)
    watched.watcher.start()
    try:
        assert watched.watcher.wait_in_step(WAIT), watched.lines
        yield watched
    finally:
        watched.watcher.stop()


@pytest.fixture
def watched(fake_service: Service, folder: Path, tmp_path: Path, mode: str) -> Iterator[Watched]:
    """A watcher over folder, its catch-up pass done, in each mode."""
    yield from _watch(fake_service, folder, tmp_path, polling=mode == "polling")


@pytest.fixture
def inotify(fake_service: Service, folder: Path, tmp_path: Path) -> Iterator[Watched]:
    """A watcher over folder with the native observer only."""
    yield from _watch(fake_service, folder, tmp_path, polling=False)


# -- the cases, in both modes --------------------------------------------------------------------


def test_the_catch_up_pass_ingests_the_folder(watched: Watched) -> None:
    assert sorted(watched.told("added")) == [f"added note{n}.txt (1 chunk)" for n in range(3)]
    watched.in_step()


def test_a_new_file_is_added(watched: Watched) -> None:
    (watched.folder / "sub").mkdir()
    (watched.folder / "sub" / "new.md").write_text(text(7, "orchard apples"), encoding="utf-8")
    watched.in_step()
    assert "added sub/new.md (1 chunk)" in watched.lines
    assert watched.watcher.state().last_event == "added sub/new.md (1 chunk)"


def test_a_changed_file_is_updated(watched: Watched) -> None:
    (watched.folder / "note1.txt").write_text(text(1, "glacier survey"), encoding="utf-8")
    watched.in_step()
    assert watched.told("updated") == ["updated note1.txt (1 chunk)"]


def test_a_deleted_file_is_removed(watched: Watched) -> None:
    (watched.folder / "note2.txt").unlink()
    watched.in_step()
    assert watched.told("removed") == ["removed note2.txt"]


def test_a_renamed_file_keeps_its_one_document(watched: Watched) -> None:
    before = {r.content_hash: r.id for r in watched.service.documents()}
    (watched.folder / "note0.txt").rename(watched.folder / "renamed.txt")
    watched.in_step()
    after = {r.source: r.id for r in watched.service.documents()}
    assert after[str(watched.folder / "renamed.txt")] in before.values()


def test_a_folder_moved_in_and_out(watched: Watched) -> None:
    outside = watched.tmp / "outside"
    outside.mkdir()
    for n in range(10, 14):
        (outside / f"moved{n}.txt").write_text(text(n), encoding="utf-8")
    outside.rename(watched.folder / "inside")
    watched.in_step()
    assert len(watched.told("added")) == 3 + 4
    (watched.folder / "inside").rename(watched.tmp / "gone")
    watched.in_step()
    assert len(watched.told("removed")) == 4


def test_an_editors_atomic_save_is_one_update(
    watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingests: list[list[Path]] = []
    real = watched.service.ingest

    def counted(paths: list[Path], *args: Any, **kwargs: Any) -> IngestReport:
        ingests.append(list(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(watched.service, "ingest", counted)
    target = watched.folder / "note1.txt"
    # vim: a swap file meanwhile, the original kept as a backup, the new text written in pieces
    swap = watched.folder / ".note1.txt.swp"
    swap.write_bytes(b"swap")
    os.replace(target, watched.folder / "note1.txt~")
    with target.open("w", encoding="utf-8") as f:
        f.write(text(1, "river bridge")[:40])
        f.flush()
        f.write(text(1, "river bridge")[40:])
    (watched.folder / "note1.txt~").unlink()
    swap.unlink()
    # then another editor: a temporary file renamed onto the target
    scratch = watched.folder / "note1.txt.tmp"
    scratch.write_text(text(1, "river bridge final"), encoding="utf-8")
    os.replace(scratch, target)
    watched.in_step()
    assert watched.told("updated") == ["updated note1.txt (1 chunk)"]
    assert not watched.told("removed")
    assert ingests == [[target]]  # one read of the final content, and no echo of that read


def test_a_file_written_in_slow_pieces_is_read_once_whole(
    fake_service: Service, folder: Path, tmp_path: Path, mode: str
) -> None:
    # the debounce must outlast the writer's pauses: here 0.3 s pauses against 1 s
    watched = Watched(fake_service, folder, mode == "polling", tmp_path)
    watched.watcher = FolderWatcher(
        fake_service,
        folder,
        polling=mode == "polling",
        debounce_seconds=1.0,
        on_event=watched.lines.append,
    )
    watched.watcher.start()
    try:
        assert watched.watcher.wait_in_step(WAIT)
        final = text(9, "slow copy") * 20
        with (folder / "slow.txt").open("w", encoding="utf-8") as f:
            for start in range(0, len(final), len(final) // 4 + 1):
                f.write(final[start : start + len(final) // 4 + 1])
                f.flush()
                time.sleep(0.3)
        watched.in_step()
        assert len([line for line in watched.lines if "slow.txt" in line]) == 1
        assert watched.told("added slow.txt")
    finally:
        watched.watcher.stop()


def test_two_hundred_files_dropped_at_once(watched: Watched) -> None:
    drop = watched.tmp / "drop"
    drop.mkdir()
    for n in range(200):
        (drop / f"bulk{n:03d}.txt").write_text(text(100 + n), encoding="utf-8")
    for n in range(200):
        os.replace(drop / f"bulk{n:03d}.txt", watched.folder / f"bulk{n:03d}.txt")
    watched.in_step()
    assert len(watched.told("added bulk")) == 200


# -- native observer only ------------------------------------------------------------------------


def test_hidden_and_temporary_files_cause_no_sync(inotify: Watched) -> None:
    for name in [".hidden.txt", "draft.txt~", "x.swp", "y.swx", "#auto#", ".~lock.a.odt#"]:
        (inotify.folder / name).write_text("scratch", encoding="utf-8")
    (inotify.folder / "page.crdownload").write_text("partial", encoding="utf-8")
    assert inotify.watcher.state().pending == 0
    inotify.in_step()
    assert len(inotify.lines) == 3  # the catch-up pass's


def test_restart_catches_up(fake_service: Service, folder: Path, tmp_path: Path) -> None:
    first = FolderWatcher(fake_service, folder, debounce_seconds=DEBOUNCE, on_event=print)
    first.start()
    assert first.wait_in_step(WAIT)
    first.stop()
    first.stop()  # idempotent
    (folder / "note0.txt").write_text(text(0, "changed while down"), encoding="utf-8")
    (folder / "note1.txt").unlink()
    (folder / "added.txt").write_text(text(5), encoding="utf-8")
    watched = Watched(fake_service, folder, False, tmp_path)
    watched.watcher.start()
    try:
        watched.in_step()
        assert sorted(watched.lines) == [
            "added added.txt (1 chunk)",
            "removed note1.txt",
            "updated note0.txt (1 chunk)",
        ]
    finally:
        watched.watcher.stop()


def test_a_failing_sync_is_reported_and_retried(inotify: Watched) -> None:
    from filelock import FileLock

    with FileLock(str(inotify.service.lock.path)):  # as another process's ingest would
        (inotify.folder / "late.txt").write_text(text(8), encoding="utf-8")
        inotify.until(lambda: inotify.watcher.state().state == "error", "state error")
        state = inotify.watcher.state()
        assert state.pending == 1
        assert state.last_error is not None and "another ingest" in state.last_error
        assert inotify.told("error: sync failed: another ingest")
    inotify.in_step()
    assert "added late.txt (1 chunk)" in inotify.lines


def test_a_failed_file_is_told_and_the_watcher_goes_on(inotify: Watched) -> None:
    (inotify.folder / "broken.pdf").write_bytes(b"%PDF-1.7 not really")
    inotify.until(lambda: bool(inotify.told("failed broken.pdf: ")), "a failed line")
    assert inotify.watcher.wait_in_step(WAIT)
    state = inotify.watcher.state()
    assert state.state == "in step"  # as a clean ingest would be: the file fails there too
    assert state.last_error is not None and state.last_error.startswith("failed broken.pdf: ")
    (inotify.folder / "fine.txt").write_text(text(4), encoding="utf-8")
    inotify.until(lambda: "added fine.txt (1 chunk)" in inotify.lines, "the next file")


def test_service_prune_reads_no_file(fake_service: Service, folder: Path) -> None:
    fake_service.ingest([folder])
    (folder / "note0.txt").unlink()
    (folder / "note1.txt").chmod(0)  # still there: kept, and never opened
    try:
        report = fake_service.prune([folder / "note0.txt", folder / "note1.txt"])
    finally:
        (folder / "note1.txt").chmod(0o644)
    assert report.paths("removed") == [str(folder / "note0.txt")]
    assert [Path(r.source).name for r in fake_service.documents()] == ["note1.txt", "note2.txt"]
    assert report.total_chunks == 2
    assert fake_service.lexical().stale(fake_service.documents()) == (set(), [])


def test_temporary_names() -> None:
    assert all(map(is_temporary, ["a~", "b.SWP", "c.swx", "#d#", ".e", "f.part", "g.tmp"]))
    assert not any(map(is_temporary, ["notes.md", "#hashtag.txt", "report.pdf"]))


# -- the command ---------------------------------------------------------------------------------


def test_the_watch_command_follows_a_folder_until_ctrl_c(
    folder: Path, tmp_path: Path, fake_config: Path
) -> None:
    command = [sys.executable, "-m", "privatellm", "--config", str(fake_config)]
    command += ["--data-dir", str(tmp_path / "data"), "watch", str(folder), "--debounce", "0.2"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:  # closes the pipes
        timer = threading.Timer(2 * WAIT, child.kill)  # bounds the blocking reads below
        timer.start()
        try:
            _drop_a_file_then_ctrl_c(child, folder)
        finally:
            timer.cancel()
            if child.poll() is None:
                child.kill()
                child.wait()


def _drop_a_file_then_ctrl_c(child: subprocess.Popen[str], folder: Path) -> None:
    assert child.stdout is not None and child.stderr is not None
    lines = []
    for line in child.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("watching"):
            break
    assert lines[-1] == f"watching {folder} (collection 'default'); Ctrl-C stops"
    assert sorted(lines[:-1]) == [f"added note{n}.txt (1 chunk)" for n in range(3)]
    (folder / "dropped.txt").write_text(text(6), encoding="utf-8")
    assert child.stdout.readline() == "added dropped.txt (1 chunk)\n"
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=WAIT) == 0
    assert "Traceback" not in child.stderr.read()


def test_the_watch_command_wants_folders(tmp_path: Path, fake_config: Path) -> None:
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    command = [sys.executable, "-m", "privatellm", "--config", str(fake_config)]
    done = subprocess.run(
        [*command, "watch", str(tmp_path / "file.txt")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "is a file" in done.stderr or "directory" in done.stderr
    assert "Traceback" not in done.stderr
