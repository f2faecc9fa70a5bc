"""Cut quoted history and signatures off a reply's text (pure; no I/O).

What a person wrote on top of a reply is what a ticket should keep and relay; the quoted
conversation below it is already on the ticket. The rules are deliberately few and
explicit, in the order a reader scans a mail top-down:

- the text ends at the first attribution line of a quote: "On <date>, <someone> wrote:"
  (also wrapped over two lines, and the German, French, Spanish and Dutch forms), at an
  Outlook "-----Original Message-----" separator, or at an Outlook header block
  ("From: ..." followed within three lines by "Sent:"/"Date:");
- the text ends at a signature separator ("-- ", or "--" when the trailing space was
  eaten) and at "Sent from my ..." lines;
- lines starting with ">" are quoted and dropped wherever they are.

A forwarded message ("---------- Forwarded message ---------") is not history but content
someone chose to send, so it is kept.

When nothing is left (a mail that is only a quote), the text is empty: the caller decides.
"""

from __future__ import annotations

import re

_ATTRIBUTION = re.compile(
    r"^\s*(on\b.{0,300}\bwrote|am\b.{0,300}\bschrieb.{0,120}|le\b.{0,300}\ba [ée]crit"
    r"|el\b.{0,300}\bescribi[óo]|op\b.{0,300}\bschreef)\s*:\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_START = re.compile(r"^\s*(on|am|le|el|op)\s", re.IGNORECASE)
_SEPARATOR = re.compile(
    r"^\s*-{2,}\s*(original message|urspr[üu]ngliche nachricht|message d'origine"
    r"|mensaje original)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_FORWARDED = re.compile(r"^\s*-{2,}\s*(forwarded message|weitergeleitete nachricht"
                        r"|message transf[ée]r[ée]|mensaje reenviado)\s*-{2,}\s*$",
                        re.IGNORECASE)
_HEADER_FROM = re.compile(r"^\s*\*?(from|von|de)\s*:\*?\s", re.IGNORECASE)
_HEADER_SENT = re.compile(r"^\s*\*?(sent|date|gesendet|datum|envoy[ée]|enviado)\s*:",
                          re.IGNORECASE)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
_MOBILE = re.compile(r"^\s*(sent from my|von meinem|get outlook for)\b.{0,60}$", re.IGNORECASE)


def trim_reply(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    end = _end_of_own_text(lines)
    kept = [line.rstrip() for line in lines[:end] if not line.lstrip().startswith(">")]
    return _tidy(kept)


def _end_of_own_text(lines: list[str]) -> int:
    for index, line in enumerate(lines):
        if _FORWARDED.match(line):
            return len(lines)  # what follows was forwarded on purpose: all of it is content
        if _starts_quote(lines, index) or _is_signature(line):
            return index
    return len(lines)


def _starts_quote(lines: list[str], index: int) -> bool:
    line = lines[index]
    if _ATTRIBUTION.match(line) or _SEPARATOR.match(line):
        return True
    following = lines[index + 1:index + 4]
    # Gmail wraps a long attribution: "On Tue, 24 Nov 2026 at 10:00, Ann <a@x>\nwrote:"
    if (_ATTRIBUTION_START.match(line) and following
            and _ATTRIBUTION.match(f"{line} {following[0].strip()}")):
        return True
    if _UNDERSCORES.match(line) and any(_HEADER_FROM.match(n) for n in following[:2]):
        return True
    if _HEADER_FROM.match(line):
        return any(_HEADER_SENT.match(n) for n in following)
    return False


def _is_signature(line: str) -> bool:
    return line in ("-- ", "--") or line.rstrip() == "--" or bool(_MOBILE.match(line))


def _tidy(lines: list[str]) -> str:
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n").rstrip()
