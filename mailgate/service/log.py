"""structlog setup: JSON lines for journald and files, readable colours on a terminal.

Under systemd, stderr goes to the journal as a stream; systemd reads a `<N>` syslog
priority prefix on each line (SyslogLevelPrefix=, on by default), so every line carries its
own and `journalctl -u mailgate -p warning` shows just warnings and errors. The prefix is
added only when stderr really is that journal stream ($JOURNAL_STREAM names its device and
inode), never on a terminal or into a file.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from mailgate.core.replykey import redacted
from mailgate.core.terminal import visible
from mailgate.service import logwanted

# syslog priorities (RFC 5424) for structlog's method names
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3,
            "critical": 2, "fatal": 2}


def setup_logging(level: str = "info", json: bool | None = None,
                  stream: TextIO | None = None) -> None:
    """Log to stream (default: whatever sys.stderr is when a line is written): JSON lines
    unless it is a terminal."""
    target: TextIO = stream or _CurrentStderr()  # type: ignore[assignment]
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer = (structlog.processors.JSONRenderer() if json
                else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    # JSON escapes control characters itself; the console renderer prints values raw, and
    # a Message-ID or subject from mail may carry ESC or bidi overrides.
    safe = [_no_reply_keys] if json else [_no_reply_keys, _visible_values]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *safe,
            renderer,
            *([_journal_priority] if is_journal_stream(stream) else []),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=target),
        cache_logger_on_first_use=True,
    )
    _route_standard_logging()


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)


def is_journal_stream(stream: TextIO) -> bool:
    """stream is the journal's stdout/stderr stream ($JOURNAL_STREAM is "device:inode")."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(stream.fileno())
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (ValueError, OSError, AttributeError):
        return False


def _route_standard_logging() -> None:
    """Warnings and errors that libraries log through the standard library (psycopg,
    asyncio, aiosmtpd) become lines like mailgate's own. Unhandled, Python printed them as
    bare text amid the JSON lines, past the reply-key redaction, the terminal escaping and
    the journal priority."""
    root = logging.getLogger()
    if not any(isinstance(h, _ToStructlog) for h in root.handlers):
        root.addHandler(_ToStructlog(logging.WARNING))


class _ToStructlog(logging.Handler):
    """A standard-library record handed to structlog, named by the library's logger."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = structlog.get_logger(record.name)
            method = getattr(log, record.levelname.lower(), log.error)
            extra = {"exc_info": record.exc_info} if record.exc_info else {}
            method(record.getMessage(), logger=record.name, **extra)
        except Exception:
            self.handleError(record)


def _journal_priority(logger: Any, method: str, line: str | MutableMapping[str, Any]) -> str:
    return f"<{PRIORITY.get(method, 6)}>{line}"


class _CurrentStderr:
    """sys.stderr as it is at each write: loggers are cached on first use, and a cached
    reference to a replaced stderr (a test's capture, a daemon's redirect) would write to a
    closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _no_reply_keys(logger: Any, method: str,
                   event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Our Message-IDs are their recipients' reply keys (replykey.py): one in a log line
    (a mail sent, our own mail come back, a server's answer quoting it) would let whoever
    reads the log write as that person. Their MACs are left out, wherever they are."""
    for key, value in event.items():
        event[key] = _without_keys(value)
    return event


def _without_keys(value: Any, depth: int = 4) -> Any:
    """VALUE with the MAC of each reply key in its strings left out, inside lists, tuples
    and dicts too (a detail dict, a list of recipients)."""
    if isinstance(value, str):
        return redacted(value) if "mgk" in value else value
    if depth == 0 or not isinstance(value, list | tuple | dict) or "mgk" not in str(value):
        return value
    if isinstance(value, dict):
        return {k: _without_keys(v, depth - 1) for k, v in value.items()}
    return [_without_keys(v, depth - 1) for v in value]


def _visible_values(logger: Any, method: str,
                    event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and key != "exception":
            event[key] = visible(value)
    return event


if (_level := logwanted.wanted()) is not None:  # the command line asked before this import
    setup_logging(_level)
