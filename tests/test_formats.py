"""PowerPoint, Excel and e-mail files, made here with the libraries that write them, read back
through the real loaders; password-protected and corrupt ones each get a one-line reason."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import zipfile
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import run_cli

from privatellm.errors import CorruptDocumentError, EncryptedDocumentError, LoaderError
from privatellm.loaders import parse
from privatellm.types import Page

GBK_BODY = "预算会议定于周五下午三点举行，请财务部准备第三季度报表。"


def _pages(path: Path) -> list[Page]:
    return parse(path, path.read_bytes(), str(path), 1_000_000).pages


def make_deck(path: Path) -> Path:
    """Writes a 2-slide deck: a title, a table, a group and notes; then a bulleted slide."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    # Added bottom first: the loader must read by position, not by the order shapes were drawn.
    group = first.shapes.add_group_shape()
    group.shapes.add_textbox(Inches(5), Inches(6), Inches(3), Inches(1)).text = "Right footnote"
    group.shapes.add_textbox(Inches(1), Inches(6), Inches(3), Inches(1)).text = "Left footnote"
    table = first.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for r, row in enumerate([("Region", "Revenue"), ("North", "1,200"), ("South", "")]):
        for c, text in enumerate(row):
            table.cell(r, c).text = text
    first.shapes.title.text = "Quarterly review"
    first.notes_slide.notes_text_frame.text = "Mention the northern office first."
    second = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
    second.shapes.title.text = "Next steps"
    second.placeholders[1].text = "Hire two engineers\vbefore June"  # \v: a line break
    deck.save(str(path))
    return path


def make_workbook(path: Path) -> Path:
    """Writes a workbook: a sheet of sales under a blank first row, an empty sheet, people."""
    import openpyxl

    book = openpyxl.Workbook()
    sales = book.active
    sales.title = "Sales"
    sales.append([])
    sales.append(["Region", "Revenue", "Closed", "Share"])
    sales.append(["North", 1200.5, dt.datetime(2024, 3, 1), 0.25])
    sales["D3"].number_format = "0%"
    sales.append([])
    sales.append(["South", 0.1 + 0.2, None, None, "no header here"])
    book.create_sheet("Empty")
    book.create_sheet("People").append(["Name", "Joined"])
    book["People"].append(["Ada", dt.datetime(2023, 7, 14, 9, 30)])
    book.save(str(path))
    return path


def make_mail(path: Path) -> Path:
    """Writes a multipart message: a GBK plain-text body, its HTML alternative, a text file."""
    message = EmailMessage()
    message["From"] = "张三 <zhang@example.cn>"
    message["To"] = "li@example.cn"
    message["Cc"] = "wang@example.cn"
    message["Date"] = "Mon, 04 Mar 2024 10:00:00 +0800"
    message["Subject"] = "会议纪要：第三季度预算"
    message.set_content(GBK_BODY, charset="gbk")
    message.add_alternative(f"<p>HTML copy: {GBK_BODY}</p>", subtype="html", charset="gbk")
    message.add_attachment(b"Item,Cost\nLaptops,5000\n", "text", "plain", filename="costs.txt")
    message.add_attachment(b"\x89PNG\r\n\x1a\n" + bytes(64), "image", "png", filename="logo.png")
    path.write_bytes(message.as_bytes(policy=policy.SMTP))
    return path


def encrypt(source: Path, target: Path) -> Path:
    """Writes a password-protected copy of an Office file, as Office itself encrypts one."""
    from msoffcrypto.format.ooxml import OOXMLFile

    with source.open("rb") as plain, target.open("wb") as locked:
        OOXMLFile(plain).encrypt("s3cret", locked)
    return target


def test_pptx_gives_a_page_per_slide_in_reading_order_with_notes(tmp_path: Path) -> None:
    first, second = _pages(make_deck(tmp_path / "deck.pptx"))
    assert (first.page, second.page) == (1, 2)
    assert first.text == (
        "Quarterly review\n"
        "Region, Revenue\n"
        "Region: North; Revenue: 1,200\n"
        "Region: South\n"
        "Left footnote\n"
        "Right footnote\n"
        "Notes:\n"
        "Mention the northern office first."
    )
    assert second.text == "Next steps\nHire two engineers\nbefore June"


def test_xlsx_gives_a_page_per_sheet_with_header_value_rows(tmp_path: Path) -> None:
    sales, people = _pages(make_workbook(tmp_path / "book.xlsx"))
    assert (sales.page, people.page) == (1, 3)  # the empty sheet 2 gives no page
    assert sales.text == (
        "Sheet: Sales\n"
        "Region, Revenue, Closed, Share\n"
        "Region: North; Revenue: 1200.5; Closed: 2024-03-01; Share: 25%\n"
        "Region: South; Revenue: 0.3; E: no header here"
    )
    assert people.text == "Sheet: People\nName, Joined\nName: Ada; Joined: 2023-07-14 09:30"


def test_eml_gives_headers_body_and_text_attachments(tmp_path: Path) -> None:
    (page,) = _pages(make_mail(tmp_path / "mail.eml"))
    assert page.page is None
    assert page.text == (
        "From: 张三 <zhang@example.cn>\n"
        "To: li@example.cn\n"
        "Cc: wang@example.cn\n"
        "Date: Mon, 04 Mar 2024 10:00:00 +0800\n"
        "Subject: 会议纪要：第三季度预算\n"
        "\n"
        f"{GBK_BODY}\n"
        "\n"
        "Attachment: costs.txt\n"
        "Item,Cost\n"
        "Laptops,5000"
    )


def test_eml_html_only_and_old_chinese_mailers(tmp_path: Path) -> None:
    html = EmailMessage()
    html["Subject"] = "Newsletter"
    html.set_content("<html><body><h1>Launch</h1><script>x()</script></body></html>", "html")
    (tmp_path / "html.eml").write_bytes(html.as_bytes())
    assert _pages(tmp_path / "html.eml")[0].text == "Subject: Newsletter\n\nLaunch"
    # Raw GBK in the header (no RFC 2047) and a body declared GB2312 holding a GBK-only character.
    raw = "Subject: 会议纪要\nContent-Type: text/plain; charset=gb2312\n\n喆的报告\n"
    (tmp_path / "old.eml").write_bytes(raw.encode("gbk"))
    assert _pages(tmp_path / "old.eml")[0].text == "Subject: 会议纪要\n\n喆的报告"


@pytest.mark.parametrize("suffix", [".pptx", ".xlsx", ".docx"])
def test_password_protected_office_files_are_reported(tmp_path: Path, suffix: str) -> None:
    import docx

    plain = tmp_path / f"plain{suffix}"
    if suffix == ".pptx":
        make_deck(plain)
    elif suffix == ".xlsx":
        make_workbook(plain)
    else:
        docx.Document().save(str(plain))
    locked = encrypt(plain, tmp_path / f"locked{suffix}")
    with pytest.raises(EncryptedDocumentError) as caught:
        _pages(locked)
    assert str(caught.value) == (
        f"locked{suffix}: password-protected (remove the password and ingest again)"
    )


def _truncated(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def _zip_without_parts(target: Path) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a workbook")
    target.write_bytes(buffer.getvalue())
    return target


def test_corrupt_and_old_binary_office_files_are_reported(tmp_path: Path) -> None:
    cases = {
        (tmp_path / "random.pptx"): r"^random\.pptx: not a readable \.pptx \(.+\)$",
        _truncated(make_deck(tmp_path / "d.pptx"), tmp_path / "cut.pptx"): r"^cut\.pptx: not a",
        _zip_without_parts(tmp_path / "zip.xlsx"): r"^zip\.xlsx: not a readable \.xlsx \(.+\)$",
        _truncated(make_workbook(tmp_path / "b.xlsx"), tmp_path / "cut.xlsx"): r"^cut\.xlsx: not a",
        (tmp_path / "old.xlsx"): r"^old\.xlsx: an old binary Office file \(\.xls\), not \.xlsx",
    }
    (tmp_path / "random.pptx").write_bytes(os.urandom(4096))
    (tmp_path / "old.xlsx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4096))
    for path, reason in cases.items():
        with pytest.raises(CorruptDocumentError, match=reason) as caught:
            _pages(path)
        assert "\n" not in str(caught.value)


def test_a_mail_of_binary_bytes_is_reported(tmp_path: Path) -> None:
    (tmp_path / "junk.eml").write_bytes(bytes(range(256)) * 16)
    with pytest.raises(LoaderError, match=r"^junk\.eml: binary content"):
        _pages(tmp_path / "junk.eml")


def test_ingest_reads_each_new_format_and_reports_each_bad_file(
    tmp_path: Path, fake_config: Path
) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    encrypt(make_deck(folder / "deck.pptx"), folder / "locked.pptx")
    encrypt(make_workbook(folder / "book.xlsx"), folder / "locked.xlsx")
    make_mail(folder / "mail.eml")
    (folder / "corrupt.pptx").write_bytes(os.urandom(4096))
    _truncated(folder / "book.xlsx", folder / "corrupt.xlsx")

    result = run_cli(
        "--data-dir", tmp_path / "data", "--config", fake_config, "ingest", folder, "--json"
    )

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert {Path(p).name for p in report["added"]} == {"deck.pptx", "book.xlsx", "mail.eml"}
    failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert set(failed) == {"locked.pptx", "locked.xlsx", "corrupt.pptx", "corrupt.xlsx"}
    assert "password-protected" in failed["locked.pptx"]
    assert "password-protected" in failed["locked.xlsx"]
    assert "not a readable .pptx" in failed["corrupt.pptx"]
    assert "not a readable .xlsx" in failed["corrupt.xlsx"]
    assert all("\n" not in reason and len(reason) < 300 for reason in failed.values())
