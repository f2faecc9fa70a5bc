"""Which existing ticket does a message continue? The pure half: what to look up.

A message continues a ticket when its subject carries a ticket tag such as [IT-1042] whose
prefix the directory knows, or when In-Reply-To/References name a message we stored or
sent. The store resolves the candidates; this module only extracts and orders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailgate.core.model import Inbound

TAG = re.compile(r"\[([A-Za-z][A-Za-z0-9]{0,9})-(\d{1,9})\]")
REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|fw|fwd|wg|tr|antw)\s*(\[\d+\])?\s*:\s*)+",
                          re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ThreadHints:
    ticket_refs: tuple[str, ...]  # "IT-1042", in subject order
    message_ids: tuple[str, ...]  # In-Reply-To first, then References newest first


def thread_hints(msg: Inbound, known_prefixes: frozenset[str]) -> ThreadHints:
    refs = []
    for prefix, number in TAG.findall(msg.subject):
        prefix = prefix.upper()
        ref = f"{prefix}-{int(number)}"
        if prefix in known_prefixes and ref not in refs:
            refs.append(ref)
    ids = dict.fromkeys((*msg.in_reply_to, *reversed(msg.references)))
    ids.pop(msg.message_id, None)
    return ThreadHints(tuple(refs), tuple(ids))


def clean_subject(subject: str) -> str:
    """The subject without ticket tags and reply prefixes, for storing and re-tagging."""
    previous = None
    while previous != subject:
        previous = subject
        subject = REPLY_PREFIX.sub("", TAG.sub("", subject)).strip()
    return subject or "(no subject)"


def tagged_subject(refs: list[str], subject: str) -> str:
    """"[IT-1001] Re: Laptop won't boot" -- tags first so every client keeps them visible."""
    tags = " ".join(f"[{ref}]" for ref in refs)
    return f"{tags} Re: {clean_subject(subject)}"
