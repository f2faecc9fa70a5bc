"""Text from mail never reaches the admin's terminal as control characters.

A hostile mail goes through the real pipeline into a real database; then every human
CLI view of it (tickets, show, status, quarantine list/show, report, check's problems)
must show its ESC, BEL, NUL, CR, C1 and bidi characters as visible escapes, while --json
gives them back exactly.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgate.cli import main as cli
from mailgate.core import terminal
from mailgate.core.model import Origin
from mailgate.core.terminal import visible, visible_lines
from tests.factories import EXAMPLE_DIRECTORY, harness
from tests.harness import database, database_table, on_postgresql, query

HOSTILE = "\x1b[2J\x07\x00\r\u202e\x9b"  # clear screen, bell, NUL, CR, RLO, C1 CSI
RAW = ("\x1b", "\x07", "\x00", "\r", "\u202e", "\x9b")
SHOWN = ("\\x1b[2J", "\\x07", "\\x00", "\\x0d", "\\u202e", "\\x9b")
if on_postgresql():  # its text cannot hold NUL: the store keeps U+FFFD (test_postgres_store)
    HOSTILE = HOSTILE.replace("\x00", "")
    RAW = tuple(c for c in RAW if c != "\x00")
    SHOWN = tuple(c for c in SHOWN if c != "\\x00")


# --- the pure function ---------------------------------------------------------------------

def test_visible_escapes_controls_c1_and_bidi() -> None:
    assert visible(HOSTILE) == "".join(SHOWN)
    assert visible("a\nb\tc\x7f") == "a\\x0ab\\x09c\\x7f"
    for char in ("\u202a", "\u202d", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c",
                 "\u200b", "\ufeff", "\u2028", "\U000e0041", "\udcff"):
        assert "\\" in visible(char) and char not in visible(char), repr(char)


def test_visible_keeps_ordinary_text() -> None:
    for text in ("Grüße aus Köln", "日本語の件名", "שלום", "مرحبا", "emoji 👨‍👩‍👧 ok",
                 "C:\\Users\\ann", "Ünïcödé \u2013 \u201cquotes\u201d \u2026"):
        assert visible(text) == text


def test_visible_keeps_tabs_only_when_asked() -> None:
    assert visible("a\tb", tab=True) == "a\tb"
    assert visible("a\tb") == "a\\x09b"


def test_printable_text_has_nothing_visible_would_escape() -> None:
    """visible() returns str.isprintable() text as it is, without the regex module: sound
    only if no character Python calls printable is one the pattern escapes."""
    printable = "".join(c for c in map(chr, range(0x110000)) if c.isprintable())
    assert terminal._unsafe(terminal._UNSAFE).findall(printable) == []
    assert terminal._unsafe(terminal._UNSAFE_KEEP_TAB).findall(printable) == []


def test_visible_lines_keeps_line_breaks_not_a_lone_cr() -> None:
    assert visible_lines("one\r\ntwo\n\tthree\rfour") == "one\ntwo\n\tthree\\x0dfour"


# --- the CLI on a real database ------------------------------------------------------------

def _encoded(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


def hostile_mail() -> bytes:
    """Control characters in the subject, the sender's name, the body and a file name."""
    filename = "".join(f"%{b:02X}" for b in f"invoice{HOSTILE}fdp.exe".encode())
    body = f"Line one {HOSTILE} end\r\n\tindented\r\nlast".encode()
    return (f"From: {_encoded('Ann ' + HOSTILE)} <ann@example.com>\r\n"
            f"To: it-help@example.com\r\nSubject: {_encoded('Help ' + HOSTILE + ' now')}\r\n"
            "Message-ID: <hostile@example.com>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + body + (
            "\r\n--XX\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Disposition: attachment; filename*=utf-8''{filename}\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--XX--\r\n").encode()


SUBJECT = f"Help {HOSTILE} now"
NAME = f"Ann {HOSTILE}"
BODY = f"Line one {HOSTILE} end\n\tindented\nlast"
REASON = f"no usable sender {HOSTILE}"
FILENAME = f"invoice{HOSTILE}fdp.exe"


@pytest.fixture
def hostile_db(tmp_path: Path) -> Path:
    """A config whose database holds one hostile ticket, a quarantined message and a
    mailbox error, made by the pipeline and the store."""
    async def build() -> None:
        h = await harness(tmp_path)
        try:
            outcome = await h.deliver(hostile_mail())
            assert outcome.tickets == ("IT-1001",), outcome
            # The parser may tidy some away (NUL, CR in headers, file names); put each one
            # back, so the views are tested against all of them whatever parse keeps.
            async with h.store.transaction() as tx:
                await tx.execute("UPDATE tickets SET subject = ?, requester_name = ?",
                                 (SUBJECT, NAME))
                await tx.execute("UPDATE messages SET text = ?, body = ?", (BODY, BODY))
                await tx.execute("UPDATE attachments SET filename = ?", (FILENAME,))
                await tx.quarantine(b"From: x\r\n\r\nbody " + HOSTILE.encode() + b"\r\n",
                                    Origin("imap:it"), REASON, None, datetime.now(UTC))
                await tx.execute("INSERT INTO mailboxes (name, updated_at, state, last_error) "
                                 "VALUES ('it', 0, 'reconnecting', ?)",
                                 (f"server said {HOSTILE}",))
        finally:
            await h.store.close()

    asyncio.run(build())
    config = tmp_path / "mailgate.toml"
    config.write_text(f'[state]\ndir = "state"\n[directory]\npath = "{EXAMPLE_DIRECTORY}"\n'
                      f'[outbox]\ndir = "outgoing"\n' + database_table(tmp_path / "state"))
    return config


def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
            *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "want_logging", lambda *a, **k: None)  # leave structlog be
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_shown_not_obeyed(text: str) -> None:
    for char in RAW:
        assert char not in text, (repr(char), text)
    for escape in SHOWN:
        assert escape in text, (escape, text)


def test_tickets_show_status_and_quarantine_escape_what_came_by_mail(
        hostile_db: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = str(hostile_db)
    for args in (["tickets"], ["show", "IT-1001"], ["status"], ["quarantine", "list"],
                 ["quarantine", "show", "1"]):
        code, out, err = run_cli(capsys, monkeypatch, "--config", config, *args)
        assert code == 0, (args, err)
        assert_shown_not_obeyed(out)
        assert not any(char in err for char in RAW), (args, err)

    _, show, _ = run_cli(capsys, monkeypatch, "--config", config, "show", "IT-1001")
    assert "  | \tindented" in show  # a body keeps its tabs and line breaks
    assert "  | last" in show
    assert visible(FILENAME) in show  # the attachment's name
    assert f"Ann {visible(HOSTILE)} <ann@example.com>" in show


def test_json_gives_the_text_back_exactly(
        hostile_db: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = str(hostile_db)
    _, out, _ = run_cli(capsys, monkeypatch, "--config", config, "tickets", "--json")
    assert "\x1b" not in out and "\u202e" not in out  # JSON escapes them itself
    assert json.loads(out)[0]["subject"] == SUBJECT
    _, out, _ = run_cli(capsys, monkeypatch, "--config", config, "show", "IT-1001", "--json")
    story = json.loads(out)
    assert story["ticket"]["requester_name"] == NAME
    assert story["attachments"][0]["filename"] == FILENAME
    assert any((e.get("message") or {}).get("text") == BODY for e in story["events"])
    _, out, _ = run_cli(capsys, monkeypatch, "--config", config, "quarantine", "list",
                        "--json")
    assert json.loads(out)[0]["reason"] == REASON
    _, out, _ = run_cli(capsys, monkeypatch, "--config", config, "status", "--json")
    assert json.loads(out)["mailboxes"][0]["last_error"] == f"server said {HOSTILE}"


def test_report_text_escapes_department_keys_from_the_database(
        hostile_db: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    query(database(hostile_db.parent / "state"), "UPDATE tickets SET department = ?",
          f"<i>x{HOSTILE}")
    for args in (["report"], ["report", "--dependencies"]):
        code, out, err = run_cli(capsys, monkeypatch, "--config", str(hostile_db), *args)
        assert code == 0, err
        assert_shown_not_obeyed(out)
    _, html, _ = run_cli(capsys, monkeypatch, "--config", str(hostile_db), "report", "--html")
    assert "&lt;i&gt;x" in html and "<i>x" not in html  # the page escapes for HTML instead


def test_problem_lines_escape_what_a_file_holds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "mailgate.toml"
    config.write_text('[outbox]\ndir = "out"\n"k\\u001b[2J\\u0007\\u202e" = 1\n')
    code, out, err = run_cli(capsys, monkeypatch, "--config", str(config), "check")
    assert code == 1
    assert "k\\x1b[2J\\x07\\u202e: unknown key" in out
    assert not any(char in out + err for char in RAW)
