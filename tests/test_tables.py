"""PDF tables become rows that carry their column headers (privatellm.tables), on real PDFs."""

from __future__ import annotations

from pathlib import Path

import pypdfium2 as pdfium
from fpdf import FPDF

from privatellm.pdf import load_pdf
from privatellm.tables import table_rows
from privatellm.types import Reading

PROSE = (
    "Our business is subject to risks. In 2022 we opened 12 stores, closed 3 and hired staff in "
    "many places. Results may differ from what we expect for reasons set out below."
)


def _texts(data: bytes) -> list[str]:
    document = pdfium.PdfDocument(data)
    try:
        return [document[i].get_textpage().get_text_range() for i in range(len(document))]
    finally:
        document.close()


def _at(pdf: FPDF, x: float, y: float, text: str, width: float = 0, align: str = "L") -> None:
    pdf.set_xy(x, y)
    pdf.cell(width, 5, text, align=align)


def _statement(pdf: FPDF) -> None:
    """Draws a 10-K style statement: columns ruled by whitespace only, a header over two lines
    (one phrase across both columns), a section line, `$` apart from its amount, a negative in
    parentheses and an empty cell."""
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    _at(pdf, 40, 20, "CONSOLIDATED STATEMENTS OF INCOME", 130, "C")
    _at(pdf, 120, 30, "Years Ended", 60, "C")
    _at(pdf, 120, 35, "2022", 25, "R")
    _at(pdf, 155, 35, "2021", 25, "R")
    _at(pdf, 20, 42, "Revenue:")
    rows = [
        ("Subscription", "$", "16,388", "$", "14,573"),
        ("Product", "", "532", "", "555"),
        ("Total revenue", "", "16,920", "", "15,128"),
        ("Investment gains (losses), net", "", "(19)", "", ""),
        ("Provision for income taxes", "", "1,252", "", "(1,084)"),
    ]
    for n, (label, sign1, value1, sign2, value2) in enumerate(rows):
        y = 48 + 6 * n
        _at(pdf, 25, y, label)
        _at(pdf, 121, y, sign1)
        _at(pdf, 120, y, value1, 25, "R")
        _at(pdf, 156, y, sign2)
        _at(pdf, 155, y, value2, 25, "R")


def _price_list(pdf: FPDF) -> None:
    """Draws a table ruled with lines, its header the first row (fpdf2's table())."""
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    with pdf.table(col_widths=(60, 30, 30)) as table:
        for cells in [
            ("Item", "Unit price", "Stock"),
            ("Widget", "4.99", "12"),
            ("Gadget", "12.50", "3"),
            ("Gizmo", "0.75", "140"),
        ]:
            row = table.row()
            for cell in cells:
                row.cell(cell)


def _pdf(*pages: str) -> bytes:
    pdf = FPDF(format="A4")
    for page in pages:
        if page == "statement":
            _statement(pdf)
        elif page == "prices":
            _price_list(pdf)
        else:
            pdf.add_page()
            pdf.set_font("Helvetica", size=11)
            pdf.multi_cell(0, 6, page)
    return bytes(pdf.output())


def test_a_whitespace_table_is_written_row_by_row_with_its_headers() -> None:
    data = _pdf("statement")
    assert table_rows(data, _texts(data)) == {
        0: [
            "Revenue: Subscription | Years Ended 2022: $16,388 | Years Ended 2021: $14,573",
            "Revenue: Product | Years Ended 2022: 532 | Years Ended 2021: 555",
            "Revenue: Total revenue | Years Ended 2022: 16,920 | Years Ended 2021: 15,128",
            "Investment gains (losses), net | Years Ended 2022: (19)",
            "Provision for income taxes | Years Ended 2022: 1,252 | Years Ended 2021: (1,084)",
        ]
    }


def test_a_ruled_table_takes_its_first_row_as_headers() -> None:
    data = _pdf("prices")
    assert table_rows(data, _texts(data)) == {
        0: [
            "Widget | Unit price: 4.99 | Stock: 12",
            "Gadget | Unit price: 12.50 | Stock: 3",
            "Gizmo | Unit price: 0.75 | Stock: 140",
        ]
    }


def test_pages_without_tables_give_no_rows() -> None:
    data = _pdf(PROSE, "statement", PROSE)
    assert list(table_rows(data, _texts(data))) == [1]
    assert table_rows(_pdf(PROSE), [PROSE]) == {}


def test_an_unreadable_pdf_or_page_gives_no_rows_rather_than_an_error() -> None:
    tabular = "Product 532 555\nTotal 16,920 15,128\nOther 1 2\n"
    assert table_rows(b"%PDF-1.7\n not really a PDF", [tabular]) == {}
    data = _pdf("statement")
    # a page the text layer had but the PDF has not: nothing for it, the real page still read
    assert list(table_rows(data, [*_texts(data), tabular])) == [0]


def test_loaded_pdf_pages_end_with_their_table_rows(tmp_path: Path) -> None:
    data = _pdf(PROSE, "prices")
    pages = load_pdf(tmp_path / "prices.pdf", data, Reading(ocr="off", tables=True))
    assert "Widget | Unit price: 4.99 | Stock: 12" not in pages[0].text
    assert pages[1].text.endswith("Gizmo | Unit price: 0.75 | Stock: 140")
    plain = load_pdf(tmp_path / "prices.pdf", data, Reading(ocr="off", tables=False))
    assert pages[1].text.startswith(plain[1].text)
