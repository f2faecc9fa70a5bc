"""`mailgate demo`: the whole daemon on localhost, no mail server needed.

It writes a config into a local folder (so the demo exercises the real loading code),
listens for SMTP on 127.0.0.1, writes outgoing mail as .eml files and prints a line for
each one, so a new user sees a request become a ticket and an acknowledgement.
"""

from __future__ import annotations

import email
import shutil
import sys
from pathlib import Path

from mailgate.config.loader import load_setup
from mailgate.config.settings import default_templates_dir, shipped
from mailgate.core.terminal import visible
from mailgate.outbound.transport import DirectoryTransport
from mailgate.service.daemon import Daemon, run_forever
from mailgate.service.startup import ListenError, StartError, check_database, daemon_lock
from mailgate.storage.store import OutboxRow

EXAMPLE = "directory.example.toml"  # in the checkout's config/, or installed by pip
DEMO_CONFIG = """\
# Written by `mailgate demo` at every start; directory.toml beside it is yours to edit.
[mailgate]
instance = "mailgate-demo"

[state]
dir = "state"

[directory]
path = "directory.toml"

[templates]
dir = "{templates}"

[outbox]
dir = "outgoing"          # instead of [smtp]: outgoing mail is written here as .eml files

[intake.smtp]
listen = "127.0.0.1:{port}"
"""


class ConsoleTransport(DirectoryTransport):
    """Writes each mail like DirectoryTransport and tells the user about it."""

    async def send(self, row: OutboxRow, lane: int = 0) -> None:
        await super().send(row, lane)
        headers = email.message_from_bytes(row.raw.split(b"\r\n\r\n", 1)[0])
        # The subject and addresses come from the requester's mail: shown, never obeyed.
        print(f"\n>>> {row.kind} sent to {visible(', '.join(row.recipients))}\n"
              f"    Subject: {visible(str(headers['Subject']))}\n"
              f"    saved as {self.directory / f'{row.id:06d}-{row.kind}.eml'}\n", flush=True)


def prepare(folder: Path, port: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mailgate.toml"
    config.write_text(DEMO_CONFIG.format(port=port, templates=default_templates_dir()))
    directory = folder / "directory.toml"
    if not directory.exists():
        shutil.copy(shipped("config", EXAMPLE) / EXAMPLE, directory)
    return config


def command_name() -> str:
    """How to call mailgate from another terminal: the bare name only if the shell's
    PATH finds this very installation (a fresh .venv usually is not on it)."""
    here = Path(sys.executable).parent / "mailgate"
    found = shutil.which("mailgate")
    if found and here.exists() and Path(found).resolve() == here.resolve():
        return "mailgate"
    return str(here) if here.exists() else f"{sys.executable} -m mailgate"


def banner(config_path: Path, port: int, addresses: list[str]) -> str:
    mailgate = command_name()
    cfg = f"--config {config_path}"
    return f"""
mailgate demo is running (Ctrl-C stops it).
  incoming SMTP   127.0.0.1:{port}   department addresses: {', '.join(addresses)}
  outgoing mail   {config_path.parent / 'outgoing'}/*.eml
  database        {config_path.parent / 'state' / 'mailgate.sqlite3'}

Send a request from another terminal:
  {mailgate} send --server 127.0.0.1:{port} --to it-help@example.com --subject "Laptop won't boot"
or with plain Python:
  python3 -c "import smtplib; smtplib.SMTP('127.0.0.1', {port}).sendmail('ann@example.com', ['it-help@example.com'], b'From: Ann <ann@example.com>\\r\\nTo: it-help@example.com\\r\\nSubject: Printer jammed\\r\\n\\r\\nPaper everywhere.\\r\\n')"
Then look at it:
  {mailgate} {cfg} tickets
  {mailgate} {cfg} show IT-1001
"""


async def run_demo(folder: Path, port: int) -> int:
    folder = folder.resolve()
    # Before the config is rewritten: a second demo must not change the first one's port.
    with daemon_lock(folder / "state", hint="stop it (Ctrl-C in its terminal), or give "
                     "this one its own folder with --dir"):
        config_path = prepare(folder, port)
        setup = load_setup(config_path)
        check_database(setup.config.database)
        assert setup.config.outbox_dir is not None
        daemon = Daemon(setup.config, setup.directory, renderer=setup.renderer,
                        transport=ConsoleTransport(setup.config.outbox_dir))
        addresses = [a for d in setup.directory.departments.values() for a in d.addresses]

        def announce() -> None:
            print(banner(config_path, daemon.listen_port or port, addresses), flush=True)

        try:
            await run_forever(daemon, on_ready=announce)
        except ListenError as exc:
            if exc.setting != "[intake.smtp] listen":
                raise
            raise StartError(f"cannot listen on 127.0.0.1:{port}: {exc.reason}; choose "
                             f"another port with --port, e.g. --port {port % 65535 + 1} "
                             f"(--port 0 takes any free one)") from None
    print("mailgate demo stopped.", file=sys.stderr)
    return 0
