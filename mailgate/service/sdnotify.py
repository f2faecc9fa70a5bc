"""sd_notify without a dependency: one datagram to $NOTIFY_SOCKET, if systemd gave one.

The protocol is described in sd_notify(3): newline-separated KEY=VALUE lines such as
READY=1, STATUS=..., WATCHDOG=1, RELOADING=1 and STOPPING=1.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


def sd_notify(*lines: str) -> bool:
    """Send LINES to the service manager; False when there is none or it did not listen."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Called from the event loop: a full receive queue must drop a status line,
            # never stall intake (or the watchdog ping that proves the loop is alive).
            sock.setblocking(False)
            sock.sendto("\n".join(lines).encode(), path)
    except OSError:
        return False
    return True


def reloading() -> tuple[str, str]:
    """RELOADING=1 with the CLOCK_MONOTONIC timestamp systemd requires next to it."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return "RELOADING=1", f"MONOTONIC_USEC={usec}"


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None if not asked.

    $WATCHDOG_PID names the process systemd expects the pings from; when it is set to
    another process (e.g. inherited by a child), the watchdog is not ours to feed.
    """
    env = os.environ if env is None else env
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None
