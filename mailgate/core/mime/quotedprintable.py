"""Quoted-printable content (RFC 2045 6.7) decoded without losing text at odd soft breaks.

binascii.a2b_qp, which the email package (`get_payload(decode=True)`, through quopri) and
`quopri` use, stumbles on two shapes of the soft line break that real mail has:

- "=" then transport padding then the line end ("=  \r\n"): rule (3) says white space at
  the end of an encoded line was added in transit and must be deleted, so this is a soft
  break; binascii keeps "= " and the line break in the text;
- "=" then a bare CR (mail from old Macintosh clients, or a CR left alone in transit):
  binascii drops everything from there to the next LF, or to the end of a mail with no LF
  at all. Text lost.

Both are rewritten to the plain soft break "=\n" first; binascii then decodes as before,
at C speed. Content without either shape is handed to binascii unchanged.

mailgate gives the email package this decoder when mailgate.core.mime is imported (its
__init__), before any mail is read.
"""

from __future__ import annotations

import binascii
import re
import types
from email import message

_SOFT_BREAK = re.compile(rb"=[ \t]*(?:\r\n|\n|\r)")


def decode(data: bytes) -> bytes:
    """Quoted-printable DATA decoded; anything that is not an escape is kept as sent."""
    if _odd_soft_breaks(data):
        data = _SOFT_BREAK.sub(b"=\n", data)
    return binascii.a2b_qp(data)


def _odd_soft_breaks(data: bytes) -> bool:
    """Maybe a soft break binascii misreads: a literal "=" is always escaped (=3D), so "= "
    or "=\t" is padding or damage; "=\r" is a soft break unless an LF follows. Counted at
    C speed: a regular expression looking at every "=" took five times binascii's time."""
    return (b"= " in data or b"=\t" in data
            or data.count(b"=\r") != data.count(b"=\r\n"))


def install() -> None:
    """email.message decodes through `quopri.decodestring(bytes)`: it gets this decoder.
    Only email.message's own name for the module is replaced, not quopri itself."""
    message.quopri = types.SimpleNamespace(decodestring=decode)  # type: ignore[attr-defined]
