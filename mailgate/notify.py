"""sd_notify without a dependency: one datagram to $NOTIFY_SOCKET, if systemd gave one."""

from __future__ import annotations

import os
import socket


def sd_notify(*lines: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall("\n".join(lines).encode())
    except OSError:
        return False
    return True
