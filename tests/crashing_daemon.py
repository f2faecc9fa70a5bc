"""`python -m tests.crashing_daemon POINT --config FILE run`: mailgate, dying like SIGKILL
(exit 137, no cleanup) the first time it reaches POINT, so a crash test can hit a precise
instant such as "the SMTP server said 250 but the outbox row is not yet marked sent".

The crash points are put in from here, around the functions that end just before each
instant: the shipped daemon has no switch that kills it.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from mailgate.cli.main import main
from mailgate.outbound.transport import SmtpConnection
from mailgate.storage.store import Tx

KILLED = 137  # what a shell reports for SIGKILL

# POINT -> (class, method): dying as that method returns is dying at the instant.
POINTS: dict[str, tuple[type, str]] = {
    # The server accepted the mail; the outbox has not recorded it (the connection's
    # thread sends one mail of a run, then tells the sent log).
    "after_send": (SmtpConnection, "_send"),
    # A mailbox batch's last write (its position), inside the transaction, not committed.
    "before_commit": (Tx, "set_mailbox_position"),
}


def die_after(owner: type, name: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    async def then_die(*args: Any, **kwargs: Any) -> None:
        await original(*args, **kwargs)
        os._exit(KILLED)

    @functools.wraps(original)
    def then_die_now(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        os._exit(KILLED)

    setattr(owner, name, then_die if inspect.iscoroutinefunction(original) else then_die_now)


if __name__ == "__main__":
    point, *arguments = sys.argv[1:]
    die_after(*POINTS[point])
    sys.argv = ["mailgate", *arguments]
    raise SystemExit(main())
