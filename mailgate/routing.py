"""Which departments own a new request. Pure: a message plus the directory in, keys out."""

from __future__ import annotations

from mailgate.directory import Directory
from mailgate.model import Inbound, Origin


def departments_for(msg: Inbound, origin: Origin, directory: Directory) -> list[str]:
    """Departments addressed by the message, in header order, then the origin's ones.

    A message to it-help with facilities in Cc belongs to both; the mailbox (or SMTP
    envelope recipient) it was received through always counts, which covers Bcc.
    """
    keys: dict[str, None] = {}
    for addr in (*origin.envelope_recipients, *msg.recipients()):
        dept = directory.department_for_address(addr)
        if dept:
            keys[dept.key] = None
    keys.update(dict.fromkeys(d for d in origin.departments if d in directory.departments))
    if not keys and directory.default_department:
        keys[directory.default_department] = None
    return list(keys)
