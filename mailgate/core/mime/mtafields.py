"""The header block as the MTA in front of mailgate reads it, for what trust.py decides:
the Authentication-Results fields, where they sit (below how many Received fields, between
which sender-written fields), the DKIM-Signature fields, and counts of the fields a DKIM
pass pins. compat32 reads some header blocks otherwise than an MTA does (a CR alone ends
its line, a name with blanks before its colon is a field); where the two readings differ,
nothing here is vouched for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import islice

from mailgate.core.headernames import PINNING_FIELDS
from mailgate.core.mime.headerfields import FOLD, Reading, unfolded

# A header field line as Postfix's is_header() reads one: a name, optional blanks, a colon
# (RFC 5322 4.5 obsolete syntax allows the blanks).
_MTA_FIELD = re.compile(rb"([!-9;-~]+)([ \t]*):")
MAX_MTA_HEADER_LINES = 10_000
MAX_SIGNATURES = 10


@dataclass(frozen=True, slots=True)
class _MtaField:
    name: bytes  # as written, before the blanks and the colon
    blanks: bool  # blanks before the colon
    value: bytes  # after the colon, continuation lines and their line ends included


def _fields_as_mta_reads(raw: bytes) -> list[_MtaField] | None:
    """The header fields as an MTA finds them, and so what strips forged ones (a
    header_checks rule, a milter) and the DKIM verifier see: lines ended by LF, fields
    and their continuations up to the first line that is neither (an empty line, or a line
    without a colon, where an MTA's body starts and headerblock.mend reads on). None past
    MAX_MTA_HEADER_LINES lines: not counted."""
    spans: list[tuple[re.Match[bytes], int]] = []  # each field's name line, and its end
    start = raw.index(b"\n") + 1 if raw.startswith(b"From ") and b"\n" in raw else 0
    for _ in range(MAX_MTA_HEADER_LINES):
        end = raw.find(b"\n", start)
        end = len(raw) if end < 0 else end + 1
        if spans and raw[start:start + 1] in (b" ", b"\t"):  # a continuation
            spans[-1] = (spans[-1][0], end)
        else:
            found = _MTA_FIELD.match(raw, start, end) if start < len(raw) else None
            if found is None:
                return [_MtaField(m.group(1), bool(m.group(2)), raw[m.end():stop])
                        for m, stop in spans]
            spans.append((found, end))
        start = end
    return None


def authentication(r: Reading, raw: bytes) -> tuple[
        tuple[str, ...], tuple[int, ...], tuple[tuple[int, int], ...], tuple[str, ...],
        dict[str, int]]:
    """The Authentication-Results headers as the MTA wrote them, only unfolded, for
    authres.py's grammar; with them what trust.py needs to see what a DKIM pass vouches
    for (Inbound.dkim_signatures, Inbound.field_counts).

    Never RFC 2047-decoded (an encoded word in a copied envelope sender would become
    structure) and never cut (a cut header could end in a pass). None at all when compat32
    found other fields than an MTA does: "X-Note: x<CR>Authentication-Results: ..."
    (compat32 ends a line at a CR alone, an MTA only at LF), "Authentication-Results :
    ..." or one below a line without a colon (both read after headerblock.mend) is a
    header no rule stripped, and one of ours to us. None either when a field RFC 5322
    allows once is there twice: which one did the verifier check?"""
    values = r.values("authentication-results")
    if not values or _repeated_once_only_field(r):
        return (), (), (), (), {}
    fields = _fields_as_mta_reads(raw)
    if fields is None or len(values) != sum(
            f.name.lower() == b"authentication-results" and not f.blanks for f in fields):
        return (), (), (), (), {}
    signatures = tuple(islice((_field_text(f.value) for f in fields  # only those kept
                               if f.name.lower() == b"dkim-signature" and not f.blanks),
                              MAX_SIGNATURES))
    return (tuple(unfolded(v) for v in values[:10]), _depths(fields)[:10],
            _sides(fields), signatures, _field_counts(r, fields))


def _depths(fields: list[_MtaField]) -> tuple[int, ...]:
    """For each Authentication-Results field, the Received fields above it."""
    depths, received = [], 0
    for f in fields:
        name = f.name.lower()
        if name == b"received":
            received += 1
        elif name == b"authentication-results" and not f.blanks:
            depths.append(received)
    return tuple(depths)


def _sides(fields: list[_MtaField]) -> tuple[tuple[int, int], ...]:
    """For each Authentication-Results field, how many of the fields its sender writes
    (From, Date, Subject ...: RFC 5322 3.6 but trace) lie above it, and below it."""
    senders = frozenset(name.encode() for name in _ONCE_ONLY_FIELDS)
    written = [f.name.lower() in senders for f in fields]
    total, above, sides = sum(written), 0, []
    for f, by_sender in zip(fields, written, strict=True):
        above += by_sender
        if f.name.lower() == b"authentication-results" and not f.blanks:
            sides.append((above, total - above))
    return tuple(sides)


def _field_counts(r: Reading, fields: list[_MtaField]) -> dict[str, int]:
    """Instances of each pinning field and of DKIM-Signature, as the MTA reads the header;
    -1 where one is written with blanks before its colon (does the verifier take it for
    that field?) or, for a pinning field, where compat32 counts otherwise (mailgate reads
    another field than the verifier checked)."""
    counts = dict.fromkeys((*PINNING_FIELDS, "dkim-signature"), 0)
    for f in fields:
        name = f.name.lower().decode("ascii")
        if name in counts and counts[name] >= 0:
            counts[name] = -1 if f.blanks else counts[name] + 1
    for name in PINNING_FIELDS:
        if counts[name] != len(r.values(name)):
            counts[name] = -1
    return counts


def _field_text(value: bytes) -> str:
    """A field's value as text, unfolded; bytes that are not ASCII become U+FFFD."""
    text = value.decode("ascii", "replace")
    return FOLD.sub("", text.removesuffix("\n").removesuffix("\r"))


# RFC 5322 section 3.6: at most one of each. DKIM signs the last instance of a field, we
# read the first: a copy of a signed mail with "Subject: [IT-1002]" put above its signed
# Subject still passes DKIM, and would run its commands on another ticket.
_ONCE_ONLY_FIELDS = ("date", "from", "sender", "reply-to", "to", "cc", "message-id",
                     "in-reply-to", "references", "subject")


def _repeated_once_only_field(r: Reading) -> bool:
    return any(len(r.values(name)) > 1 for name in _ONCE_ONLY_FIELDS)
