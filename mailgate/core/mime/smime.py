"""S/MIME opaque-signed mail opened, so its text is read like any other mail's.

An opaque-signed message (RFC 8551 3.5.2; Outlook's "signed, not clear text") carries its
whole MIME entity — text and attachments — inside one `application/pkcs7-mime;
smime-type=signed-data` part: a CMS SignedData (RFC 5652 5) whose encapsulated content is
the entity. Without opening it the request had no text at all, only a `smime.p7m` file.
Mail clients show the entity; so does mailgate. The signature is not checked and proves
nothing here: what a mail proves comes from the MTA's results (trust.py), never from it.

CMS is BER: lengths may be indefinite and the content an OCTET STRING cut into pieces
(Outlook writes both). `signed_content` walks just the path to the content, bounded by
the data it was given; anything else it meets means "not readable", and the part stays
the file it was. Encrypted content (enveloped-data) cannot be read without the
recipient's key: it stays a file, with a defect saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message

OPAQUE_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
_SIGNED_DATA = bytes.fromhex("2a864886f70d010702")  # OID 1.2.840.113549.1.7.2
_DATA = bytes.fromhex("2a864886f70d010701")  # OID 1.2.840.113549.1.7.1
_SEQUENCE, _OID, _OCTETS, _CONSTRUCTED_OCTETS, _EXPLICIT_0 = 0x30, 0x06, 0x04, 0x24, 0xA0
_MAX_PIECE_DEPTH = 8  # an OCTET STRING in pieces of pieces: real encoders nest once
# Indefinite lengths nested in each other: finding each end reads all that is inside, so
# the depth bounds the work (CMS nests about six deep; certificates a few more).
_MAX_NESTING = 32
_MAX_LAYERS = 3  # signed inside signed (a gateway signing again); more is an attack


@dataclass(frozen=True)
class _Tlv:
    tag: int
    start: int  # first content byte
    end: int | None  # after the last content byte; None: indefinite, ends at 00 00
    after: int  # after the whole element (its end-of-contents too)


def open_signed(msg: Message, defects: list[str]) -> None:
    """Replace, in place, each opaque-signed part of MSG (the message itself too) by the
    entity it carries; note encrypted parts as defects."""
    _open(msg, defects, _MAX_LAYERS)


def _open(part: Message, defects: list[str], layers: int) -> None:
    if _is_opaque(part):
        smime_type = str(part.get_param("smime-type", "") or "").lower()
        if smime_type in ("enveloped-data", "authenveloped-data"):
            defects.append("S/MIME encrypted content cannot be read; kept as a file")
            return
        content = signed_content(_payload(part)) if layers > 0 else None
        if content is None:
            if smime_type == "signed-data":
                defects.append("S/MIME signed content could not be read; kept as a file")
            return
        _replace(part, message_from_bytes(content, policy=part.policy))
        defects.append("S/MIME opaque-signed content opened (signature not checked)")
        _open(part, defects, layers - 1)
        return
    payload = part.get_payload()
    if isinstance(payload, list):
        for inner in payload:
            if isinstance(inner, Message):
                _open(inner, defects, layers)


def _is_opaque(part: Message) -> bool:
    ctype = part.get_content_type()
    if ctype in OPAQUE_TYPES:
        return True
    # RFC 8551 3.2.2: agents that cannot label it send application/octet-stream, *.p7m.
    name = str(part.get_param("name", "") or part.get_filename("") or "").lower()
    return ctype == "application/octet-stream" and name.endswith(".p7m")


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _replace(part: Message, entity: Message) -> None:
    """PART becomes ENTITY: its Content-* fields and content; the other fields (From,
    Subject, ... of a whole message) stay."""
    for name in {n.lower() for n in part if n.lower().startswith("content-")}:
        del part[name]
    for name, value in entity.raw_items():
        if name.lower().startswith("content-"):
            part[name] = value
    # The content as read, not get_payload(): for 8-bit text that one hands over text
    # already decoded by its charset, which decode=True would then encode wrongly.
    part.set_payload(entity._payload)  # type: ignore[attr-defined]
    part.preamble, part.epilogue = entity.preamble, entity.epilogue
    part.defects.extend(entity.defects)


def signed_content(der: bytes) -> bytes | None:
    """The encapsulated content of a CMS ContentInfo holding SignedData; None if DER is
    something else, or damaged, or a signature without its content (detached)."""
    try:
        return _signed_content(der)
    except (IndexError, ValueError, StopIteration):  # cut short, malformed, fields missing
        return None


def _signed_content(der: bytes) -> bytes | None:
    info = _read(der, 0, len(der))
    if info.tag != _SEQUENCE:
        return None
    content_type, explicit = _first_two(der, info)
    if _value(der, content_type, _OID) != _SIGNED_DATA or explicit.tag != _EXPLICIT_0:
        return None
    signed = next(_children(der, explicit), None)
    if signed is None or signed.tag != _SEQUENCE:
        return None
    fields = _children(der, signed)
    next(fields), next(fields)  # version, digestAlgorithms
    encapsulated = next(fields)
    if encapsulated.tag != _SEQUENCE:
        return None
    inner_type, wrapped = _first_two(der, encapsulated)
    if _value(der, inner_type, _OID) != _DATA or wrapped.tag != _EXPLICIT_0:
        return None
    octets = next(_children(der, wrapped), None)
    return None if octets is None else _octets(der, octets, _MAX_PIECE_DEPTH)


def _first_two(der: bytes, outer: _Tlv) -> tuple[_Tlv, _Tlv]:
    children = _children(der, outer)
    return next(children), next(children)


def _value(der: bytes, tlv: _Tlv, tag: int) -> bytes | None:
    return der[tlv.start:tlv.end] if tlv.tag == tag and tlv.end is not None else None


def _octets(der: bytes, tlv: _Tlv, depth: int) -> bytes:
    """An OCTET STRING's bytes, whole or (BER) in pieces."""
    if tlv.tag == _OCTETS and tlv.end is not None:
        return der[tlv.start:tlv.end]
    if tlv.tag != _CONSTRUCTED_OCTETS or depth == 0:
        raise ValueError("not an OCTET STRING")
    return b"".join(_octets(der, piece, depth - 1) for piece in _children(der, tlv))


def _children(der: bytes, outer: _Tlv) -> Iterator[_Tlv]:
    pos = outer.start
    limit = outer.end if outer.end is not None else len(der)
    while pos < limit:
        if outer.end is None and der[pos:pos + 2] == b"\x00\x00":
            return  # end-of-contents
        child = _read(der, pos, limit)
        yield child
        pos = child.after
    if outer.end is None:
        raise ValueError("indefinite length without its end")


def _read(der: bytes, pos: int, limit: int, depth: int = _MAX_NESTING) -> _Tlv:
    """The element at POS, which must lie before LIMIT."""
    if depth == 0:
        raise ValueError("nested too deep")
    tag = der[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("high tag numbers are not on the path to the content")
    first = der[pos + 1]
    start = pos + 2
    if first == 0x80:
        if not tag & 0x20:
            raise ValueError("indefinite length on a primitive element")
        after = _indefinite_end(der, start, limit, depth - 1)
        return _Tlv(tag, start, None, after)
    if first & 0x80:
        count = first & 0x7F
        if count > 4:
            raise ValueError("length too long")
        length = int.from_bytes(der[start:start + count], "big")
        start += count
    else:
        length = first
    end = start + length
    if end > limit:
        raise ValueError("element runs past its container")
    return _Tlv(tag, start, end, end)


def _indefinite_end(der: bytes, pos: int, limit: int, depth: int) -> int:
    """After the end-of-contents that closes the element whose content starts at POS."""
    while pos < limit:
        if der[pos:pos + 2] == b"\x00\x00":
            return pos + 2
        pos = _read(der, pos, limit, depth).after
    raise ValueError("indefinite length without its end")
