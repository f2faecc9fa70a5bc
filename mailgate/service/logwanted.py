"""The log level the command line asked for, applied when logging is first needed.

structlog (and the asyncio it imports) is about a third of a CLI command's start-up.
`tickets`, `show` and `report` never log, so the command line does not import it: it
records the level here, and service.log configures itself with it on import, before any
logger has been used. A command that logs gets exactly what it would have had.
"""

from __future__ import annotations

import sys

_wanted: str | None = None


def want_logging(level: str) -> None:
    """Log at level from now on, or as soon as logging is imported."""
    global _wanted
    _wanted = level
    if (log := sys.modules.get("mailgate.service.log")) is not None:
        log.setup_logging(level)


def wanted() -> str | None:
    return _wanted
