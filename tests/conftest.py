"""Shared fixtures: settings in tmp dirs, the real bundled embedder (loaded once), file makers."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from privatellm.config import EmbeddingSettings, Settings, StoreSettings
from privatellm.embeddings import Embedder, SentenceTransformerEmbedder
from privatellm.service import Service

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "ingest"


# -- every process a test starts is gone when it ends --------------------------------------------

# multiprocessing's own helper (the spawn context's resource tracker) lives as long as this process.
INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def living_descendants() -> set[psutil.Process]:
    """Returns the processes below this one that still run (zombies have exited), but for
    multiprocessing's helpers."""
    found = set()
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if not any(helper in " ".join(process.cmdline()) for helper in INTERPRETER_HELPERS):
                found.add(process)
    return found


def leftovers(
    before: set[psutil.Process], seconds: float, own_trees_only: bool = False
) -> list[psutil.Process]:
    """Returns the processes started since before that still run after up to seconds of waiting.

    own_trees_only: leave out those started by a process already running before (a module's
    server starting a worker is that module's business, checked when the module ends).
    """
    deadline = time.monotonic() + seconds
    while True:
        new = living_descendants() - before
        if own_trees_only:
            new = _started_here(new)
        if not new or time.monotonic() >= deadline:
            return sorted(new, key=lambda p: p.pid)
        time.sleep(0.1)


def _started_here(new: set[psutil.Process]) -> set[psutil.Process]:
    """Returns those of new whose line of parents up to this process holds only new ones."""
    parents: dict[int, int] = {}
    for process in new:
        with contextlib.suppress(psutil.Error):
            parents[process.pid] = process.ppid()
    me = os.getpid()

    def here(pid: int) -> bool:
        while pid in parents:
            pid = parents[pid]
        return pid == me

    return {p for p in new if p.pid in parents and here(p.pid)}


def describe(processes: Iterable[psutil.Process]) -> str:
    """Returns one line per process: its pid and command line."""
    lines = []
    for process in processes:
        try:
            command = " ".join(process.cmdline()) or process.name()
        except psutil.Error:
            command = "(gone)"
        lines.append(f"  pid {process.pid}: {command}")
    return "\n".join(lines)


def stop(processes: Sequence[psutil.Process]) -> None:
    """Terminates processes, then kills those still there after 5 s."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=5)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def _fail_on_leftovers(before: set[psutil.Process], what: str, own_trees_only: bool) -> None:
    left = leftovers(before, seconds=10, own_trees_only=own_trees_only)
    if left:
        report = describe(left)
        stop(left)  # so that one leak fails one test, not every test after it
        message = f"{what} left {len(left)} process(es) running (now stopped):\n{report}"
        pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _adopt_orphans() -> None:
    """Makes this process the parent of its descendants' orphans (Linux), so that a process whose
    parent died still counts as ours: `kill $!` on a subshell leaves exactly such a process."""
    if sys.platform == "linux":
        pr_set_child_subreaper = 36
        ctypes.CDLL(None).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


@pytest.fixture(scope="module", autouse=True)
def _no_process_outlives_its_module(_adopt_orphans: None) -> Iterator[None]:
    """Fails the module's last test if a process started in the module (by a module fixture, say)
    still runs after the module's fixtures have ended."""
    before = living_descendants()
    yield
    _fail_on_leftovers(before, "this module", own_trees_only=False)


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test(_no_process_outlives_its_module: None) -> Iterator[None]:
    """Fails a test that leaves running a process it started (itself or through its fixtures)."""
    before = living_descendants()
    yield
    _fail_on_leftovers(before, "this test", own_trees_only=True)


# -- settings, services, files ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_embedder() -> Embedder:
    """The bundled all-MiniLM-L6-v2, at the precision this CPU runs fastest."""
    return SentenceTransformerEmbedder(EmbeddingSettings())


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreSettings]:
    """A real Chroma server (`chroma run`, shipped with chromadb) on a loopback port, one per
    test module, so modules do not see each other's collections."""
    import shutil

    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    path = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    log = (path / "server.log").open("wb")
    server = subprocess.Popen(
        [chroma, "run", "--path", str(path / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api/v2/heartbeat", server, b"heartbeat")
        yield StoreSettings(kind="chroma-server", host="127.0.0.1", port=port)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module", params=["chroma", "chroma-server"])
def store_settings(request: pytest.FixtureRequest) -> StoreSettings:
    """Each store kind in turn: the same tests run embedded and against a real server."""
    if request.param == "chroma":
        return StoreSettings()
    server: StoreSettings = request.getfixturevalue("chroma_server")
    return server


@pytest.fixture
def fake_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", embedding={"kind": "fake"})  # type: ignore[arg-type]


@pytest.fixture
def fake_service(fake_settings: Settings) -> Service:
    return Service(fake_settings)


@pytest.fixture
def real_service(tmp_path: Path, real_embedder: Embedder) -> Service:
    return Service(Settings(data_dir=tmp_path / "data"), embedder=real_embedder)


@pytest.fixture
def fake_config(tmp_path: Path) -> Path:
    """A settings profile that swaps in the hashing embedder, for fast CLI runs."""
    path = tmp_path / "fake.yaml"
    path.write_text("embedding:\n  kind: fake\n", encoding="utf-8")
    return path


def run_cli(
    *args: str | os.PathLike[str], prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Runs `privatellm ARGS` in a child process, as a user would (prefix: e.g. setpriv)."""
    cmd = [*prefix, sys.executable, "-m", "privatellm", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(
    url: str, server: subprocess.Popen[bytes], expect: bytes, seconds: float = 180
) -> None:
    """Waits until GET url answers with a body containing expect, or the server exits."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if expect in response.read():
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"nothing answered on {url} within {seconds} s")


def make_pdf(path: Path, pages: list[str]) -> Path:
    """Writes a real PDF with one text page per item."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    for text in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))
    return path


def make_scanned_pdf(path: Path, pages: int = 2) -> Path:
    """Writes a PDF whose pages hold only drawings, no text layer (like a scan)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    for n in range(pages):
        pdf.add_page()
        pdf.set_fill_color(30 * n, 100, 150)
        pdf.rect(20, 20, 150, 200, style="F")
    pdf.output(str(path))
    return path


def encrypt_pdf(source: Path, target: Path, user_password: str) -> Path:
    """Writes an AES-256 encrypted copy of a PDF (empty user password = opens without one)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="AES-256")
    with target.open("wb") as f:
        writer.write(f)
    return target


@pytest.fixture
def sample_copy(tmp_path: Path) -> Iterator[Path]:
    """A private copy of ingest/ that a test may change."""
    import shutil

    target = tmp_path / "samples"
    shutil.copytree(SAMPLES, target)
    yield target


def write_texts(folder: Path, texts: Sequence[str]) -> Path:
    """Returns folder, made and filled with one UTF-8 text file per text (p0.txt, p1.txt, ...)."""
    folder.mkdir(parents=True)
    for n, text in enumerate(texts):
        (folder / f"p{n}.txt").write_text(text, encoding="utf-8")
    return folder


def cjk_font() -> str:
    """Returns the path of a font with Chinese and Latin glyphs (`make system-deps` has one)."""
    listed = subprocess.run(
        ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, check=True
    ).stdout
    files = sorted(line.split(":")[0] for line in listed.splitlines() if line.strip())
    regular = [f for f in files if "Regular" in f]
    assert files, "no font with Chinese glyphs: run `make system-deps`"
    return (regular or files)[0]


def text_image(lines: Sequence[str], size: int = 30, width: int = 1200, height: int = 0) -> Any:
    """Returns a white RGB image with lines of black text drawn on it, as a scanner would see
    a printed page (about 150 dpi for size 30; height 0: just tall enough for the lines)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(cjk_font(), size)
    height = height or 80 + int(size * 1.8) * len(lines)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        draw.text((60, 40 + int(size * 1.8) * n), line, font=font, fill="black")
    return image


def make_image_pdf(path: Path, images: Sequence[Any]) -> Path:
    """Writes a PDF whose pages are the images and nothing else: a scanned document."""
    first, *rest = [image.copy() for image in images]
    first.save(path, save_all=True, append_images=rest, resolution=150)
    return path


def many_page_tiff(pages: int) -> bytes:
    """Returns a TIFF of pages 1x1 frames, written directly: Pillow takes minutes for 10,000."""
    import struct

    ifd = 2 + 8 * 12 + 4  # entry count, 8 entries, next-IFD offset
    out = [b"II*\x00", struct.pack("<I", 10), b"\xff\x00"]  # header, then the one pixel byte
    for n in range(pages):
        following = 10 + ifd * (n + 1) if n + 1 < pages else 0
        short = [(256, 1), (257, 1), (258, 1), (259, 1), (262, 0), (278, 1)]
        entries = [struct.pack("<HHIHH", tag, 3, 1, value, 0) for tag, value in short]
        entries.insert(5, struct.pack("<HHII", 273, 4, 1, 8))  # strip offset: the pixel byte
        entries.append(struct.pack("<HHII", 279, 4, 1, 1))  # strip byte count
        out += [struct.pack("<H", 8), *entries, struct.pack("<I", following)]
    return b"".join(out)
