"""The MIME tree of a Message -> the body text a reader is shown and the attachments.

The body is the plain choice of each alternative, each part of a multipart/mixed in its
place (Leaf), HTML read as a client shows it (htmlplain.py); a part's own text is
partcontent.py's reading, whose uuencoded files join the attachments, and a winmail.dat
gives up the files and text inside it (tnef.py). files.py and outbound/compose.py walk
the tree by the same rules (leaf_parts, body_parts, shown_children), so what is stored
and relayed matches Inbound.attachments.
"""

from __future__ import annotations

from email.message import Message
from itertools import islice
from typing import NamedTuple

from mailgate.core.mime import tnef
from mailgate.core.mime.headerfields import Reading
from mailgate.core.mime.htmlplain import html_to_text
from mailgate.core.mime.partcontent import (
    guess_type,
    html_text,
    line_ends,
    other_text,
    part_filename,
    payload_bytes,
    plain_text,
)
from mailgate.core.model import Attachment

MAX_PARTS = 500
MAX_DEPTH = 50


class Leaf(NamedTuple):
    """A leaf part and where it sits. RFC 2046 5.1.3: a multipart/mixed's parts are shown
    one after the other, so each gives its text to the body (a gateway's banner, then the
    request; a request, then a list's footer), unless the mixed is itself only one of the
    choices of a multipart/alternative (Apple Mail's HTML: text, picture, text).

    `parent`: the parent's content type ("" for the message itself). `free`: no
    multipart/alternative above the parent but through the choice whose text is read
    (_plain_choice), so the parent is shown whole. `group`: for a
    leaf of a multipart/alternative or multipart/related that sits in a free
    multipart/mixed, a number naming that container (0 otherwise): it gives one text."""

    part: Message
    parent: str
    group: int = 0
    free: bool = True


def _walk(msg: Message, defects: list[str], types: list[str]) -> list[Leaf]:
    """Leaf parts in order (see Leaf), iteratively (deep nesting must not hit the
    recursion limit); `types` gets the content type of every part met, containers too."""
    leaves: list[Leaf] = []
    stack: list[tuple[Message, int, str, int, bool]] = [(msg, 0, "", 0, True)]
    while stack and len(leaves) < MAX_PARTS:
        part, depth, parent, group, free = stack.pop()
        try:
            ctype = part.get_content_type()
            types.append(ctype)
            payload = part.get_payload()
        except Exception:  # e.g. a charset parameter the codec machinery chokes on
            defects.append("unreadable part structure")
            continue
        # An attached message (message/rfc822, a delivery-status block) is one attachment:
        # its text is not this message's text, and it is stored whole.
        if part.is_multipart() and isinstance(payload, list) and not ctype.startswith("message/"):
            if depth >= MAX_DEPTH:
                defects.append(f"multipart nesting deeper than {MAX_DEPTH}; inner parts ignored")
                continue
            inner = (len(types) if ctype in _GROUPS and parent == _MIXED and free
                     else 0)  # a number of its own
            children = shown_children(ctype, payload)
            chosen = _plain_choice(children) if ctype == _ALTERNATIVE else None
            stack.extend((p, depth + 1, ctype, inner,
                          free and (ctype != _ALTERNATIVE or p is chosen))
                         for p in reversed(children))
        else:
            leaves.append(Leaf(part, parent, group, free))
    if stack:
        defects.append(f"more than {MAX_PARTS} parts; the rest ignored")
    return leaves


def shown_children(ctype: str, payload: list) -> list[Message]:
    """The parts of a multipart a mail client shows. A multipart/appledouble (RFC 1740) is
    a Mac file's Finder data and resource fork (application/applefile) and its data fork:
    only the data fork is the file; the other, under the same name, is no attachment."""
    children = [p for p in payload if isinstance(p, Message)]
    if ctype != _APPLEDOUBLE:
        return children
    forks = [p for p in children if p.get_content_type() != "application/applefile"]
    return forks or children


def _plain_choice(choices: list[Message]) -> Message | None:
    """The choice of a multipart/alternative whose text is read, when it is a multipart:
    the first choice that holds plain body text (RFC 8621 4.1.4's example: text, a
    picture, more text in a multipart/mixed beside the HTML). It is shown whole, so it
    stays free (see Leaf); a single text/plain choice needs no such mark."""
    for choice in choices:
        try:
            if not choice.is_multipart():
                if _plain(choice, choice.get_content_type()):
                    return None
                continue
            if _holds_plain_text(choice):
                return choice
        except Exception:  # an unreadable choice is not the one read
            continue
    return None


def _holds_plain_text(container: Message) -> bool:
    """Whether a multipart holds an unnamed inline text/plain leaf, not counting those
    inside attached messages (their text is not this message's)."""
    stack, seen = [container], 0
    while stack and seen < MAX_PARTS:
        part, seen = stack.pop(), seen + 1
        ctype = part.get_content_type()
        payload = part.get_payload()
        if ctype.startswith("message/"):
            continue
        if isinstance(payload, list):
            stack.extend(p for p in payload if isinstance(p, Message))
        elif _plain(part, ctype) and _disposition(part) != "attachment" and not part_filename(
                part):
            return True
    return False


def body_and_attachments(r: Reading, max_chars: int
                          ) -> tuple[str, tuple[Attachment, ...], tuple[str, ...]]:
    """The body text, the attachments and every part's content type, in order."""
    texts: list[str] = []  # the plain body, "\n\n".join(texts): see _join_into
    html: str | None = None
    fallback: str | None = None  # text a client shows although it is no proper body part
    attachments: list[Attachment] = []
    types: list[str] = []
    shown: set[int] = set()  # the groups (see Leaf) whose text is in the body
    for part, parent, group, free in _walk(r.msg, r.defects, types):
        try:
            ctype = part.get_content_type()
            filename = part_filename(part, r.defects, r.hint)
            inline = _disposition(part) != "attachment"
            if _plain(part, ctype) and inline and not filename and _body_text(
                    bool(texts), parent, group, free, shown):
                # Text, an inline picture, more text (Apple Mail, phones): one body.
                text, files = plain_text(part, r.defects)
                _join_into(texts, text)
                attachments += files
            elif ctype == "text/html" and inline and not filename and _html_shown(
                    parent, group, free, shown):
                # Shown in sequence like a plain part (an HTML request, then a list's
                # plain footer): its text joins the body in its place.
                source = html_text(part, r.defects)
                _join_into(texts, html_to_text(source))
                html = source if html is None else html
            elif ctype == "text/html" and inline and not filename and (
                    html is None or group in shown):  # else the plain text's HTML twin
                html = html_text(part, r.defects) if html is None else html
            else:
                if _plain(part, ctype) and fallback is None and inline:
                    fallback, _ = plain_text(part, r.defects)  # named, shown inline
                elif ctype == "text/html" and fallback is None and inline:
                    fallback = html_to_text(html_text(part, r.defects))  # likewise
                elif _shown_as_text(ctype) and fallback is None and inline and not filename:
                    fallback = other_text(part, ctype, r.defects)
                found, text = _attachments(part, ctype, filename, r.defects)
                attachments += found
                fallback = fallback or text  # e.g. the text inside a winmail.dat
        except Exception as exc:
            r.defects.append(f"unreadable part: {type(exc).__name__}")
    plain = "\n\n".join(texts) if texts else None
    # Plain text first; an empty plain part beside real HTML, or beside text shown
    # otherwise (a winmail.dat's, a named inline text), is no text.
    if plain is not None and (plain.strip() or not (html or fallback)):
        body = plain
    else:
        body = html_to_text(html) if html else fallback or ""  # converted only if read
    body = line_ends(body).replace("\x00", "")
    if len(body) > max_chars:
        r.defects.append(f"body longer than {max_chars} characters; cut")
        body = body[:max_chars]
    return body, tuple(attachments[:MAX_PARTS]), tuple(types)


def _plain(part: Message, ctype: str) -> bool:
    """Whether a leaf is read as text/plain: it is one, or it is a multipart whose
    boundary never comes (no delimiter line: its content is plain text, what mail
    programs show; flanker's false-multipart.eml, mime4j's missing-inner-boundary.msg)."""
    return ctype == "text/plain" or (ctype.startswith("multipart/")
                                     and isinstance(part.get_payload(), str))


def leaf_parts(msg: Message) -> list[Leaf]:
    """Leaf parts in order (see Leaf), within the bounds parse() reads (MAX_PARTS,
    MAX_DEPTH)."""
    return _walk(msg, [], [])


def _body_text(have_text: bool, parent: str, group: int, free: bool,
               shown: set[int]) -> bool:
    """Whether an unnamed inline text/plain leaf is body text: the first one; each one in
    a free multipart/mixed; the first one of each alternative or related part shown in
    one (`shown` collects those; see Leaf)."""
    if group and group not in shown:
        shown.add(group)
        return True
    return not have_text or (parent == _MIXED and free)


def _html_shown(parent: str, group: int, free: bool, shown: set[int]) -> bool:
    """Whether an unnamed inline text/html leaf is shown in sequence in a free
    multipart/mixed (see Leaf): a part of it, or the first text of a multipart/related in
    it (the related's root, its pictures beside it). An HTML alternative is not: the
    plain one is read."""
    if parent == _MIXED and free:
        return True
    if group and parent == _RELATED and group not in shown:
        shown.add(group)
        return True
    return False


def body_parts(leaves: list[Leaf]) -> list[Message]:
    """The text/plain parts (of leaf_parts()) the body text comes from, in order, by
    parse()'s rule (_body_text); attachments.py takes the uuencoded files from these and
    stores the other parts."""
    found: list[Message] = []
    shown: set[int] = set()
    for part, parent, group, free in leaves:
        try:
            if (_plain(part, part.get_content_type()) and _disposition(part) != "attachment"
                    and not part_filename(part)
                    and _body_text(bool(found), parent, group, free, shown)):
                found.append(part)
        except Exception:
            continue
    return found


def _join_into(texts: list[str], more: str) -> None:
    """Add `more` to the text "\\n\\n".join(texts): the text so far without its trailing
    blanks, a blank line, `more` without its leading ones; `more` alone while the text so
    far is blank. In pieces, joined once: a text joined part by part was copied again for
    each part (500 parts of 100 kB took 8 s). texts[0] is blank only when it is alone."""
    if not texts or _blank(texts[0]):
        texts[:] = [more]
        return
    while _blank(texts[-1]):  # blank pieces at the end go, as in rstrip()
        texts.pop()
    texts[-1] = texts[-1].rstrip()
    texts.append(more.lstrip())


def _blank(text: str) -> bool:
    """text.strip() == "", without copying the text."""
    return not text or text.isspace()


def _disposition(part: Message) -> str:
    return str(part.get("content-disposition") or "").split(";")[0].strip().lower()


def _size(part: Message) -> int:
    """Bytes of a leaf's content; of an attached message, its encoded content summed
    (serialising it again just to count would cost more than parsing it did)."""
    data = payload_bytes(part)
    if data is not None:
        return len(data)
    total = 0
    for inner in islice(part.walk(), MAX_PARTS):  # stops early, lists nothing
        payload = inner.get_payload()
        total += len(payload) if isinstance(payload, str) else 0
    return total


def _attachments(part: Message, ctype: str, filename: str,
                 defects: list[str]) -> tuple[list[Attachment], str | None]:
    """One attachment, or the files a winmail.dat carries; and the text a winmail.dat
    carries (None if none)."""
    if tnef.is_tnef(ctype, filename):
        inside = tnef.read(payload_bytes(part) or b"")
        if inside is None:
            defects.append("winmail.dat (TNEF) could not be read; kept as it is")
        else:
            text = inside.text.strip() or html_to_text(inside.html) or None
            if inside.files:
                return [Attachment(f.filename, guess_type(f.filename), len(f.data))
                        for f in inside.files], text
            return [Attachment(filename or "unnamed", ctype, _size(part))], text
    return [Attachment(filename or "unnamed", ctype, _size(part))], None


_MIXED = "multipart/mixed"
_RELATED = "multipart/related"
_ALTERNATIVE = "multipart/alternative"
_APPLEDOUBLE = "multipart/appledouble"
_GROUPS = (_ALTERNATIVE, _RELATED)  # containers whose text Leaf.group tracks
# Text subtypes that are data for a program rather than text for a reader.
_NOT_SHOWN_AS_TEXT = frozenset({"text/calendar", "text/rfc822-headers", "text/vcard",
                                "text/x-vcard", "text/directory", "text/x-vcalendar"})


def _shown_as_text(ctype: str) -> bool:
    """RFC 2046 4.1.4: an unrecognised subtype of text is treated as text/plain (HTML has
    its own reading; calendars, cards and header blocks are no one's message text)."""
    return (ctype.startswith("text/") and ctype not in ("text/plain", "text/html")
            and ctype not in _NOT_SHOWN_AS_TEXT)
