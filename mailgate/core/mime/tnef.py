"""The files inside Outlook's winmail.dat (application/ms-tnef). Pure; never raises.

Outlook sends a message's attachments wrapped in one TNEF file when it thinks the other
side is Outlook too; everyone else sees only "winmail.dat". The decoding is tnefparse's
(a small pure-Python library without dependencies, LGPL, the one most Python mail tools
use); this module only bounds it and turns its result into plain files and text. A
winmail.dat that cannot be read, or holds no files, is kept as it came.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mailgate.core.mime import charsets

MAX_FILES = 100
MAX_TNEF_BYTES = 50 * 1024 * 1024  # larger than any mail we keep: do not even try
SIGNATURE = b"\x78\x9f\x3e\x22"
TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})

# tnefparse logs every unknown attribute and bad checksum; the caller records one defect.
logging.getLogger("tnefparse").setLevel(logging.CRITICAL)


@dataclass(frozen=True, slots=True)
class TnefFile:
    filename: str
    data: bytes


def is_tnef(content_type: str, filename: str) -> bool:
    return content_type in TNEF_TYPES or filename.strip().lower() == "winmail.dat"


@dataclass(frozen=True, slots=True)
class TnefContents:
    files: list[TnefFile]
    text: str  # the message's plain text (attBody, PR_BODY), "" if none
    html: str  # its HTML (PR_BODY_HTML), "" if none


def files(data: bytes) -> list[TnefFile] | None:
    """The attachments carried in a TNEF stream, or None when it cannot be read."""
    contents = read(data)
    return None if contents is None else contents.files


def read(data: bytes) -> TnefContents | None:
    """The attachments and the message text a TNEF stream carries, or None when it cannot
    be read. Outlook's "Rich Text" mail to the outside puts its text in here too, beside
    an empty text/plain part. (Text kept only as compressed RTF is not read.)"""
    if not data.startswith(SIGNATURE) or len(data) > MAX_TNEF_BYTES:
        return None
    try:
        from tnefparse import TNEF
        parsed = TNEF(data, do_checksum=False)
        attachments = list(parsed.attachments[:MAX_FILES])
        codepage = parsed.codepage if isinstance(parsed.codepage, str) else None
        text, html = parsed.body, parsed.htmlbody
    except Exception:  # a broken stream is the sender's problem, never a crash
        return None
    found = (_file(attachment) for attachment in attachments)
    return TnefContents([f for f in found if f is not None], _body(text, codepage),
                        _body(html, codepage))


def _body(value: object, codepage: str | None) -> str:
    """A body property: text already, or bytes in the stream's code page."""
    if isinstance(value, bytes):
        value = charsets.decode(value, codepage, what="winmail.dat text")
    return value.strip("\x00") if isinstance(value, str) else ""


def _file(attachment: object) -> TnefFile | None:
    data = getattr(attachment, "data", b"")
    if not isinstance(data, bytes) or not data:
        return None
    try:
        name = _text(attachment.long_filename())  # type: ignore[attr-defined]
    except Exception:  # an undecodable name: the file still counts
        name = ""
    # A name is a name, never a path.
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip("\x00 ")[:255]
    return TnefFile(name or "unnamed", data)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8").strip("\x00")
        except UnicodeDecodeError:
            return value.decode("cp1252", "replace").strip("\x00")
    return value.strip("\x00") if isinstance(value, str) else ""
