"""Files handed over as bytes (the page's uploader, the HTTP API), kept in the data dir.

An upload is saved as DATA/uploads/<collection>/<safe name> and ingested from there like any
other path: uploading a changed file under the same name replaces its document, and deleting the
document deletes the copy.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from privatellm.ingest import display_path
from privatellm.types import FileOutcome, IngestReport

MAX_NAME_BYTES = 200  # under the 255-byte limit of common file systems, with room for " (2)"
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')


@dataclass(frozen=True)
class Upload:
    name: str  # as the client sent it: any string, never trusted as a path
    data: bytes


@dataclass(frozen=True)
class Staged:
    """An upload written to its place, with the bytes it replaced (None: the name was new)."""

    name: str  # as the client sent it
    path: Path
    previous: bytes | None

    def undo(self) -> None:
        """Puts back what was there before the upload."""
        if self.previous is None:
            self.path.unlink(missing_ok=True)
        else:
            _write_atomically(self.path, self.previous)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def safe_filename(name: str) -> str:
    """Returns name reduced to a plain file name: no folders, no control or reserved characters,
    no leading dots, at most MAX_NAME_BYTES bytes of UTF-8, extension kept.

    Written here rather than taken from werkzeug's secure_filename, which keeps only ASCII and
    would turn 本地运行Llama笔记.txt into Llama.txt.
    """
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    stem, suffix = _split(name)
    suffix = suffix[:16]
    room = MAX_NAME_BYTES - len(suffix.encode()) - 1
    stem = stem.encode()[:room].decode("utf-8", errors="ignore").rstrip() or "upload"
    return f"{stem}.{suffix}" if suffix else stem


def stage(folder: Path, uploads: Sequence[Upload]) -> list[Staged]:
    """Writes each upload into folder under its safe name (" (2)" added for a name repeated in
    this batch) and returns where, with what each replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    staged = []
    for upload in uploads:
        path = folder / _unique(safe_filename(upload.name), taken)
        previous = path.read_bytes() if path.is_file() else None
        _write_atomically(path, upload.data)
        staged.append(Staged(upload.name, path, previous))
    return staged


def ingest_uploads(
    folder: Path, uploads: Sequence[Upload], ingest: Callable[[list[Path]], IngestReport]
) -> IngestReport:
    """Returns one outcome per upload, in order, named as sent, after staging the uploads in
    folder and ingesting them there.

    What fails or repeats a document leaves nothing behind, and what it was meant to replace
    stays; if ingest itself raises, every staged file is put back as it was.
    """
    staged = stage(folder, uploads)
    try:
        report = ingest([s.path for s in staged])
    except BaseException:
        for s in staged:
            s.undo()
        raise
    by_path = {o.path: o for o in report.outcomes}
    outcomes = [_settle(s, by_path.get(display_path(s.path))) for s in staged]
    return IngestReport(outcomes, report.total_chunks)


def _settle(staged: Staged, outcome: FileOutcome | None) -> FileOutcome:
    """Returns the upload's outcome, keeping its file on disk only if its document was stored."""
    if outcome is None or outcome.outcome in ("failed", "skipped"):
        staged.undo()  # the store kept the previous version, if any: so does the disk
    elif outcome.outcome == "duplicate":
        staged.discard()  # the store holds no document for this path now
    found = outcome or FileOutcome(staged.name, "failed", "not ingested")
    return replace(found, path=staged.name)


def _split(name: str) -> tuple[str, str]:
    stem, dot, suffix = name.rpartition(".")
    return (stem, suffix) if dot and stem else (name, "")


def _unique(name: str, taken: set[str]) -> str:
    stem, suffix = _split(name)
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem} ({n}).{suffix}" if suffix else f"{stem} ({n})"
    taken.add(candidate)
    return candidate


def _write_atomically(path: Path, data: bytes) -> None:
    # A hidden name while writing: ingest skips dot files, so a half-written upload is never read.
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
