"""Which files a mail carries (pure): its attachments decoded, the files uuencoded in its
text and those inside a winmail.dat, and which of them fit the size limit. Where they are
then kept is storage/attachments.py's business."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from email.message import Message

from mailgate.core.mime import quotedprintable, tnef, uuencode
from mailgate.core.mime.bodyparts import MAX_PARTS, Leaf, body_parts, leaf_parts
from mailgate.core.mime.headerfields import charset_hint
from mailgate.core.mime.message import read_message
from mailgate.core.mime.partcontent import guess_type, part_filename, payload_bytes

# As many files as parse() lists attachments: with fewer, a mail of 300 files named them
# all on its ticket but stored only the first 100, and said nothing of the others.
MAX_FILES = MAX_PARTS


@dataclass(frozen=True, slots=True)
class Part:
    filename: str
    content_type: str
    data: bytes
    size: int | None = None  # when data is only a stand-in (largemail.py): the real size

    @property
    def length(self) -> int:
        return len(self.data) if self.size is None else self.size


def extract(raw: bytes) -> list[Part]:
    """The attachments of a mail, decoded (body text parts excluded, as for relaying):
    the files uuencoded in its body text first, a winmail.dat's files instead of it.
    Names as parse.py reads them, so the stored files match Inbound.attachments."""
    try:
        msg = read_message(raw, [])
    except Exception:
        return []
    leaves = leaf_parts(msg)
    texts = body_parts(leaves)
    found = [file for part in texts for file in _uuencoded(part)]
    hint = charset_hint(msg)
    text_ids = {id(p) for p in texts}
    shown = {leaf.group for leaf in leaves if leaf.group and id(leaf.part) in text_ids}
    for part in _attached(leaves, text_ids, shown, hint):
        try:
            data = payload_bytes(part)
        except Exception:
            data = None
        if data is None:  # message/rfc822 and other attached messages: kept whole
            try:
                data = _enclosed(part)
            except Exception:
                continue
        name = part_filename(part, hint=hint)[:255] or "unnamed"
        found += _unwrapped(Part(name, part.get_content_type(), data))
    return found


def _attached(leaves: list[Leaf], texts: set[int], shown: set[int],
              hint: str | None) -> list[Message]:
    """The leaves that are attachments, in order: all but the body's text parts (`texts`,
    by identity), its first unnamed inline text/html, those shown in a free
    multipart/mixed (in it, or first in a multipart/related in it; see bodyparts.Leaf) and
    the HTML twins of its texts (an unnamed inline text/html in an alternative whose plain
    text is body text: `shown`); as parse() reads the body. Robust against 8-bit header
    values, which compat32 hands out as Header objects, not strings."""
    found: list[Message] = []
    html_seen = False
    for part, parent, group, free in leaves:
        if len(found) >= MAX_FILES:
            break
        if id(part) in texts:
            continue
        try:
            ctype = part.get_content_type()
            disposition = str(part.get("content-disposition") or "").split(";")[0]
            named = bool(part_filename(part, hint=hint))
        except Exception:  # an unreadable part is not an attachment we could store
            continue
        inline_html = (ctype == "text/html" and not named
                       and disposition.strip().lower() != "attachment")
        in_sequence = (parent == "multipart/mixed" and free) or (
            group and parent == "multipart/related")  # bodyparts._html_shown
        if inline_html and (not html_seen or group in shown or in_sequence):
            html_seen = True
            continue
        found.append(part)
    return found


def _enclosed(part: Message) -> bytes:
    """An attached message (message/*) as the file it is: the part's content without the
    part's own header fields, which only say how it is attached. Decoded if it was sent
    base64 or quoted-printable: RFC 2046 5.2.1 forbids both for message/rfc822, yet whole
    messages are sent so (MIME-tools and mime4j test them)."""
    data = part.as_bytes()  # the part's fields, an empty line, then its content
    content = data[1:] if data.startswith(b"\n") else data.partition(b"\n\n")[2]
    encoding = str(part.get("content-transfer-encoding") or "").strip().lower()
    try:
        if encoding == "base64":
            return base64.b64decode(content)  # blanks and line ends are skipped
        if encoding == "quoted-printable":
            return quotedprintable.decode(content)
    except (binascii.Error, ValueError):
        pass  # kept as sent: undecodable is still the file that came
    return content


def _uuencoded(part: Message) -> list[Part]:
    try:
        data = payload_bytes(part)
    except Exception:
        return []
    if not data:
        return []
    return [Part(f.filename, guess_type(f.filename), f.data) for f in uuencode.split(data)[1]]


def _unwrapped(part: Part) -> list[Part]:
    """A winmail.dat becomes the files inside it; one that cannot be read stays."""
    if not tnef.is_tnef(part.content_type, part.filename):
        return [part]
    inside = tnef.files(part.data)
    if not inside:
        return [part]
    return [Part(f.filename, guess_type(f.filename), f.data) for f in inside]


def select(parts: list[Part], limit: int) -> tuple[list[Part], list[Part]]:
    """Kept and dropped: in order, as long as the decoded total stays within `limit`."""
    kept, dropped, total = [], [], 0
    for part in parts:
        if total + part.length > limit:
            dropped.append(part)
        else:
            total += part.length
            kept.append(part)
    return kept, dropped
