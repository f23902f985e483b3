"""OCR: scanned PDF pages and images are read, in English and Chinese, and cited like any page."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import make_image_pdf, make_pdf, run_cli, text_image

from privatellm.config import Settings
from privatellm.embeddings import Embedder
from privatellm.loaders import parse
from privatellm.service import Service
from privatellm.types import Page, Reading

LIGHTHOUSE = [
    "The lighthouse at Cape Wrath was built in 1828",
    "by the engineer Robert Stevenson, and its keepers",
    "left it in 1998 when the light became automatic.",
]
TEA = ["西湖龙井茶产于杭州西湖周围的群山之中，", "以色绿、香郁、味甘、形美四绝著称。"]
ORCHARD = "The orchard behind the mill grows eleven kinds of pear and two of quince."


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a scanned PDF (English page, Chinese page), a mixed PDF (text layer, scan,
    text layer) and a photo of a page."""
    root = tmp_path_factory.mktemp("scans")
    make_image_pdf(root / "scanned.pdf", [text_image(LIGHTHOUSE), text_image(TEA)])
    make_pdf(root / "text.pdf", [ORCHARD, "placeholder", "The mill pond freezes in January."])
    _replace_page(root / "text.pdf", 2, root / "scanned.pdf", 2, root / "mixed.pdf")
    text_image(LIGHTHOUSE[:1]).save(root / "photo.jpg", quality=90)
    return root


def _replace_page(base: Path, number: int, donor: Path, donor_page: int, out: Path) -> None:
    """Writes base with its page number replaced by donor's page donor_page (a scan in a
    document with a text layer elsewhere, as office scanners make them)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(base))
    writer.insert_page(PdfReader(donor).pages[donor_page - 1], number - 1)
    writer.remove_page(number)
    with out.open("wb") as f:
        writer.write(f)


TEXT_ONLY = Reading(tables=False)


def _parse(path: Path, reading: Reading = TEXT_ONLY) -> list[Page]:
    return parse(path, path.read_bytes(), str(path), 1_000_000, reading).pages


def test_scanned_pages_are_read_with_their_real_page_numbers(scans: Path) -> None:
    english, chinese = _parse(scans / "scanned.pdf")
    assert (english.page, chinese.page) == (1, 2) and english.ocr and chinese.ocr
    assert "Robert Stevenson" in english.text and "1828" in english.text
    assert "西湖龙井" in chinese.text.replace(" ", "")
    # Each recognised line has its box: offsets into the page text, then a fraction of the page.
    start, end, x0, y0, x1, y1 = english.boxes[0]
    assert english.text[start:end] == english.text.splitlines()[0]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


def test_a_mixed_pdf_keeps_its_text_layer_and_reads_only_the_scan(scans: Path) -> None:
    first, scan, third = _parse(scans / "mixed.pdf")
    assert not first.ocr and ORCHARD in first.text
    assert scan.ocr and scan.page == 2 and "龙井" in scan.text.replace(" ", "")
    assert not third.ocr and "freezes in January" in third.text


def test_ocr_off_leaves_scans_unread_and_always_reads_every_page(scans: Path) -> None:
    off = _parse(scans / "mixed.pdf", Reading(ocr="off", tables=False))
    assert [p.ocr for p in off] == [False, False, False] and not off[1].text.strip()
    always = _parse(scans / "mixed.pdf", Reading(ocr="always", tables=False))
    assert [p.ocr for p in always] == [True, True, True]
    assert "quince" in always[0].text


def test_a_scan_with_a_one_line_stamp_is_still_read(tmp_path: Path) -> None:
    from fpdf import FPDF

    image = tmp_path / "page.png"
    text_image(LIGHTHOUSE, width=1240, height=1754).save(image)  # A4 at 150 dpi
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.image(str(image), x=0, y=0, w=210)
    pdf.set_font("Helvetica", size=8)
    pdf.set_xy(10, 285)
    pdf.cell(0, 5, "Received 2024-03-01 - Scanned by Office Copier 4")  # the stamp
    pdf.output(str(tmp_path / "stamped.pdf"))
    (page,) = _parse(tmp_path / "stamped.pdf")
    assert page.ocr and "Stevenson" in page.text


def test_images_are_documents_and_tiff_frames_are_pages(tmp_path: Path) -> None:
    english, chinese = text_image(LIGHTHOUSE), text_image(TEA)
    english.save(tmp_path / "a.png")
    chinese.save(tmp_path / "b.webp", lossless=True)
    english.convert("L").save(tmp_path / "c.bmp")
    english.save(tmp_path / "d.tiff", save_all=True, append_images=[chinese])
    assert "Stevenson" in _parse(tmp_path / "a.png")[0].text
    assert "龙井" in _parse(tmp_path / "b.webp")[0].text.replace(" ", "")
    assert "Stevenson" in _parse(tmp_path / "c.bmp")[0].text
    first, second = _parse(tmp_path / "d.tiff")
    assert (first.page, second.page) == (1, 2)
    assert "Stevenson" in first.text and "龙井" in second.text.replace(" ", "")


def test_a_page_over_its_ocr_time_limit_is_reported_and_skipped(scans: Path) -> None:
    document = parse(
        scans / "mixed.pdf",
        (scans / "mixed.pdf").read_bytes(),
        "mixed.pdf",
        1_000_000,
        Reading(ocr_page_timeout_s=0.001, tables=False),
    )
    assert document.pages[1].text == "" and not document.pages[1].ocr
    assert document.warnings == [
        "page 2: skipped: OCR took over 0.001 s (setting ingest.ocr_page_timeout_s)"
    ]
    assert ORCHARD in document.pages[0].text  # the other pages are kept


def test_questions_about_scanned_pages_find_the_right_page(
    scans: Path, tmp_path: Path, real_embedder: Embedder
) -> None:
    service = Service(Settings(data_dir=tmp_path / "data"), embedder=real_embedder)
    report = service.ingest([scans])
    assert {Path(p).name for p in report.paths("added")} == {
        "scanned.pdf",
        "mixed.pdf",
        "photo.jpg",
        "text.pdf",
    }
    ocr = {Path(o.path).name: (o.ocr_pages, o.pages) for o in report.outcomes if o.ocr_pages}
    assert ocr == {"scanned.pdf": (2, 2), "mixed.pdf": (1, 3), "photo.jpg": (1, 1)}
    for question, source, page in [
        ("Who built the lighthouse at Cape Wrath?", "scanned.pdf", 1),
        ("西湖龙井茶以什么著称？", "scanned.pdf", 2),
    ]:
        hits = service.retrieve(question, top_k=5)
        assert any(
            Path(h.chunk.source).name == source and h.chunk.page == page for h in hits[:3]
        ), [(h.chunk.source, h.chunk.page) for h in hits]


def test_a_citation_into_a_scanned_page_is_marked_on_its_image(
    scans: Path, tmp_path: Path, real_embedder: Embedder
) -> None:
    from PIL import Image

    service = Service(Settings(data_dir=tmp_path / "data"), embedder=real_embedder)
    service.ingest([scans / "scanned.pdf"])
    (hit,) = service.retrieve("Robert Stevenson lighthouse", top_k=1)
    assert hit.chunk.page == 1
    boxes = service.store.open(service.settings.collection).page_boxes(hit.chunk.doc_id, 1)
    assert len(boxes) == len(LIGHTHOUSE)
    line = hit.chunk.text.index("Robert Stevenson")
    highlight = (hit.chunk.start + line, hit.chunk.start + line + len("Robert Stevenson"))
    marked = Image.open(io.BytesIO(service.page_image(hit.chunk.doc_id, 1, highlight)))
    plain = Image.open(io.BytesIO(service.page_image(hit.chunk.doc_id, 1)))
    assert marked.size == plain.size
    yellow = [
        (x, y)
        for x in range(0, marked.width, 4)
        for y in range(0, marked.height, 4)
        if _is_yellow(marked.convert("RGB").getpixel((x, y)))
    ]
    assert yellow, "the cited line is marked"
    # The mark sits on the second line of the page (the one holding "Robert Stevenson").
    _, _, _, y0, _, y1 = next(b for b in boxes if b[0] <= highlight[0] < b[1])
    top, bottom = min(y for _, y in yellow), max(y for _, y in yellow)
    assert y0 * marked.height - 8 <= top and bottom <= y1 * marked.height + 8


def _is_yellow(pixel: object) -> bool:
    r, g, b = pixel  # type: ignore[misc]
    return bool(r > 200 and g > 170 and b < 150)


def test_the_cli_counts_pages_read_by_ocr(scans: Path, tmp_path: Path, fake_config: Path) -> None:
    result = run_cli(
        "--data-dir", tmp_path / "d", "--config", fake_config, "ingest", scans / "mixed.pdf"
    )
    assert result.returncode == 0, result.stderr
    assert "mixed.pdf: 1 of 3 page(s) read by OCR" in result.stderr
    as_json = run_cli(
        "--data-dir", tmp_path / "e", "--config", fake_config, "ingest", scans, "--json"
    )
    report = json.loads(as_json.stdout)
    assert {Path(o["path"]).name: o["ocr_pages"] for o in report["ocr"]} == {
        "scanned.pdf": 2,
        "mixed.pdf": 1,
        "photo.jpg": 1,
    }


def test_an_image_document_is_shown_as_its_page(scans: Path, fake_service: Service) -> None:
    from PIL import Image

    from privatellm.errors import NotFoundError

    fake_service.ingest([scans / "photo.jpg"])
    (record,) = fake_service.documents()
    shown = Image.open(io.BytesIO(fake_service.page_image(record.id, 1, (0, 10))))
    with Image.open(scans / "photo.jpg") as original:
        assert shown.format == "PNG" and shown.size == original.size
    assert any(_is_yellow(shown.convert("RGB").getpixel((x, 50))) for x in range(60, 400, 5))
    with pytest.raises(NotFoundError, match="no page 2"):
        fake_service.page_image(record.id, 2)
