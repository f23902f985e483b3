"""A cited PDF page as a PNG with its passage marked: rendered by pdfium from a real PDF ingested
through the Service, and served by the API."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import make_pdf
from fastapi.testclient import TestClient
from PIL import Image

from privatellm.api import create_app
from privatellm.config import Settings
from privatellm.errors import ConfigError, NotFoundError
from privatellm.pages import locate
from privatellm.service import Service
from privatellm.types import Chunk

FILLER = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8
PASSAGE = "The aurora borealis appears above the fjord in February, when the nights are longest."
PAGE_ONE = FILLER + PASSAGE + " " + "Sed do eiusmod tempor incididunt ut labore. " * 30


def _settings(tmp_path: Path, **api: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        embedding={"kind": "fake"},  # type: ignore[arg-type]
        engine={"kind": "fake", "model": "fake"},  # type: ignore[arg-type]
        api=api,  # type: ignore[arg-type]
    )


@pytest.fixture
def service(tmp_path: Path) -> Service:
    service = Service(_settings(tmp_path))
    docs = tmp_path / "docs"
    docs.mkdir()
    make_pdf(docs / "aurora.pdf", [PAGE_ONE, "A second page about something else entirely."])
    (docs / "notes.txt").write_text("Plain text has no page to draw.", encoding="utf-8")
    report = service.ingest([docs])
    assert len(report.paths("added")) == 2
    return service


def _doc_id(service: Service, name: str) -> str:
    return next(r.id for r in service.documents() if r.source.endswith(name))


def _chunk(service: Service, words: str) -> Chunk:
    """Returns the stored chunk holding words (offsets as ingest stored them)."""
    hits = service.retrieve(words, top_k=10, mode="lexical")
    return next(h.chunk for h in hits if words in " ".join(h.chunk.text.split()))


def _pixels(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG")
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def _passage_span(chunk: Chunk) -> tuple[int, int]:
    """Returns PASSAGE's offsets in the page text, found in the chunk and moved by its start."""
    found = re.search(r"The\s+aurora.*?longest\.", chunk.text, re.DOTALL)
    assert found is not None
    return chunk.start + found.start(), chunk.start + found.end()


# -- rendering -------------------------------------------------------------------------------------


def test_a_page_renders_as_a_png_of_the_page_shape(service: Service) -> None:
    pixels = _pixels(service.page_image(_doc_id(service, "aurora.pdf"), 1))
    height, width, _ = pixels.shape
    assert 800 <= width <= 1600
    assert abs(width / height - 210 / 297) < 0.01  # A4, as make_pdf writes it
    assert (pixels < 100).any() and (pixels > 250).mean() > 0.8  # black text on white paper


def test_the_highlight_marks_the_passage_and_only_it(service: Service) -> None:
    doc_id = _doc_id(service, "aurora.pdf")
    plain = _pixels(service.page_image(doc_id, 1))
    chunk = _chunk(service, "aurora borealis")
    marked = _pixels(service.page_image(doc_id, 1, _passage_span(chunk)))
    changed = (plain != marked).any(axis=2)
    assert changed.sum() > 2000
    rows, cols = np.nonzero(changed)
    height, width = changed.shape
    # The passage follows ~8 lines of filler and spans two lines: a band near the top of the page.
    assert 0.03 * height < rows.min() and rows.max() < 0.25 * height
    assert rows.max() - rows.min() < 0.06 * height
    # Translucent yellow over white paper: red and green stay high, blue drops.
    paper = changed & (plain > 250).all(axis=2)
    r, g, b = (marked[paper][:, k] for k in range(3))
    assert (r > 200).all() and (g > 180).all() and (b < 200).all()
    assert 0 <= cols.min() < cols.max() <= width


def test_a_whole_chunk_highlight_covers_more_than_its_passage(service: Service) -> None:
    doc_id = _doc_id(service, "aurora.pdf")
    plain = _pixels(service.page_image(doc_id, 1))
    chunk = _chunk(service, "aurora borealis")
    passage = (plain != _pixels(service.page_image(doc_id, 1, _passage_span(chunk)))).any(axis=2)
    whole = _pixels(service.page_image(doc_id, 1, (chunk.start, chunk.end)))
    assert (plain != whole).any(axis=2).sum() > passage.sum()


def test_text_that_cannot_be_found_leaves_the_page_unmarked(service: Service) -> None:
    doc_id = _doc_id(service, "aurora.pdf")
    plain = service.page_image(doc_id, 1)
    assert service.page_image(doc_id, 1, (10**6, 10**6 + 50)) == plain  # past the page's end
    assert service.page_image(doc_id, 2, (0, 0)) == service.page_image(doc_id, 2)


def test_a_file_changed_since_ingest_is_drawn_without_the_stale_highlight(
    service: Service, tmp_path: Path
) -> None:
    doc_id = _doc_id(service, "aurora.pdf")
    span = _passage_span(_chunk(service, "aurora borealis"))
    make_pdf(tmp_path / "docs" / "aurora.pdf", [PASSAGE + " " + FILLER])
    assert service.page_image(doc_id, 1, span) == service.page_image(doc_id, 1)


def test_unknown_page_document_and_non_pdf_are_not_found(service: Service) -> None:
    doc_id = _doc_id(service, "aurora.pdf")
    for page in (0, 3, -1):
        with pytest.raises(NotFoundError, match="no page"):
            service.page_image(doc_id, page)
    with pytest.raises(NotFoundError, match="no document"):
        service.page_image("0" * 64, 1)
    with pytest.raises(NotFoundError, match=r"notes\.txt is not a PDF"):
        service.page_image(_doc_id(service, "notes.txt"), 1)
    with pytest.raises(ConfigError, match="START-END"):
        service.page_image(doc_id, 1, (20, 10))


def test_a_deleted_file_is_not_found(service: Service, tmp_path: Path) -> None:
    (tmp_path / "docs" / "aurora.pdf").unlink()
    with pytest.raises(NotFoundError, match="no longer readable"):
        service.page_image(_doc_id(service, "aurora.pdf"), 1)


def test_locate_matches_across_whitespace_case_hyphens_and_ligatures() -> None:
    page = "Intro.\r\nThe  AURORA bore-\r\nalis appears\x02above the ﬁord. Outro."
    (first, last), *rest = locate(page, "the aurora borealis appears above the fiord.")
    assert (
        not rest
        and page[first : last + 1] == "The  AURORA bore-\r\nalis appears\x02above the ﬁord."
    )


def test_locate_falls_back_to_the_runs_it_shares_or_to_nothing() -> None:
    page = "alpha beta gamma delta epsilon zeta eta theta"
    runs = locate(page, "beta gamma DELTA XX epsilon zeta")
    assert [page[a : b + 1] for a, b in runs] == ["beta gamma delta", "epsilon zeta"]
    assert locate(page, "something else entirely, nowhere on it") == []
    assert locate(page, "   ") == []


# -- the API ---------------------------------------------------------------------------------------


@pytest.fixture
def client(service: Service) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as c:
        yield c


def test_the_api_serves_the_page_image(service: Service, client: TestClient) -> None:
    doc_id = _doc_id(service, "aurora.pdf")
    start, end = _passage_span(_chunk(service, "aurora borealis"))
    plain = client.get(f"/v1/documents/{doc_id}/pages/1.png")
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/png"
    assert plain.content == service.page_image(doc_id, 1)
    marked = client.get(
        f"/v1/documents/{doc_id}/pages/1.png", params={"highlight": f"{start}-{end}"}
    )
    assert marked.status_code == 200 and marked.content == service.page_image(
        doc_id, 1, (start, end)
    )
    assert marked.content != plain.content
    assert client.get(f"/v1/documents/{doc_id}/pages/2.png").status_code == 200


def test_the_api_refuses_unknown_documents_pages_and_bad_highlights(
    service: Service, client: TestClient
) -> None:
    doc_id = _doc_id(service, "aurora.pdf")
    for path in (
        f"/v1/documents/{'0' * 64}/pages/1.png",
        f"/v1/documents/{doc_id}/pages/3.png",
        f"/v1/documents/{doc_id}/pages/0.png",
        f"/v1/documents/{_doc_id(service, 'notes.txt')}/pages/1.png",
        f"/v1/documents/{doc_id}/pages/1",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
    assert client.get(f"/v1/documents/{doc_id}/pages/one.png").status_code == 422
    for bad in ("abc", "5", "-3-4", "1-2-3", "9-2"):
        response = client.get(f"/v1/documents/{doc_id}/pages/1.png", params={"highlight": bad})
        assert response.status_code in (400, 422), bad
        assert "error" in response.json()


def test_the_page_image_needs_the_api_key(tmp_path: Path) -> None:
    service = Service(_settings(tmp_path, api_key="s3cret"))
    make_pdf(tmp_path / "a.pdf", [PASSAGE])
    service.ingest([tmp_path / "a.pdf"])
    url = f"/v1/documents/{service.documents()[0].id}/pages/1.png"
    with TestClient(create_app(service)) as client:
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        granted = client.get(url, headers={"Authorization": "Bearer s3cret"})
        assert granted.status_code == 200 and granted.content.startswith(b"\x89PNG")
