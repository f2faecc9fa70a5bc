"""The files inside Outlook's winmail.dat (application/ms-tnef). Pure; never raises.

Outlook sends a message's attachments wrapped in one TNEF file when it thinks the other
side is Outlook too; everyone else sees only "winmail.dat". The decoding is tnefparse's
(a small pure-Python library without dependencies, LGPL, the one most Python mail tools
use); this module only bounds it and turns its result into plain files. A winmail.dat
that cannot be read, or holds no files, is kept as it came.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


def files(data: bytes) -> list[TnefFile] | None:
    """The attachments carried in a TNEF stream, or None when it cannot be read."""
    if not data.startswith(SIGNATURE) or len(data) > MAX_TNEF_BYTES:
        return None
    try:
        from tnefparse import TNEF
        parsed = TNEF(data, do_checksum=False)
        attachments = list(parsed.attachments[:MAX_FILES])
    except Exception:  # a broken stream is the sender's problem, never a crash
        return None
    found = (_file(attachment) for attachment in attachments)
    return [f for f in found if f is not None]


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
