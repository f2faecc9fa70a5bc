"""Why the daemon could not start, in one line; and one daemon per state directory.

A start failure is the admin's to fix (a port in use, a state directory that is a file, a
second daemon), so it is said in one line with what to do, and the process exits at once
with status 1: under systemd that is a failed start in the journal, not a start timeout
after a traceback.

The lock is `<state>/mailgate.lock`, taken with flock(2) by `mailgate run` and `mailgate
demo` and held while the daemon lives; the kernel drops it when the process ends, however
it ends, so a stale lock cannot outlive a crash. The file holds the owner's PID for the
message. The admin commands (status, tickets, show, backup...) never take it: they read
the database beside a running daemon by design.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailgate.errors import StartError  # here too: its users import it from startup
from mailgate.storage import errors as store_errors
from mailgate.storage.database_file import schema_version_of
from mailgate.storage.schema import MIGRATIONS

LOCK_NAME = "mailgate.lock"


class ListenError(StartError):
    """A socket the daemon needs could not be bound."""

    def __init__(self, host: str, port: int, error: OSError, setting: str,
                 what: str = "listen") -> None:
        self.host, self.port, self.setting = host, port, setting
        self.reason = bind_reason(error, port)
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"cannot {what} on {where}: {self.reason}; set {setting}")


def bind_reason(error: OSError, port: int) -> str:
    """What a failed bind means, in the admin's words rather than errno's."""
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name ({error.strerror})"
    if error.errno == errno.EADDRINUSE:
        return "address already in use (is another mailgate, or another program, on it?)"
    if error.errno == errno.EACCES:
        return ("permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                if 0 < port < 1024 else "permission denied")
    if error.errno == errno.EADDRNOTAVAIL:
        return "no such address on this machine"
    return os.strerror(error.errno).lower() if error.errno else str(error)


@contextmanager
def daemon_lock(state_dir: Path, hint: str = "stop it first (systemctl stop mailgate), "
                "or give this one its own [state] dir") -> Iterator[None]:
    """Hold `<state>/mailgate.lock` for the daemon's life; StartError if another process
    holds it (naming its PID and, with hint, what to do) or the directory is unusable."""
    fd = _open_lock(state_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StartError(f"another mailgate (PID {_owner(fd)}) is already running on "
                             f"{state_dir}; {hint}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race)


def check_database(path: Path) -> None:
    """StartError if the database exists but cannot be used: SQLite cannot read it (a
    stray file, a damaged copy), or a newer mailgate wrote it. Said before the daemon
    opens it, which would stop halfway through with a traceback."""
    if not path.exists():
        return  # the daemon creates it
    try:
        version = schema_version_of(path)
    except store_errors.STORE_ERRORS as exc:
        raise StartError(f"database {path} cannot be opened: {exc}; restore it from a "
                         f"backup, or move it away to start with an empty one") from None
    if version > len(MIGRATIONS):
        raise StartError(f"database {path} has schema {version}, newer than this mailgate "
                         f"({len(MIGRATIONS)}); upgrade mailgate")


def _open_lock(state_dir: Path) -> int:
    fix = "set [state] dir to a directory mailgate can write"
    if state_dir.exists() and not state_dir.is_dir():
        raise StartError(f"state directory {state_dir} is not a directory; {fix}")
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(state_dir, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        # O_NOFOLLOW: a symlink planted in the state directory must not make us truncate
        # (and write our PID into) a file elsewhere.
        return os.open(state_dir / LOCK_NAME,
                       os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise StartError(f"state directory {state_dir} is not usable: {reason}; {fix}") \
            from None


def _owner(fd: int) -> str:
    """The PID the lock holder wrote, or 'unknown' (it may be between truncate and write)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"
