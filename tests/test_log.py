"""Log lines carry their syslog priority when stderr is the journal's stream."""

from __future__ import annotations

import io
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from mailgate.core.replykey import KeyRing, keyed_message_id
from mailgate.service.log import get_logger, setup_logging


def lines_logged(stream: io.TextIOBase, path: Path) -> list[str]:
    log = get_logger("test")
    log.info("hello", n=1)
    log.warning("careful")
    log.error("broken", error="disk full")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("crashed")
    log.debug("quiet")
    stream.flush()
    return path.read_text().splitlines()


@pytest.fixture(autouse=True)
def _reset() -> None:
    yield
    structlog.reset_defaults()


def test_on_the_journal_stream_each_line_has_its_priority(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal"
    with path.open("w") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        setup_logging("info", stream=stream)
        lines = lines_logged(stream, path)
    assert [line[:3] for line in lines] == ["<6>", "<4>", "<3>", "<3>"]  # no debug line
    assert json.loads(lines[3][3:])["event"] == "crashed"  # one line, traceback inside
    assert "Traceback" in json.loads(lines[3][3:])["exception"]


def test_elsewhere_lines_are_plain_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # someone else's journal stream
    path = tmp_path / "file.log"
    with path.open("w") as stream:
        setup_logging("info", stream=stream)
        lines = lines_logged(stream, path)
    assert all(line.startswith("{") for line in lines)
    assert json.loads(lines[1])["level"] == "warning"


def test_the_console_shows_control_characters_from_mail_as_escapes(tmp_path: Path) -> None:
    path = tmp_path / "console"
    with path.open("w") as stream:
        setup_logging("info", json=False, stream=stream)
        get_logger("test").info("message.duplicate", message_id="<a\x1b[2J\u202eb@x>")
    text = path.read_text()
    assert "\x1b[2J" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text and "\\u202e" in text


@pytest.mark.parametrize("as_json", [True, False])
def test_no_reply_key_reaches_the_log(tmp_path: Path, as_json: bool) -> None:
    """Our Message-ID is its recipient's reply key: with it in In-Reply-To, whoever
    reads the log could write as her. The log keeps everything but the MAC."""
    ring = KeyRing((("t1", b"test secret"),))
    key = keyed_message_id(ring, ["IT-1001"], "alice@example.com", "example.com",
                           datetime(2026, 11, 24, tzinfo=UTC))
    mac = key.split(".")[4]
    path = tmp_path / "log"
    with path.open("w") as stream:
        setup_logging("info", json=as_json, stream=stream)
        log = get_logger("test")
        log.info("mail.sent", message_id=key, to=["alice@example.com"])
        log.error("mail.failed", error=f"550 5.7.1 <{key}>: refused", ids=[key])
        log.warning("message.quarantined", message_id=key, reason="our own mail")
        log.info("event", detail={"refs": [key], "by": {"id": key}}, pair=("x", key))
    text = path.read_text()
    assert mac not in text
    assert key.replace(f".{mac}.", ".-.") in text


@pytest.mark.parametrize("as_json", [True, False])
def test_library_warnings_are_lines_like_ours(tmp_path: Path, as_json: bool) -> None:
    """psycopg, asyncio and aiosmtpd log through the standard library: their warnings go
    through the same processors (structured, keys redacted, terminal-safe), once each."""
    key = "<mgk2.t1.g31.IT-1001.abcdefghijklmnopqrst.0123456789abcdef0123456789abcdef@x>"
    path = tmp_path / "log"
    with path.open("w") as stream:
        setup_logging("info", json=as_json, stream=stream)
        setup_logging("info", json=as_json, stream=stream)  # a reload: still one handler
        logging.getLogger("psycopg").warning("error ignored terminating %s \x1b[2J", key)
        logging.getLogger("asyncio").info("below warning: not written")
    text = path.read_text()
    assert text.count("error ignored terminating") == 1
    assert "abcdefghijklmnopqrst" not in text and "below warning" not in text
    assert "\x1b[2J" not in text
    if as_json:
        line = json.loads(text)
        assert (line["logger"], line["level"]) == ("psycopg", "warning")
