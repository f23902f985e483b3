"""Shared fixtures: settings in tmp dirs, the real bundled embedder (loaded once), file makers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from privatellm.config import EmbeddingSettings, Settings, StoreSettings
from privatellm.embeddings import Embedder, SentenceTransformerEmbedder
from privatellm.service import Service

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "ingest"


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
