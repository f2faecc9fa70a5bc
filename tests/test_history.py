"""`mailgate show`: the whole conversation, public and internal, commands and SLA state."""

from __future__ import annotations

import json
from pathlib import Path

from mailgate.storage import history
from tests.test_workflow import agent, mail, make, requester


async def test_show_tells_the_whole_story(tmp_path: Path) -> None:
    h = await make(tmp_path)
    try:
        await h.deliver(mail())
        h.clock.advance(minutes=30)
        await h.deliver(agent("#take\nPlease restart it.\n\nOn Tue, Ann wrote:\n> beeps"))
        await h.deliver(agent("#note\nProbably the PSU.", n=2))
        await h.deliver(requester("Restarted, still beeps."))
        await h.deliver(agent("#resolve\nNew PSU fitted.", n=3))
        await h.deliver(requester("4\nGood", n=2))
        story = await history.load(h.store, "it-1001", h.clock.now)
    finally:
        await h.store.close()
    assert story is not None
    t = story["ticket"]
    assert (t["status"], t["assignee"], t["rating"]) == ("resolved", "alice@example.com", 4)
    assert {c["target"]: c["state"] for c in story["sla"]} == {
        "first_response": "met", "resolution": "met", "next_response": "met"}
    kinds = [e["kind"] for e in story["events"]]
    assert kinds[:3] == ["created", "ack_queued", "team_notified"]
    assert {"reply", "note", "assigned", "resolved", "summary_sent", "rated"} <= set(kinds)
    note = next(e for e in story["events"] if e["kind"] == "note")
    assert note["visibility"] == "internal"
    assert note["message"]["text"] == "Probably the PSU."
    json.dumps(story)  # --json prints it as it is

    text = "\n".join(history.lines(story))
    assert "status resolved   priority normal   assignee alice@example.com" in text
    assert "rating     4/5  \"Good\"" in text
    assert "first_response  met" in text
    assert "reply  alice@example.com  (public)  [verified]" in text
    assert "commands: #take" in text
    assert "  | Please restart it." in text and "> beeps" not in text
    assert "note  alice@example.com  (internal)" in text
    assert "summary_sent  (public)  -> ann@example.com (queued)" in text


async def test_unknown_ticket(tmp_path: Path) -> None:
    h = await make(tmp_path)
    try:
        assert await history.load(h.store, "IT-9999", h.clock.now) is None
    finally:
        await h.store.close()
