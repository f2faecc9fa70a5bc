"""A private PostgreSQL for tests, like tests/mailservers.py runs Dovecot: initdb into a
temporary directory, the server on 127.0.0.1 and a free port, its unix socket in that
directory, trust authentication (nothing but this machine's loopback can reach it).

The server runs as the `postgres` system user when the tests run as root (PostgreSQL
refuses to run as root), else as ourselves. Each test that wants a database asks for a
fresh, empty one: `create_database()` returns its postgresql:// URL.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.mailservers import free_port

# Debian and Ubuntu install each major version side by side; the newest one wins.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
SUPERUSER = "postgres"  # the role initdb creates; trust auth, so no password
# What the postmaster hears for each of pg_ctl's shutdown modes.
SHUTDOWN_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT,
                    "immediate": signal.SIGQUIT}


def find_postgres() -> Path | None:
    """The directory holding initdb and postgres, or None when PostgreSQL is not installed."""
    versions = sorted((p for p in DEBIAN_ROOT.glob("*/bin") if _has_server(p)),
                      key=lambda p: _version_key(p.parent.name), reverse=True)
    if versions:
        return versions[0]
    found = shutil.which("postgres")
    if found and _has_server(Path(found).parent):
        return Path(found).parent
    return None


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres"))


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def unusable_postgres() -> str | None:
    """None when a private PostgreSQL can run here, else the reason in one line."""
    if find_postgres() is None:
        return ("PostgreSQL is not installed (apt-get install postgresql, or run "
                "`python3 scripts/dev.py test` as root to install it)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return (f"running as root, and there is no {SERVER_USER!r} user to run "
                    "PostgreSQL as (it refuses root; the postgresql package creates it)")
    return None


@dataclass(frozen=True)
class _Identity:
    """Who the server runs as: `user` is None when that is ourselves."""

    user: str | None
    uid: int
    gid: int


def _identity() -> _Identity:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER)
        return _Identity(SERVER_USER, entry.pw_uid, entry.pw_gid)
    return _Identity(None, os.geteuid(), os.getegid())


class PostgresServer:
    """A throw-away PostgreSQL cluster; databases are created while it runs."""

    def __init__(self, bindir: Path, durable: bool = False,
                 survives_kill: bool = False) -> None:
        self.bindir = bindir
        # A test server loses nothing it needs in a crash and skips the disk flushes; a
        # benchmark's must flush as SQLite does with synchronous=FULL (bench/rig.py).
        self.durable = durable
        # A server the test kills keeps every commit it acknowledged (synchronous_commit
        # on: the WAL reaches the kernel before the answer; the kernel outlives the kill,
        # so fsync may stay off). With it off, a kill loses the last commits a client was
        # told of -- a sent mail's mark, a ticket already acknowledged.
        self.survives_kill = survives_kill
        self.root = Path(tempfile.mkdtemp(prefix="mailgate-postgres-"))
        self.identity = _identity()
        os.chown(self.root, self.identity.uid, self.identity.gid)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._names = itertools.count(1)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def _run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              timeout=timeout, env=self._env(), user=self.identity.user,
                              group=self.identity.user and self.identity.gid)

    def _env(self) -> dict[str, str]:
        # Nothing from the caller's PG* settings: the tools must talk to this server only.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return {**env, "LC_ALL": "C.UTF-8", "TZ": "UTC"}

    def start(self, timeout: float = 30.0) -> None:
        """Create the cluster (initdb) and start the server on it."""
        no_sync = () if self.durable else ("--no-sync",)
        done = self._run(self.bindir / "initdb", "-D", self.data_dir, "-U", SUPERUSER,
                         "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", *no_sync)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        self._launch(timeout)

    def _launch(self, timeout: float) -> None:
        """The postmaster on the existing cluster, same port and socket directory: a
        client's URL stays valid across a restart. In a session of its own, so kill()
        reaches every server process and nothing else."""
        no_flush = () if self.durable else (
            "-c", "fsync=off", "-c", "full_page_writes=off",
            "-c", f"synchronous_commit={'on' if self.survives_kill else 'off'}")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data_dir),
                 "-p", str(self.port), "-c", f"listen_addresses={self.host}",
                 "-c", f"unix_socket_directories={self.socket_dir}",
                 *no_flush, "-c", "max_connections=200"],
                stdout=subprocess.DEVNULL, stderr=log, env=self._env(),
                user=self.identity.user, group=self.identity.user and self.identity.gid,
                start_new_session=True)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            ready = self._run(self.bindir / "pg_isready", "-q", "-h", self.host,
                              "-p", str(self.port), "-U", SUPERUSER, timeout=10)
            if ready.returncode == 0:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start\n{self.log_tail()}")
            time.sleep(0.1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its postgresql:// URL."""
        name = f"test_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\'')
        return self.url(name)

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement as the superuser with psql; its unaligned output."""
        done = self._run(self.bindir / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-d", self.url(database), "-c", statement, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"psql {statement!r} failed: {done.stderr.strip()}")
        return done.stdout

    def stop(self, mode: str = "fast") -> None:
        """Shut the server down as `pg_ctl stop -m MODE` does (smart, fast, immediate):
        fast ends every session and checkpoints; immediate quits without a checkpoint
        (the next start recovers from the WAL)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(SHUTDOWN_SIGNALS[mode])
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self, mode: str = "fast", down_for: float = 0.0,
                timeout: float = 60.0) -> None:
        """`pg_ctl restart -m MODE`, the server away for DOWN_FOR seconds in between (an
        upgrade, a failover): same port, same data, every session cut off."""
        self.stop(mode)
        time.sleep(down_for)
        self._launch(timeout)

    def kill(self) -> None:
        """A crash: SIGKILL to the postmaster, then to what is left of the server (its
        backends would notice the postmaster gone and quit by themselves, a little later):
        no shutdown checkpoint, so the next start_again() runs crash recovery."""
        assert self.process is not None and self.process.poll() is None
        self.process.kill()
        self.process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its session: every backend
        self._wait_gone(self.process.pid)
        self.process = None

    def start_again(self, timeout: float = 60.0) -> None:
        """Start the stopped or killed server on its data (after kill(): crash recovery)."""
        assert self.process is None
        self._launch(timeout)

    def _wait_gone(self, session: int, timeout: float = 20.0) -> None:
        """Until no process of the server's session is left (a backend can linger in
        exiting, holding the shared memory the next postmaster checks for)."""
        deadline = time.monotonic() + timeout
        while _live_in_session(session):
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL processes outlived SIGKILL")
            time.sleep(0.05)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _live_in_session(session: int) -> bool:
    """Whether a process of this session is still running (zombies are not: they hold
    no memory, and an init that does not reap would keep them for ever)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid pgrp session ...: comm may hold blanks and parentheses
        state, _ppid, _pgrp, sid = stat.rsplit(")", 1)[1].split()[:4]
        if int(sid) == session and state not in ("Z", "X"):
            return True
    return False
