"""Progress lines for long CLI operations: shown on a terminal, silent otherwise."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailgate.cli.database import _backup
from mailgate.cli.people import import_people
from mailgate.cli.progress import Progress
from mailgate.storage.store import Store
from tests.factories import ROOT
from tests.harness import database, database_table, on_postgresql


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_unless_the_stream_is_a_terminal() -> None:
    quiet = io.StringIO()
    progress = Progress("backup", quiet)
    assert not progress.enabled
    progress.fraction(1, 2)
    progress.step("checking")
    progress.done()
    assert quiet.getvalue() == ""


def test_one_updating_line_on_a_terminal() -> None:
    tty = Terminal()
    progress = Progress("backup", tty)
    assert progress.enabled
    for done in (0, 50, 50, 100):  # (pages done, pages in all) per backup step
        progress.fraction(done, 100)
    progress.done()
    assert tty.getvalue() == "\rbackup: 0 %\rbackup: 50 %\rbackup: 100 %\n"
    progress.step("done")  # a shorter text blanks what is left of the longer one
    assert tty.getvalue().endswith("\rbackup: done ")


@pytest.mark.sqlite_only("SQLite's online backup copies the file in steps")
async def test_backup_on_a_terminal_copies_in_steps_and_shows_them(tmp_path: Path) -> None:
    store = await Store.open(database(tmp_path / "state"))
    try:
        await store.conn.execute("CREATE TABLE filler (data BLOB)")
        await store.conn.executemany("INSERT INTO filler VALUES (randomblob(4000))",
                                     [()] * 1000)
        await store.conn.commit()
        calls: list[dict[str, Any]] = []
        original = store.conn.backup

        async def spy(target: Any, **kwargs: Any) -> None:
            calls.append(kwargs)
            await original(target, **kwargs)

        store.conn.backup = spy  # type: ignore[method-assign]
        tty = Terminal()
        await _backup(store, tmp_path / "copy.sqlite3", Progress("backup", tty))
        assert calls[0]["pages"] >= 64 and calls[0]["progress"] is not None
        shown = tty.getvalue()
        assert shown.startswith("\rbackup: 0 %") and shown.endswith("\rbackup: 100 %\n")
        assert shown.count("\r") > 5  # in steps, not one jump
        copy = sqlite3.connect(tmp_path / "copy.sqlite3")
        assert copy.execute("SELECT COUNT(*) FROM filler").fetchone() == (1000,)
        copy.close()

        calls.clear()  # not a terminal: one step, no callback, as before
        await _backup(store, tmp_path / "quiet.sqlite3", Progress("backup", io.StringIO()))
        assert calls == [{}]
    finally:
        await store.close()


def test_directory_import_tells_its_steps(tmp_path: Path) -> None:
    (tmp_path / "hr.csv").write_text("email\na@example.com\nb@example.com\n")
    steps: list[str] = []
    import_people(tmp_path / "hr.csv", tmp_path / "people.toml", None, progress=steps.append)
    assert steps == ["reading hr.csv (1/4)", "checking 2 people (2/4)",
                     "writing people.toml (3/4)", "done: 2 people (4/4)"]


def test_the_cli_stays_quiet_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    config = tmp_path / "mailgate.toml"
    config.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n[directory]\npath = '
                      f'"{ROOT / "config" / "directory.example.toml"}"\n[outbox]\n'
                      f'dir = "{tmp_path / "out"}"\n' + database_table(tmp_path / "state"))
    import asyncio

    async def create() -> None:
        await (await Store.open(database(tmp_path / "state"))).close()

    asyncio.run(create())

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mailgate", "--config", str(config),
                               *args], capture_output=True, text=True, timeout=60, cwd=ROOT)

    if not on_postgresql():  # there pg_dump copies the database (test_cli)
        backup = run("backup", str(tmp_path / "copy.sqlite3"))
        assert backup.returncode == 0 and backup.stderr == ""
        assert backup.stdout.startswith("backed up ")
    (tmp_path / "hr.csv").write_text("email\na@example.com\n")
    imported = run("directory", "import", str(tmp_path / "hr.csv"), "--output",
                   str(tmp_path / "people.toml"))
    assert imported.returncode == 0 and imported.stderr == ""
    assert imported.stdout == f"{tmp_path / 'people.toml'}: wrote 1 people\n"
