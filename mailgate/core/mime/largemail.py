"""Large messages without large copies: a zero-copy look at the MIME structure.

The stdlib parser holds a 50 MB message about eight times over (the bytes, a decoded
string, its lines, each payload string, the decoded payload) and its big C calls hold the
GIL for hundreds of milliseconds, so a worker thread stalls the event loop anyway. For a
message over LARGE bytes, `lighten` finds the MIME leaves by searching for boundaries in the
bytes and replaces the body of every big attachment leaf with a short marker. Everything
that reads the message -- parse, classify, the attachment list, the parts relayed to the
team -- then reads the small `slim` message, exactly as it reads any other; the real bytes
of a lightened leaf are decoded in chunks straight into the attachment store
(`decoded_chunks`) and put back into relayed parts as they came (`restore`).
Pure: bytes in, bytes out.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser

from mailgate.core.mime import quotedprintable
from mailgate.outbound.compose import RelayParts

LARGE = 1024 * 1024  # messages over this take the light path
BIG_LEAF = 64 * 1024  # leaves whose body is larger than this are lightened
MAX_DEPTH = 20
MAX_LEAVES = 500
CHUNK = 1024 * 1024  # decoded in pieces: no GIL-holding call over one piece
_LIGHT_CTE = frozenset({"base64", "quoted-printable", "7bit", "8bit", "binary", ""})
_MARKER = b"MAILGATE-LIGHTENED-PART-%04d-%s"  # one length for all: parse reports it as size


@dataclass(frozen=True, slots=True)
class Span:
    start: int  # the leaf's body in the original bytes
    end: int
    encoding: str  # its Content-Transfer-Encoding, lower case
    size: int = 0  # decoded: exact for base64 and identity, an upper bound for QP


@dataclass(frozen=True, slots=True)
class Light:
    slim: bytes  # the message with each big leaf's body replaced by its marker
    spans: dict[bytes, Span] = field(default_factory=dict)  # decoded marker -> real body
    encoded: dict[bytes, bytes] = field(default_factory=dict)  # encoded marker -> decoded

    def real(self, data: bytes) -> Span | None:
        """The lightened leaf whose decoded content `data` is (its marker), if any."""
        return self.spans.get(data) if len(data) == self.stand_in_size else None

    @property
    def stand_in_size(self) -> int:
        return len(next(iter(self.spans)))

    def sizes(self) -> list[int]:
        """The decoded size of each lightened leaf, in order."""
        return [span.size for span in self.spans.values()]


def lighten(raw: bytes, nonce: str | None = None) -> Light | None:
    """The light view of a large message, or None when nothing in it is big (or its
    structure is not what the scan understands: then the normal path reads it)."""
    leaves: list[tuple[int, int, str]] = []
    try:
        _scan(raw, 0, len(raw), 0, leaves)
    except _Unreadable:
        return None
    pieces, spans, encoded, pos = [], {}, {}, 0
    nonce = nonce or secrets.token_hex(8)  # mail cannot name a marker it does not know
    for index, (start, end, cte) in enumerate(leaves):
        marker = _MARKER % (index, nonce.encode())
        body = base64.b64encode(marker) if cte == "base64" else marker
        pieces += [raw[pos:start], body]
        spans[marker] = Span(start, end, cte, _decoded_size(raw, start, end, cte))
        encoded[body] = marker
        pos = end
    if not spans:
        return None
    pieces.append(raw[pos:])
    return Light(b"".join(pieces), spans, encoded)


def decoded_chunks(raw: bytes, span: Span) -> Iterator[bytes]:
    """The leaf's decoded content, a piece at a time (base64 and quoted-printable cut at
    line ends; base64 carries what does not fill a group of four to the next piece)."""
    view = memoryview(raw)[span.start:span.end]
    carry = b""
    offset = 0
    while offset < len(view):
        stop = min(len(view), offset + CHUNK)
        if stop < len(view):
            cut = raw.rfind(b"\n", span.start + offset, span.start + stop)
            stop = cut - span.start + 1 if cut > span.start + offset else stop
        piece = bytes(view[offset:stop])
        offset = stop
        if span.encoding == "base64":
            data = carry + piece.translate(None, _SPACE)
            whole = len(data) - len(data) % 4
            carry = data[whole:]
            yield _b64(data[:whole])
        elif span.encoding == "quoted-printable":
            yield quotedprintable.decode(piece)
        else:
            yield piece
    if carry:
        yield _b64(carry + b"=" * (-len(carry) % 4))


def restore(part: bytes, light: Light, raw: bytes) -> bytes:
    """A relayed MIME part as it came: its marker back to the original body bytes."""
    found = _marker_in(part, light)
    if found is None:
        return part
    body, span = found
    return part.replace(body, raw[span.start:span.end].rstrip(b"\r\n"), 1)


def _marker_in(part: bytes, light: Light) -> tuple[bytes, Span] | None:
    """The encoded marker a relayed part carries, and the leaf it stands for."""
    return next(((body, light.spans[marker]) for body, marker in light.encoded.items()
                 if body in part), None)


def restored_parts(found: RelayParts, light: Light, raw: bytes, limit: int) -> RelayParts:
    """Relay parts read from the light view, with each big part's real bytes back; those
    that no longer fit under `limit` are named as left out instead."""
    kept: list[bytes] = []
    left_out = list(found.left_out)
    total = 0
    for part in found.parts:
        size = _restored_size(part, light)
        if total + size > limit:  # measured first: a 50 MB part is never copied to be dropped
            left_out.append((_name(part), size))
            continue
        total += size
        kept.append(restore(part, light, raw))
    return RelayParts(tuple(kept), tuple(left_out))


def _restored_size(part: bytes, light: Light) -> int:
    found = _marker_in(part, light)
    if found is None:
        return len(part)
    body, span = found
    return len(part) - len(body) + span.end - span.start


def _name(part: bytes) -> str:
    end = part.find(b"\r\n\r\n")
    head = part[: end if end >= 0 else 4096]
    return BytesHeaderParser().parsebytes(head).get_filename() or "unnamed"


class _Unreadable(Exception):
    pass


_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.I)


def _scan(raw: bytes, start: int, end: int, depth: int, leaves: list) -> None:
    if depth > MAX_DEPTH or len(leaves) > MAX_LEAVES:
        raise _Unreadable
    body = _body_start(raw, start, end)
    headers = BytesHeaderParser().parsebytes(raw[start:body])
    ctype = headers.get_content_type()
    if ctype.startswith("multipart/"):
        found = _BOUNDARY.search(str(headers.get("content-type", "")).encode("utf-8",
                                                                           "surrogateescape"))
        if not found:
            raise _Unreadable
        boundary = found.group(1) or found.group(2)
        for part_start, part_end in _parts(raw, body, end, boundary):
            _scan(raw, part_start, part_end, depth + 1, leaves)
        return
    if _lightens(headers, ctype, end - body):
        leaves.append((body, end, str(headers.get("content-transfer-encoding", "")).strip()
                       .lower()))


def _lightens(headers: Message, ctype: str, size: int) -> bool:
    if size <= BIG_LEAF or ctype.startswith(("message/", "multipart/")):
        return False
    cte = str(headers.get("content-transfer-encoding", "")).strip().lower()
    if cte not in _LIGHT_CTE or ctype == "application/ms-tnef":
        return False
    disposition = str(headers.get("content-disposition", "")).split(";")[0].strip().lower()
    named = headers.get_param("name") or headers.get_param("filename", header="content-disposition")
    if "winmail" in str(named).lower():
        return False
    # A text leaf without a name is a body candidate: parse must read it.
    return not (ctype.startswith("text/") and not named and disposition != "attachment")


def _body_start(raw: bytes, start: int, end: int) -> int:
    if raw.startswith((b"\r\n", b"\n"), start):  # no headers at all
        return start + (2 if raw.startswith(b"\r\n", start) else 1)
    window = min(end, start + MAX_HEADERS)  # never a scan of a 50 MB body for "\n\n"
    found = [(i + len(sep)) for sep in (b"\r\n\r\n", b"\n\n", b"\n\r\n")
             if (i := raw.find(sep, start, window)) >= 0]
    if not found:
        raise _Unreadable
    return min(found)


def _parts(raw: bytes, start: int, end: int, boundary: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each body part between the delimiter lines of `boundary`."""
    delimiter = b"--" + boundary
    pos, part_start = start, None
    while True:
        i = _find(raw, delimiter, pos, end)
        if i < 0:
            raise _Unreadable  # no closing delimiter: let the tolerant parser have it
        at_line_start = i == start or raw[i - 1:i] == b"\n"
        line_end = raw.find(b"\n", i, end)
        line_end = end if line_end < 0 else line_end + 1
        tail = raw[i + len(delimiter):line_end].strip()
        pos = line_end
        if not at_line_start or tail not in (b"", b"--"):
            continue
        if part_start is not None:
            stop = i - 2 if raw[i - 2:i] == b"\r\n" else i - 1
            yield part_start, max(part_start, stop)
        if tail == b"--":
            return
        part_start = line_end


_SPACE = b"\r\n \t"
MAX_HEADERS = 256 * 1024  # a part's header block longer than this is not read lightly


def _find(raw: bytes, needle: bytes, start: int, end: int) -> int:
    """bytes.find in windows of CHUNK: one search over 50 MB holds the GIL long enough to
    stall the event loop; between windows the loop's thread gets its turn."""
    while start < end:
        stop = min(end, start + CHUNK + len(needle))
        found = raw.find(needle, start, stop)
        if found >= 0 or stop == end:
            return found
        start = stop - len(needle)
    return -1


def _count(raw: bytes, byte: bytes, start: int, end: int) -> int:
    return sum(raw.count(byte, at, min(end, at + CHUNK)) for at in range(start, end, CHUNK))


def _decoded_size(raw: bytes, start: int, end: int, cte: str) -> int:
    """Without decoding: exact for base64 (its alphabet, less padding) and the identity
    encodings, an upper bound for quoted-printable."""
    if cte != "base64":
        return end - start
    spaces = sum(_count(raw, c, start, end) for c in (b"\r", b"\n", b" ", b"\t"))
    padding = raw[max(start, end - 8):end].count(b"=")
    return max(0, (end - start - spaces) * 3 // 4 - padding)


def _b64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:  # a lone trailing character: nothing more can be decoded
        return binascii.a2b_base64(data[: len(data) - len(data) % 4])
