"""The command line: run, demo, check, status, tickets, show, report, send, quarantine,
route, directory, backup, migrate, keys, oauth, version."""

# The docstring above is --help's description. This module is the parser and the dispatch;
# each group of commands lives in a module of its own (admin, tickets, reports, database,
# service, directory, keys, people), and everything a person reads goes out through
# output.py.

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import NoReturn

from mailgate import __version__
from mailgate.cli.output import say, say_lines
from mailgate.errors import ConfigError, StartError
from mailgate.service.logwanted import want_logging


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    want_logging(args.log_level)
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not in Python's complaint at exit
        return status
    except ConfigError as exc:
        say_lines(exc.problems, file=sys.stderr)
        return 1
    except StartError as exc:  # one line with what to do; systemd sees a failed start
        say_lines([f"mailgate: {exc}"], file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mailgate show IT-1042 | head`: the reader has what it wanted
        # Python would complain again flushing stdout at exit; point it at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command SIGPIPE ended


def later(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """mailgate.MODULE's command function NAME, imported when that command runs: the
    daemon's start does not wait for what `report`, `backup` or `oauth` import, nor they
    for it."""
    def run(args: argparse.Namespace) -> int:
        command: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(f"mailgate.{module}"), name)
        return command(args)
    return run


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, with where to look: the full usage text is --help's."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mailgate", description=__doc__)
    parser.add_argument("--config", help="mailgate.toml (default: $MAILGATE_CONFIG, "
                        "else /etc/mailgate/mailgate.toml)")
    parser.add_argument("--log-level", default="info", type=str.lower,
                        choices=("debug", "info", "warning", "error"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int],
                help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    check = command("check", later("cli.admin", "cmd_check"),
                    "validate config, directory and templates; exit 1 on problems")
    check.add_argument("--connect", action="store_true", help="also log in to every mailbox "
                       "and the SMTP server and say how it went (no mail is sent)")
    command("run", later("cli.service", "cmd_run"), "run the daemon (systemd runs this)")
    demo = command("demo", later("cli.service", "cmd_demo"),
                   "run everything on localhost, no mail server needed")
    demo.add_argument("--dir", default="mailgate-demo", help="demo folder (default: %(default)s)")
    demo.add_argument("--port", type=port_number, default=2525,
                      help="SMTP port; 0 takes any free one (default: %(default)s)")
    status = command("status", later("cli.admin", "cmd_status"),
                     "mailboxes, outbox, quarantine, open tickets and SLA risk per department")
    status.add_argument("--json", action="store_true")
    tickets = command("tickets", later("cli.tickets", "cmd_tickets"),
                      "list tickets, newest first; filters combine")
    tickets.add_argument("--department", help="department key, e.g. it")
    tickets.add_argument("--status", help="new, open, waiting, resolved, closed; several "
                         "comma-separated, or 'active' for all but resolved and closed")
    tickets.add_argument("--at-risk", action="store_true",
                         help="SLA at risk: a warning fired or at most one business hour left")
    tickets.add_argument("--breached", action="store_true", help="a running SLA clock is "
                         "overdue (with --at-risk: either)")
    tickets.add_argument("--requester", help="address, or @domain for everyone there")
    tickets.add_argument("--older-than", metavar="AGE", type=age, help="came in at least "
                         "AGE ago (wall-clock), e.g. 2d, 4h, 1h30m")
    tickets.add_argument("--limit", type=count(MAX_LIMIT), default=50,
                         help=f"at most this many, 1-{MAX_LIMIT} (default: %(default)s)")
    tickets.add_argument("--json", action="store_true")
    report = command("report", later("cli.reports", "cmd_report"),
                     "figures per department for a period: requests, response and resolution "
                     "times, SLA compliance, backlog, satisfaction")
    report.add_argument("--since", default="30d", metavar="AGE", type=age,
                        help="period ending now, e.g. 7d, 30d (default: %(default)s)")
    report.add_argument("--department", action="append", metavar="KEY",
                        help="only this department (repeatable)")
    report.add_argument("--dependencies", action="store_true",
                        help="which departments send requests to which (the requester's "
                        "department in the directory's people), with the receiving "
                        "department's median first response")
    form = report.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true")
    form.add_argument("--html", action="store_true",
                      help="one self-contained HTML page with a chart per department")
    show = command("show", later("cli.tickets", "cmd_show"), "one ticket and its conversation")
    show.add_argument("ref", help="ticket number, e.g. IT-1042")
    show.add_argument("--json", action="store_true")
    send = command("send", later("cli.tickets", "cmd_send"),
                   "send a test message to an SMTP listener (e.g. the demo)")
    send.add_argument("--server", default="127.0.0.1:2525", type=server,
                      help="HOST:PORT (default: %(default)s)")
    send.add_argument("--from", dest="sender", default="ann@example.com")
    send.add_argument("--to", default="it-help@example.com")
    send.add_argument("--subject", default="Laptop won't boot")
    send.add_argument("--body", default="It only beeps three times. Could someone look at it?")
    quarantine = command("quarantine", later("cli.admin", "cmd_quarantine"),
                         "messages that could not be processed")
    quarantine.add_argument("action", choices=("list", "show", "retry", "drop"))
    quarantine.add_argument("id", nargs="?", type=count(SQLITE_MAX_INT))
    quarantine.add_argument("--json", action="store_true")
    backup = command("backup", later("cli.database", "cmd_backup"),
                     "copy the SQLite database to FILE, safe while mailgate runs (online backup); "
                     "on PostgreSQL, says the pg_dump command")
    backup.add_argument("file", help="where to write the copy")
    backup.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    backup.add_argument("--json", action="store_true")
    migrate = command("migrate", later("cli.database", "cmd_migrate"),
                      "apply pending database schema migrations")
    migrate.add_argument("--check", action="store_true",
                         help="change nothing; exit 1 if migrations are pending")
    migrate.add_argument("--json", action="store_true")
    migrate.add_argument("--to", metavar="URL",  # cli/migrate.py
                         help="copy this SQLite installation into an empty PostgreSQL "
                              "database (postgresql://USER@HOST:PORT/DB)")
    migrate.add_argument("--password-file", metavar="FILE",
                         help="with --to: the PostgreSQL password, read from FILE")
    route = command("route", later("cli.directory", "cmd_route"),
                    "which department, priority and rule a message would get (nothing is stored "
                    "or sent)")
    route.add_argument("--from", dest="sender", required=True, help="sender address")
    route.add_argument("--to", required=True, help="recipients, comma-separated")
    route.add_argument("--cc", help="Cc recipients, comma-separated")
    route.add_argument("--subject", required=True)
    route.add_argument("--body", default="")
    route.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                       help="an extra header such as 'X-Priority: 1' (repeatable)")
    route.add_argument("--json", action="store_true")
    directory = command("directory", later("cli.directory", "cmd_directory"),
                        "import people from an HR export (CSV)")
    directory.add_argument("action", choices=("import",))
    directory.add_argument("file", help="CSV with a header row: email,name,department,"
                           "manager,role")
    directory.add_argument("--output", help="people TOML to write (default: the "
                           "directory's people_file)")
    keys = command("keys", later("cli.keys", "cmd_keys"),
                   "the secret that signs reply keys: status, or rotate it")
    keys.add_argument("action", choices=("status", "rotate"))
    keys.add_argument("--json", action="store_true")
    oauth = command("oauth", later("connect.oauth.login", "cmd_oauth"),
                    "OAuth2 logins: fetch the first refresh token, show what is stored")
    oauth.add_argument("action", choices=("login", "status"))
    oauth.add_argument("name", nargs="?", help="for login: a [[mailbox]] name, or smtp")
    oauth.add_argument("--paste", action="store_true", help="paste an authorization code "
                       "even where the provider offers the device code flow")
    command("version", cmd_version, "print the version")
    return parser


# --- numbers on the command line ---------------------------------------------------------
# Checked by argparse, so a bad one is a usage error (exit 2) naming the option, never a
# traceback from SQLite or datetime arithmetic further in.

MAX_LIMIT = 100_000
SQLITE_MAX_INT = 2**63 - 1
MAX_AGE = timedelta(days=36_500)  # a century; beyond it datetime arithmetic overflows


def count(maximum: int) -> Callable[[str], int]:
    """A whole number from 1 to maximum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be from 1 to {maximum}, got {text}")
        return value
    return parse


def port_number(text: str) -> int:
    """A TCP port; 0 lets the system choose a free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {text}")
    return value


def server(text: str) -> str:
    """HOST:PORT of an SMTP server."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not (port.isascii() and port.isdigit()) \
            or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:2525, "
                                         f"got {text!r}")
    return text


def age(text: str) -> timedelta:
    """A duration such as 30d or 1h30m, more than nothing and at most a century."""
    from mailgate.config.readers import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except OverflowError:  # "99999999999d": beyond what timedelta holds
        value = MAX_AGE * 2
    if not timedelta(0) < value <= MAX_AGE:
        raise argparse.ArgumentTypeError(f"must be longer than 0 and at most "
                                         f"{MAX_AGE.days}d, got {text!r}")
    return value


def cmd_version(args: argparse.Namespace) -> int:
    say(f"mailgate {__version__}")
    return 0
