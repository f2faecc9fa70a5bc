"""A daemon that cannot start says why in one line and exits at once.

`mailgate run` and `mailgate demo` run as real processes: a port in use, a state directory
that is not one, a second daemon on the same state directory. Each must exit non-zero
within seconds (a leftover thread used to keep the process alive for ever) with one line
on stderr saying what to do, and the admin commands must keep working beside a daemon.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mailgate.config.directory import load_directory
from mailgate.config.settings import load_config
from mailgate.service.startup import ListenError, StartError, daemon_lock
from tests.factories import EXAMPLE_DIRECTORY, ROOT
from tests.harness import database_table
from tests.test_cli import _wait_for_port

MAILGATE = [sys.executable, "-m", "mailgate"]
EXIT_WITHIN = 15.0  # seconds; the failure itself takes well under one


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def write_config(tmp_path: Path, extra: str = "", state: str = "state") -> Path:
    path = tmp_path / "mailgate.toml"
    path.write_text(f'[state]\ndir = "{state}"\n[directory]\npath = "{EXAMPLE_DIRECTORY}"\n'
                    f'[outbox]\ndir = "outgoing"\n{extra}' + database_table(tmp_path / state))
    return path


def start_failure(*args: str, prefix: Sequence[str] = ()) -> str:
    """Run mailgate (after PREFIX, a command that runs it); it must fail fast with one line
    on stderr, which is returned."""
    started = time.monotonic()
    result = subprocess.run([*prefix, *MAILGATE, *args], capture_output=True, text=True,
                            cwd=ROOT, timeout=EXIT_WITHIN)
    assert time.monotonic() - started < EXIT_WITHIN
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_run_with_its_smtp_port_taken(tmp_path: Path, taken_port: int) -> None:
    config = write_config(tmp_path, f'[intake.smtp]\nlisten = "127.0.0.1:{taken_port}"\n')
    line = start_failure("--config", str(config), "run")
    assert line.startswith(f"mailgate: cannot listen on 127.0.0.1:{taken_port}: address "
                           f"already in use")
    assert line.endswith("set [intake.smtp] listen")


def test_run_with_its_metrics_port_taken(tmp_path: Path, taken_port: int) -> None:
    config = write_config(tmp_path, f'[metrics]\nlisten = "127.0.0.1:{taken_port}"\n')
    line = start_failure("--config", str(config), "run")
    assert line.startswith(f"mailgate: cannot serve metrics on 127.0.0.1:{taken_port}: "
                           f"address already in use")
    assert line.endswith("set [metrics] listen")


def test_demo_with_its_port_taken_suggests_another(tmp_path: Path, taken_port: int) -> None:
    line = start_failure("demo", "--dir", str(tmp_path / "demo"), "--port", str(taken_port))
    assert f"cannot listen on 127.0.0.1:{taken_port}: address already in use" in line
    assert "choose another port with --port" in line


def test_state_directory_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    line = start_failure("--config", str(write_config(tmp_path)), "run")
    assert line == (f"mailgate: state directory {tmp_path / 'state'} is not a directory; "
                    f"set [state] dir to a directory mailgate can write")
    (tmp_path / "blocker").write_text("")
    line = start_failure("--config", str(write_config(tmp_path, state="blocker/state")), "run")
    assert f"state directory {tmp_path / 'blocker' / 'state'} is not usable" in line


@pytest.mark.sqlite_only("a damaged SQLite file, a newer PRAGMA user_version")
def test_a_database_that_cannot_be_used(tmp_path: Path) -> None:
    """Store.open stopped halfway on these, with a traceback (and, for the first, its
    database thread left running: a hang)."""
    import sqlite3

    config = str(write_config(tmp_path))
    (tmp_path / "state").mkdir()
    database = tmp_path / "state" / "mailgate.sqlite3"
    database.write_bytes(b"this is not SQLite" * 300)
    line = start_failure("--config", config, "run")
    assert line == (f"mailgate: database {database} cannot be opened: file is not a "
                    f"database; restore it from a backup, or move it away to start with an "
                    f"empty one")
    database.unlink()
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA user_version = 999")
    line = start_failure("--config", config, "run")
    assert line.startswith(f"mailgate: database {database} has schema 999, newer than this "
                           f"mailgate")


def without_root_overrides() -> list[str]:
    """A command prefix under which root, like anyone, obeys a directory's modes: its
    capabilities to override them are dropped (CI runs as root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")  # util-linux, on every Debian
    assert setpriv, "running as root and setpriv (util-linux) is missing"
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def test_state_directory_not_writable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o500)
    try:
        line = start_failure("--config", str(write_config(tmp_path)), "run",
                             prefix=without_root_overrides())
    finally:
        state.chmod(0o700)
    assert f"state directory {state} is not usable: permission denied" in line


def test_one_daemon_per_state_directory_admin_commands_still_work(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    demo = subprocess.Popen([*MAILGATE, "demo", "--dir", str(folder), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        port = _wait_for_port(demo)
        config = write_config(tmp_path, state=str(folder / "state"))
        line = start_failure("--config", str(config), "run")
        assert line == (f"mailgate: another mailgate (PID {demo.pid}) is already running on "
                        f"{folder / 'state'}; stop it first (systemctl stop mailgate), or "
                        f"give this one its own [state] dir")
        line = start_failure("demo", "--dir", str(folder), "--port", "0")
        assert f"(PID {demo.pid}) is already running" in line and "--dir" in line

        # A hostile subject never reaches the demo's own console raw.
        sent = subprocess.run([*MAILGATE, "send", "--server", f"127.0.0.1:{port}",
                               "--subject", "Printer \x1b[2J\x07 jammed"],
                              capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert sent.returncode == 0, sent.stderr
        _wait_for(lambda: list((folder / "outgoing").glob("*-ack.eml")))

        demo_config = str(folder / "mailgate.toml")
        for args in (["status"], ["tickets"], ["show", "IT-1001"],
                     ["backup", str(tmp_path / "copy.sqlite3")]):
            result = subprocess.run([*MAILGATE, "--config", demo_config, *args],
                                    capture_output=True, text=True, cwd=ROOT, timeout=30)
            assert result.returncode == 0, (args, result.stderr)
    finally:
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=30)
    assert demo.returncode == 0
    assert "Printer" in out and "\x1b" not in out and "\x07" not in out
    with daemon_lock(folder / "state"):  # released when the daemon ended
        pass


def _wait_for(found: object, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not found():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


# --- in-process: the lock, and a failed start that leaves nothing behind -----------------

def test_the_lock_names_its_owner_and_is_released(tmp_path: Path) -> None:
    with daemon_lock(tmp_path / "state"):
        assert (tmp_path / "state" / "mailgate.lock").read_text() == f"{os.getpid()}\n"
        with (pytest.raises(StartError, match=rf"another mailgate \(PID {os.getpid()}\)"),
              daemon_lock(tmp_path / "state")):
            pass
    with daemon_lock(tmp_path / "state"):  # free again
        pass


def test_a_failed_start_stops_its_tasks_and_threads(tmp_path: Path, taken_port: int) -> None:
    """The database's worker thread (not a daemon thread) kept the process alive."""
    from mailgate.service.daemon import Daemon

    config = load_config(write_config(
        tmp_path, f'[intake.smtp]\nlisten = "127.0.0.1:{taken_port}"\n'))
    before = threading.active_count()

    async def start() -> Daemon:
        daemon = Daemon(config, load_directory(EXAMPLE_DIRECTORY))
        with pytest.raises(ListenError) as failed:
            await daemon.start()
        assert failed.value.setting == "[intake.smtp] listen"
        assert not [t for t in daemon._tasks if not t.done()]
        return daemon

    asyncio.run(start())
    _wait_for(lambda: threading.active_count() <= before, seconds=5)
