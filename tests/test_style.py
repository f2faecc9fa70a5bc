"""The code base stays ruff clean: style is checked with the tests, not after them."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.environment import missing

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists() and shutil.which("ruff") is None:
        missing("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the storage boundary ------------------------------------------------------------------
# SQL, the database drivers and raw connections live in mailgate/storage/ only, so a second
# engine (PostgreSQL) is a change there and nowhere else. Checked on the syntax tree: a
# docstring or a comment that mentions SELECT or sqlite3 is not a violation.

STORAGE = ROOT / "mailgate" / "storage"
DRIVERS = frozenset({"sqlite3", "aiosqlite", "psycopg", "psycopg_pool"})
# Store/Tx and driver methods that run SQL handed to them.
RAW_SQL_CALLS = frozenset({"execute", "executemany", "executescript", "execute_fetchall",
                           "fetch_one", "fetch_all", "read_committed"})
SQL = re.compile(
    r"\bSELECT\b[\s\S]*?\bFROM\s+\w"
    r"|\bINSERT\s+(?:OR\s+[A-Z]+\s+)?INTO\s+\w"
    r"|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\s+\w"
    r"|\bPRAGMA\s+\w"
    r"|\b(?:CREATE|DROP|ALTER)\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b"
    r"|\A\s*(?:BEGIN(?:\s+IMMEDIATE)?|COMMIT|ROLLBACK|SAVEPOINT\s+\w+|RELEASE\s+\w+)\s*;?\s*\Z")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def _text(node: ast.JoinedStr) -> str:
    """An f-string's literal parts, with each {value} as one word."""
    return "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)


def storage_boundary_violations(source: str, name: str) -> list[str]:
    """What in this module belongs in mailgate/storage/: SQL statements in strings, driver
    imports, `.conn`, and calls that run raw SQL; one line each."""
    tree = ast.parse(source, name)
    skip = _docstrings(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        what = None
        if isinstance(node, ast.Import):
            drivers = [a.name for a in node.names if a.name.split(".")[0] in DRIVERS]
            what = f"imports {drivers[0]}" if drivers else None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in DRIVERS:
            what = f"imports from {node.module}"
        elif isinstance(node, ast.Attribute) and node.attr == "conn":
            what = "touches .conn"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in RAW_SQL_CALLS:
            what = f"runs SQL with .{node.func.attr}()"
        elif isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)
            what = "holds SQL" if SQL.search(_text(node)) else None
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in skip and SQL.search(node.value):
            what = "holds SQL"
        if what:
            found.append((node.lineno, what))
    return [f"{name}:{line}: {what}" for line, what in sorted(found)]


def test_the_checker_finds_each_kind_of_violation_and_ignores_prose() -> None:
    bad = '''
import sqlite3
from aiosqlite import connect
async def f(store, tx, ref):
    await store.conn.execute("x")
    await tx.fetch_one(f"SELECT id FROM tickets WHERE ref = {ref}")
    await tx.execute("UPDATE quarantine SET status = 'dropped' WHERE id = ?", (1,))
    return "DELETE FROM outbox"
'''
    kinds = [line.split(": ", 1)[1] for line in storage_boundary_violations(bad, "bad.py")]
    assert sorted(kinds) == sorted([
        "imports sqlite3", "imports from aiosqlite", "touches .conn", "runs SQL with .execute()",
        "runs SQL with .fetch_one()", "holds SQL", "runs SQL with .execute()", "holds SQL",
        "holds SQL"])
    prose = '''
"""Reads the SELECT ... FROM tickets answer; sqlite3 is storage's business."""
# UPDATE tickets SET nothing: a comment
def folder():
    """SELECT failed: the folder does not exist."""
    return "select the folder from the list; the update set is empty"
'''
    assert storage_boundary_violations(prose, "prose.py") == []


def test_no_sql_drivers_or_connections_outside_storage() -> None:
    found = []
    for path in sorted((ROOT / "mailgate").rglob("*.py")):
        if STORAGE in path.parents:
            continue
        found += storage_boundary_violations(path.read_text(), str(path.relative_to(ROOT)))
    assert found == [], "belongs in mailgate/storage/:\n" + "\n".join(found)


# --- database errors are read when they are caught -----------------------------------------
# storage/errors.py's tuples grow when an engine whose driver is imported late (PostgreSQL)
# registers its classes; a module that bound them by `from ... import` keeps SQLite's only.

GROWING = frozenset({"TEMPORARY", "STORE_ERRORS"})


def frozen_error_tuples(source: str, name: str) -> list[str]:
    """Where this module imports storage.errors' growing tuples by name, one line each."""
    return [f"{name}:{node.lineno}: imports {alias.name} by name"
            for node in ast.walk(ast.parse(source, name))
            if isinstance(node, ast.ImportFrom) and node.module == "mailgate.storage.errors"
            for alias in node.names if alias.name in GROWING]


def test_the_checker_finds_error_tuples_imported_by_name() -> None:
    bad = ("from mailgate.storage.errors import STORE_ERRORS, register\n"
           "def f():\n    from mailgate.storage.errors import TEMPORARY\n")
    assert frozen_error_tuples(bad, "bad.py") == [
        "bad.py:1: imports STORE_ERRORS by name", "bad.py:3: imports TEMPORARY by name"]
    assert frozen_error_tuples("from mailgate.storage import errors as store_errors\n"
                               "from mailgate.storage.errors import register\n", "ok.py") == []


def test_database_error_tuples_are_read_through_their_module() -> None:
    found = []
    for folder in ("mailgate", "tests", "bench", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += frozen_error_tuples(path.read_text(), str(path.relative_to(ROOT)))
    assert found == [], ("name them as store_errors.TEMPORARY (storage/errors.py):\n"
                         + "\n".join(found))
