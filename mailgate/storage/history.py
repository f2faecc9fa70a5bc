"""A ticket's whole story for `mailgate show`: fields, SLA clocks and the conversation.

`load` reads (no writes); `lines` formats it as text (pure). The --json form is the dict
`load` returns, as it is.
"""

from __future__ import annotations

import json
from datetime import datetime

from mailgate.storage.store import Store, from_ts

_TICKET = """SELECT id, ref, department, subject, requester, requester_name, status, priority,
                    created_at, updated_at, assignee, first_response_at, resolved_at,
                    closed_at, paused_at, survey_at, rating, rating_comment, rated_at, cc
             FROM tickets WHERE ref = ?"""
_TICKET_KEYS = ("id", "ref", "department", "subject", "requester", "requester_name", "status",
                "priority", "created_at", "updated_at", "assignee", "first_response_at",
                "resolved_at", "closed_at", "paused_at", "survey_at", "rating",
                "rating_comment", "rated_at", "cc")
_TIMES = frozenset(k for k in _TICKET_KEYS if k.endswith("_at"))
_CLOCKS = """SELECT target, started_at, due_at, met_at, paused_seconds, fired, round
             FROM sla_clocks WHERE ticket = ? ORDER BY started_at, target"""
# The ticket's events, and its escalation levels (recorded in their own table; a level
# whose mail could not go out is an event, with the reason). A level's detail (its clock
# and level, the `clock` and `seq` columns) is made in _event: SQLite's json_object has
# no common spelling in PostgreSQL. The order they happened in is _event_order's.
_EVENTS = """
    SELECT e.at, e.kind, e.actor, e.visibility, e.detail, m.message_id, m.sender,
           m.sender_trust, coalesce(m.text, m.body), o.message_id, o.kind, o.recipients,
           o.status, o.last_error, 0 AS source, '' AS clock, e.id AS seq,
           m.deliveries, m.last_delivered_at
    FROM events e
    LEFT JOIN messages m ON m.id = e.message
    LEFT JOIN outbox o ON o.id = e.outgoing
    WHERE e.ticket = :ticket
    UNION ALL
    SELECT x.at, 'sla_' || x.kind, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           o.message_id, o.kind, o.recipients, o.status, o.last_error, 1, x.target, x.level,
           NULL, NULL
    FROM escalations x
    LEFT JOIN outbox o ON o.id = x.outgoing
    WHERE x.ticket = :ticket AND (x.outgoing IS NOT NULL OR x.kind = 'skipped')"""
_ATTACHMENTS = """SELECT a.filename, a.content_type, a.size, a.sha256, m.message_id, a.created_at
                  FROM attachments a JOIN messages m ON m.id = a.message
                  WHERE a.ticket = ? ORDER BY a.id"""


def _iso(value: float | None) -> str | None:
    return from_ts(value).isoformat() if value is not None else None


async def load(store: Store, ref: str, now: datetime) -> dict | None:
    async with store.conn.execute(_TICKET, (ref.upper(),)) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    ticket = {k: (_iso(v) if k in _TIMES else v) for k, v in zip(_TICKET_KEYS, row, strict=True)}
    async with store.conn.execute(_CLOCKS, (row[0],)) as cur:
        clocks = [_clock(r, row[14], now) for r in await cur.fetchall()]
    async with store.conn.execute(_EVENTS, {"ticket": row[0]}) as cur:
        events = [_event(r) for r in sorted(await cur.fetchall(), key=_event_order)]
    await _add_copies(store, events)
    ticket["cc"] = json.loads(ticket["cc"]) if ticket["cc"] else []
    files = store.attachments()
    async with store.conn.execute(_ATTACHMENTS, (row[0],)) as cur:
        attachments = [{"filename": r[0], "content_type": r[1], "size": r[2], "sha256": r[3],
                        "path": files.where(r[3]) if files and r[3] else None, "message_id": r[4],
                        "at": _iso(r[5])} for r in await cur.fetchall()]
    linked = await store.linked_refs(row[0])
    return {"ticket": ticket, "linked": linked, "sla": clocks, "events": events,
            "attachments": attachments}


async def _add_copies(store: Store, events: list[dict]) -> None:
    """Mail to several people went out as one copy each: show every recipient."""
    mails = [e["mail"] for e in events if "mail" in e]
    if not mails:
        return
    copies = await store.copies_of([m["message_id"] for m in mails])
    for mail in mails:
        mail["to"] = [*mail["to"], *copies.get(mail["message_id"], [])]


def _clock(r: tuple, paused_at: float | None, now: datetime) -> dict:
    target, started, due, met, paused_seconds, fired, round_ = r
    if met is not None:
        state = "met" if met <= due else "met late"
    elif paused_at is not None:
        state = "paused"
    else:
        state = "breached" if due <= now.timestamp() else "running"
    return {"target": target, "state": state, "started_at": _iso(started), "due_at": _iso(due),
            "met_at": _iso(met), "paused_seconds": paused_seconds, "levels_fired": fired,
            "round": round_}


def _event_order(r: tuple) -> tuple:
    """When it happened; at one instant events before levels, levels by clock and level.
    Sorted here, not by ORDER BY: PostgreSQL orders the clock names by its database's
    collation, SQLite by their bytes (as Python does)."""
    at, source, clock, seq = r[0], r[14], r[15], r[16]
    return (at, source, clock, seq)


def _event(r: tuple) -> dict:
    if r[14] == 1:  # an escalation level: its clock and level
        detail: dict | None = {"target": r[15], "level": r[16]}
    else:
        detail = json.loads(r[4]) if r[4] else None
    event: dict = {"at": _iso(r[0]), "kind": r[1], "actor": r[2], "visibility": r[3],
                   "detail": detail}
    if r[5] is not None:
        event["message"] = {"message_id": r[5], "from": r[6], "trust": r[7], "text": r[8],
                            "deliveries": r[17], "last_delivered_at": _iso(r[18])}
    if r[9] is not None:
        event["mail"] = {"message_id": r[9], "kind": r[10], "to": json.loads(r[11]),
                         "status": r[12], "error": r[13]}
    return event


def lines(story: dict) -> list[str]:
    """The story as text: header, SLA clocks, then each event with its text indented."""
    t = story["ticket"]
    out = [f"{t['ref']}  {t['subject']}",
           f"  department {t['department']}   status {t['status']}   priority {t['priority']}"
           f"   assignee {t['assignee'] or '-'}"]
    name = f"{t['requester_name']} " if t["requester_name"] else ""
    out.append(f"  requester  {name}<{t['requester']}>")
    out.append(f"  created    {_when(t['created_at'])}   updated {_when(t['updated_at'])}")
    for key in ("first_response_at", "resolved_at", "closed_at"):
        if t[key]:
            out.append(f"  {key[:-3].replace('_', ' '):<10} {_when(t[key])}")
    if t["rating"] is not None:
        comment = f"  \"{t['rating_comment']}\"" if t["rating_comment"] else ""
        out.append(f"  rating     {t['rating']}/5{comment}")
    if story["linked"]:
        out.append(f"  linked     {', '.join(story['linked'])}")
    if t.get("cc"):
        out.append(f"  cc         {', '.join(t['cc'])}")
    if story.get("attachments"):
        out.append("  attachments")
        for a in story["attachments"]:
            where = a["path"] or "not kept (over [limits] max_attachment_bytes)"
            out.append(f"    {a['filename']}  {a['content_type']}  {a['size']} bytes  {where}")
    if story["sla"]:
        out.append("  SLA")
        for c in story["sla"]:
            when = _when(c["met_at"]) if c["met_at"] else f"due {_when(c['due_at'])}"
            again = f" (round {c['round']})" if c["round"] > 1 else ""
            out.append(f"    {c['target']:<15} {c['state']:<9} {when}{again}")
    for event in story["events"]:
        out += _event_lines(event)
    return out


def _event_lines(event: dict) -> list[str]:
    head = f"[{_when(event['at'])}] {event['kind']}"
    if event["actor"]:
        head += f"  {event['actor']}"
    if event["visibility"]:
        head += f"  ({event['visibility']})"
    message = event.get("message")
    if message and message["trust"]:
        head += f"  [{message['trust']}]"
    if message and (message.get("deliveries") or 1) > 1:
        # The same mail arrived again (a second mailbox, an MTA retry): kept once.
        head += (f"  (arrived {message['deliveries']} times, last "
                 f"{_when(message['last_delivered_at'])})")
    mail = event.get("mail")
    if mail:
        head += f"  -> {', '.join(mail['to'])} ({mail['status']}"
        head += f": {mail['error']})" if mail["error"] else ")"
    out = ["", head]
    detail = dict(event["detail"] or {})
    detail.pop("role", None)
    if mail:
        detail.pop("to", None)  # the mail's own recipients are on the head line
    commands = detail.pop("commands", None)
    if commands:
        out.append("  commands: " + " ".join(commands))
    if detail:
        out.append("  " + ", ".join(f"{k}: {_plain(v)}" for k, v in detail.items()))
    if message and message["text"]:
        out += [f"  | {line}" for line in _text_lines(message["text"])[:40]]
    return out


def _text_lines(text: str) -> list[str]:
    """A body's lines, split at line feeds only: str.splitlines would also break at a
    lone CR, a form feed or U+2028, hiding them from the admin instead of showing them
    (the CLI escapes what is left, see mailgate.core.terminal)."""
    return text.replace("\r\n", "\n").strip("\n ").split("\n")


def _plain(value: object) -> str:
    """A detail value for people: lists as "a, b", not Python's ['a', 'b']."""
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _when(iso: str) -> str:
    return local_time(datetime.fromisoformat(iso))


def local_time(moment: datetime) -> str:
    """A moment as the CLI shows it: this machine's local time, with its zone."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M %Z")
