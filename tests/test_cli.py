"""The command line as a user meets it: check, demo, send, tickets, show, status."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.factories import ROOT, harness, mail
from tests.harness import database, database_table, on_postgresql

MAILGATE = [sys.executable, "-m", "mailgate"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MAILGATE, *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def write_config(tmp_path: Path, body: str) -> Path:
    """BODY as the mailgate.toml, with the test engine's [database] table (state/'s)."""
    path = tmp_path / "mailgate.toml"
    path.write_text(body + database_table(tmp_path / "state"))
    return path


GOOD = f"""
[state]
dir = "state"
[directory]
path = "{ROOT / 'config' / 'directory.example.toml'}"
[outbox]
dir = "outgoing"
[[mailbox]]
name = "it"
department = "it"
host = "imap.example.com"
username = "it-help@example.com"
password_env = "MAILGATE_TEST_SECRET"
"""


def test_check_accepts_a_good_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD)
    result = run("--config", str(path), "check", env={"MAILGATE_TEST_SECRET": "s3cret-value"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK (3 departments, 1 mailboxes)" in result.stdout
    assert "s3cret-value" not in result.stdout + result.stderr


def test_check_reports_every_problem_with_file_and_key(tmp_path: Path) -> None:
    bad = GOOD.replace('department = "it"', 'department = "hr"').replace(
        'name = "it"', 'name = "it"\ntls = "sometimes"\npoll_interval = "often"\npassword = "x"')
    path = write_config(tmp_path, bad + '\n[smtp]\nhost = "mail"\nprot = 25\n')
    result = run("--config", str(path), "check")
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    expected = ["mailbox[0].tls", "mailbox[0].poll_interval", "mailbox[0].password",
                "smtp.prot", "mailbox[0].password_env"]
    for key in expected:
        assert any(str(path) in line and key in line for line in lines), (key, lines)
    assert "x" not in [part.strip() for line in lines for part in line.split(":")]


def test_check_names_a_missing_file() -> None:
    result = run("--config", "/nonexistent/mailgate.toml", "check")
    assert result.returncode == 1
    assert "/nonexistent/mailgate.toml: file not found" in result.stdout + result.stderr


def test_demo_send_tickets_show_status(tmp_path: Path) -> None:
    demo = subprocess.Popen([*MAILGATE, "demo", "--dir", str(tmp_path / "demo"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        port = _wait_for_port(demo)
        sent = run("send", "--server", f"127.0.0.1:{port}", "--subject", "Laptop won't boot")
        assert sent.returncode == 0, sent.stderr
        outgoing = tmp_path / "demo" / "outgoing"
        deadline = time.monotonic() + 15
        while not list(outgoing.glob("*-ack.eml")):
            assert time.monotonic() < deadline, "no acknowledgement written"
            time.sleep(0.1)
        config = str(tmp_path / "demo" / "mailgate.toml")
        tickets = run("--config", config, "tickets", "--json")
        assert [t["ref"] for t in json.loads(tickets.stdout)] == ["IT-1001"]
        show = run("--config", config, "show", "IT-1001")
        assert "Laptop won't boot" in show.stdout and "ack_queued" in show.stdout
        status = run("--config", config, "status", "--json")
        assert json.loads(status.stdout)["open_tickets"] == {"it": 1}
        # One daemon leads; it holds its lease until a moment the database names.
        leader, node = json.loads(status.stdout)["leases"]
        assert (leader["name"], leader["live"]) == ("leader", True)
        assert leader["holder"].endswith(str(tmp_path / "demo" / "state"))
        assert (node["name"], node["holder"]) == (f"node:{leader['holder']}", leader["holder"])
        text = run("--config", config, "status").stdout
        assert re.search(r"^leader\s+\S+demo/state\s+\d{4}-", text, re.MULTILINE), text
    finally:
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=30)
    assert demo.returncode == 0
    assert ">>> ack sent to ann@example.com" in out


def _wait_for_port(process: subprocess.Popen) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    for line in process.stdout:
        found = re.search(r"incoming SMTP\s+127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
        if time.monotonic() > deadline:
            break
    pytest.fail("the demo did not print its port")


def test_quarantine_list_show_retry_drop(tmp_path: Path) -> None:
    """An admin finds held mail, reads it, retries it after a fix, and drops what is junk."""
    import asyncio
    from datetime import UTC, datetime

    from mailgate.core.model import Origin
    from mailgate.storage.store import Store
    from tests.factories import mail

    config = write_config(tmp_path, GOOD.replace("imap.example.com", "127.0.0.1"))
    junk = b"this is not an email at all\x00\xff"
    good = mail("Printer on fire", message_id="<held@example.com>")

    async def hold() -> None:
        store = await Store.open(database(tmp_path / "state"))
        async with store.transaction() as tx:  # as if an earlier release had failed on it
            now = datetime.now(UTC)
            await tx.quarantine(junk, Origin("imap:it"), "no usable sender", None, now)
            await tx.quarantine(good, Origin("imap:it"), "internal error: fixed since", None, now)
        await store.close()

    asyncio.run(hold())
    env = {"MAILGATE_TEST_SECRET": "x"}
    listed = json.loads(run("--config", str(config), "quarantine", "list", "--json",
                            env=env).stdout)
    assert [e["reason"] for e in listed] == ["no usable sender", "internal error: fixed since"]
    junk_id, good_id = (e["id"] for e in listed)

    show = run("--config", str(config), "quarantine", "show", str(good_id), env=env)
    assert "Printer on fire" in show.stdout

    retried = run("--config", str(config), "quarantine", "retry", str(good_id), env=env)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "ticket IT-1001" in retried.stdout
    again = run("--config", str(config), "quarantine", "retry", str(junk_id), env=env)
    assert again.returncode == 1 and "quarantined" in again.stdout

    dropped = run("--config", str(config), "quarantine", "drop", str(junk_id), env=env)
    assert dropped.returncode == 0
    held = json.loads(run("--config", str(config), "quarantine", "list", "--json",
                          env=env).stdout)
    assert held == []
    revived = run("--config", str(config), "quarantine", "retry", str(junk_id), env=env)
    assert revived.returncode == 1 and "is dropped; only held entries" in revived.stderr
    unknown = run("--config", str(config), "tickets", "--department", "itt", env=env)
    assert unknown.returncode == 2 and "unknown department (known: it," in unknown.stderr
    report = run("--config", str(config), "report", "--department", "itt", env=env)
    assert report.returncode == 2
    missing = run("--config", str(config), "quarantine", "show", "999", env=env)
    assert missing.returncode == 1 and "no quarantine entry 999" in missing.stderr


SERVICE_CONFIG = GOOD.replace('password_env = "MAILGATE_TEST_SECRET"',
                              'password_credential = "imap-it"') + """
[smtp]
host = "smtp.example.com"
username = "mailgate@example.com"
password_credential = "smtp"
"""


def test_admin_commands_run_outside_the_service_without_its_credentials(
        tmp_path: Path) -> None:
    """As root from a shell (cron, an admin): no $CREDENTIALS_DIRECTORY, as on a real
    install. Only the daemon logs in, so only `run` needs the passwords."""
    path = write_config(tmp_path, SERVICE_CONFIG)
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    # (PostgreSQL is backed up with pg_dump: test_backup_on_postgresql_names_pg_dump)
    backup = [] if on_postgresql() else [["backup", str(tmp_path / "copy.sqlite3")]]
    for args in (["migrate"], ["status"], ["tickets"], ["report"], *backup):
        result = subprocess.run([*MAILGATE, "--config", str(path), *args], capture_output=True,
                                text=True, timeout=60, cwd=ROOT, env=env)
        assert result.returncode == 0, (args, result.stdout + result.stderr)
    checked = subprocess.run([*MAILGATE, "--config", str(path), "check"], capture_output=True,
                             text=True, timeout=60, cwd=ROOT, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "not read from this shell (the service reads them when it starts): " \
        "smtp.password_credential, mailbox[0].password_credential" in checked.stdout
    daemon = subprocess.run([*MAILGATE, "--config", str(path), "run"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env=env)
    assert daemon.returncode != 0
    assert "CREDENTIALS_DIRECTORY is not set" in daemon.stdout + daemon.stderr


def test_backup_on_postgresql_names_pg_dump(tmp_path: Path) -> None:
    """No file to copy: one line that says what to run instead, before connecting."""
    path = tmp_path / "mailgate.toml"
    url = "postgresql://mailgate@db.example.com:5433/mailgate?sslmode=require"
    path.write_text(GOOD + f'[database]\nurl = "{url}"\n')
    target = tmp_path / "nightly copy.dump"
    result = run("--config", str(path), "backup", str(target))
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"pg_dump --format=custom '--file={target}' '{url}'" in result.stderr
    assert not target.exists()


def test_check_reads_systemd_credentials_when_they_are_there(tmp_path: Path) -> None:
    path = write_config(tmp_path, SERVICE_CONFIG)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "smtp").write_text("x")  # imap-it is missing: check must say so
    result = run("--config", str(path), "check", env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert result.returncode == 1
    assert "mailbox[0].password_credential: cannot read" in result.stdout


def test_a_relative_password_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = GOOD.replace('password_env = "MAILGATE_TEST_SECRET"', 'password_file = "it.pw"')
    path = write_config(tmp_path, config)
    (tmp_path / "it.pw").write_text("secret\n")
    result = subprocess.run([*MAILGATE, "--config", str(path), "check"], capture_output=True,
                            text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.sqlite_only("an old schema is made with SQLite's PRAGMA user_version")
def test_an_old_database_gets_a_clear_message_not_a_traceback(tmp_path: Path) -> None:
    import sqlite3

    from mailgate.storage.schema import MIGRATIONS
    path = write_config(tmp_path, GOOD)
    (tmp_path / "state").mkdir()
    db = sqlite3.connect(tmp_path / "state" / "mailgate.sqlite3")
    db.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    db.close()
    for args in (["status"], ["tickets"], ["report"]):
        result = run("--config", str(path), *args)
        assert result.returncode == 1, result.stderr
        assert "schema 1, this mailgate needs" in result.stderr
        assert "run `mailgate migrate`" in result.stderr and "Traceback" not in result.stderr
    backup = run("--config", str(path), "backup", str(tmp_path / "copy.sqlite3"))
    assert backup.returncode == 0, backup.stderr  # an old database can still be saved


@pytest.mark.parametrize(("args", "expected"), [
    (["tickets", "--limit", "99999999999999999999"], "argument --limit: must be from 1 to"),
    (["tickets", "--limit", "-1"], "argument --limit: must be from 1 to"),
    (["tickets", "--limit", "0"], "argument --limit: must be from 1 to"),
    (["tickets", "--limit", "ten"], "argument --limit: expected a whole number, got 'ten'"),
    (["tickets", "--older-than", "99999999999d"], "argument --older-than: '99999999999d' is "
                                                  "longer than 100 years"),
    (["tickets", "--older-than", "36510d"], "argument --older-than: must be longer"),
    (["tickets", "--older-than", "soon"], "argument --older-than: not a duration"),
    (["report", "--since", "0s"], "argument --since: must be longer than 0 and at most"),
    (["report", "--since", "36501d"], "argument --since: must be longer than 0 and at most"),
    (["report", "--since", "1e400d"], "argument --since: not a duration"),
    (["demo", "--port", "99999"], "argument --port: must be from 0 to 65535, got 99999"),
    (["demo", "--port", "-1"], "argument --port: must be from 0 to 65535"),
    (["quarantine", "show", "99999999999999999999"], "argument id: must be from 1 to"),
    (["quarantine", "show", "-3"], "argument id: must be from 1 to"),
    (["send", "--server", "127.0.0.1:70000"], "argument --server: expected HOST:PORT"),
])
def test_numbers_on_the_command_line_are_checked(
        args: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad number is a one-line usage error (exit 2), not a traceback from SQLite or
    datetime arithmetic, and not a silent 'everything' (--limit -1 meant no limit)."""
    from mailgate.cli import main as cli

    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err and "(see mailgate " in err


def test_send_to_nothing_says_so_in_one_line() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = run("send", "--server", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert f"mailgate send: 127.0.0.1:{port}:" in result.stderr


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    """`mailgate show IT-1042 | head -3`: once the reader has gone, no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first line: every write meets a closed pipe
    try:
        done = subprocess.run([*MAILGATE, "version"], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60, cwd=ROOT)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


# What `tickets` and `show` do not need, and a new process would pay for: structlog (with
# the asyncio logging it imports) about a third of their start-up, the mail parser and the
# email package replacements it installs, the reports' arithmetic, SMTP. `show` of plain
# text needs no regex module either (core.terminal imports it for text to escape).
# (Not email.feedparser itself: psycopg_binary's version check reads package metadata.)
_NOT_FOR_VIEWS = ("structlog", "mailgate.service.log", "mailgate.core.mime",
                  "mailgate.core.report", "mailgate.core.dependencies", "smtplib",
                  "mailgate.cli.migrate")


def test_tickets_and_show_start_without_what_they_do_not_use(tmp_path: Path) -> None:
    async def one_ticket() -> None:
        h = await harness(tmp_path)
        try:
            assert (await h.deliver(mail("Printer jams"))).tickets == ("IT-1001",)
        finally:
            await h.store.close()

    asyncio.run(one_ticket())
    directory = ROOT / "config" / "directory.example.toml"
    config = write_config(tmp_path, f'[state]\ndir = "state"\n[directory]\npath = '
                          f'"{directory}"\n[outbox]\ndir = "out"\n')
    code = ("import sys; from mailgate.cli.main import main; status = main(sys.argv[1:]); "
            "print('modules:', *sorted(sys.modules)); sys.exit(status)")
    for command, unwanted in ((["tickets", "--department", "it"], _NOT_FOR_VIEWS),
                              (["show", "IT-1001"], (*_NOT_FOR_VIEWS, "regex"))):
        done = subprocess.run([sys.executable, "-c", code, "--config", str(config), *command],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert "Printer jams" in done.stdout
        loaded = set(done.stdout.rpartition("modules:")[2].split())
        assert "mailgate.storage.store" in loaded  # the list is the one it should be
        assert not {m for m in loaded for u in unwanted
                    if m == u or m.startswith(u + ".")}, command
