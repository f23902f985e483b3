"""E-mail loader: a .eml message's headers, body and text attachments as one page of text.

This module sits below `loaders` (imports run one way), so `loaders` hands it the two rules it
shares with the other formats: how undeclared bytes are decoded and how HTML becomes text.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from privatellm.errors import CorruptDocumentError
from privatellm.types import Page

if TYPE_CHECKING:
    from email.message import EmailMessage, MIMEPart

Decode = Callable[[bytes, str], str]  # bytes of unknown encoding, a name for errors -> text
HtmlToText = Callable[[bytes | str], str]

HEADERS = ("From", "To", "Cc", "Date", "Subject")
# Attachments read as text whatever their MIME type says (mailers often send application/json,
# application/octet-stream).
TEXT_SUFFIXES = {".txt", ".md", ".csv", ".json", ".html", ".htm"}
_HTML_SUFFIXES = {".html", ".htm"}
# Mail declares a charset and writes in its superset: GB2312/GBK mail holds GB18030 characters,
# "ISO-8859-1" mail holds Windows-1252 quotes (browsers read it so too), "US-ASCII" mail UTF-8.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "iso8859-1": "cp1252", "ascii": "utf-8"}


def load_eml(path: Path, data: bytes, *, decode: Decode, html_to_text: HtmlToText) -> list[Page]:
    """Returns one page: the message's From/To/Cc/Date/Subject lines, its body (plain text,
    else HTML as text), then each text attachment after an `Attachment: name` line."""
    from email import policy
    from email.parser import BytesParser

    message = BytesParser(policy=policy.default).parsebytes(data)
    # A raw 8-bit header (old Chinese mailers write GBK without RFC 2047) is most likely in the
    # charset the message declares for its text.
    hint = next((charset for charset in message.get_charsets() if charset), None)
    lines = [
        f"{name}: {value}"
        for name in HEADERS
        if (value := _header(message, name, hint, path.name, decode))
    ]
    body = message.get_body(preferencelist=("plain", "html"))
    if body is not None:
        lines += ["", _part_text(body, path.name, decode, html_to_text)]
    for part in message.iter_attachments():
        name = part.get_filename() or ""
        if part.get_content_maintype() != "text" and Path(name).suffix.lower() not in TEXT_SUFFIXES:
            continue
        try:
            text = _part_text(part, f"{path.name}: {name}", decode, html_to_text)
        except CorruptDocumentError:
            continue  # binary content under a text name: nothing to read, the mail still is
        lines += ["", f"Attachment: {name or '(no name)'}", text]
    return [Page(text="\n".join(lines).strip())]


def _header(
    message: EmailMessage, name: str, hint: str | None, file_name: str, decode: Decode
) -> str:
    value = message.get(name)
    if value is None:
        return ""
    text = str(value)
    if "\ufffd" in text:  # undecodable 8-bit bytes in the raw header
        raw = next(v for k, v in message.raw_items() if k.lower() == name.lower())
        text = _decoded(raw.encode("ascii", "surrogateescape"), hint, file_name, decode)
    return " ".join(text.split())  # unfolds continuation lines


def _part_text(part: MIMEPart, name: str, decode: Decode, html_to_text: HtmlToText) -> str:
    payload = part.get_payload(decode=True)  # bytes, base64 and quoted-printable undone
    if not isinstance(payload, bytes):
        return ""
    text = _decoded(payload, part.get_content_charset(), name, decode)
    html = part.get_content_subtype() == "html"
    if html or Path(part.get_filename() or "").suffix.lower() in _HTML_SUFFIXES:
        return html_to_text(text)
    return text.replace("\r\n", "\n").strip()


def _decoded(data: bytes, charset: str | None, name: str, decode: Decode) -> str:
    """Returns data decoded by its declared charset, or by decode (which names name in its
    errors) where none is declared or the declared one is unknown or wrong."""
    if charset:
        try:
            codec = codecs.lookup(charset).name
            return data.decode(_SUPERSETS.get(codec, codec))
        except (LookupError, UnicodeDecodeError):
            pass
    return decode(data, name)
