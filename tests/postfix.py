"""A private Postfix for end-to-end tests: its own config directory, queue and log in a
temp dir, smtpd on a high loopback port, nothing from /etc/postfix used.

    postfix = PostfixServer(find_postfix(), routes={"it-help@example.com":
                                                   "lmtp:inet:127.0.0.1:2525"},
                            default="smtp:[127.0.0.1]:2526")
    postfix.start(); ...; postfix.flush(); ...; postfix.cleanup()

Facts that save an hour: `postfix -c DIR start` runs a second instance from DIR's main.cf
and master.cf (as root; a normal user cannot: its daemons must run as mail_owner and its
queue needs the postdrop group). Every service in master.cf runs unchained (chroot "n"):
a chroot would need copies of /etc files in the queue directory. transport_maps use
`texthash:` so no postmap run is needed; `maillog_file` with the postlog service gives a
log without syslog.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.mailservers import free_port

POSTFIX_CANDIDATES = ("/usr/sbin/postfix", "/usr/local/sbin/postfix")
# Debian's "No configuration" leaves /etc/postfix without main.cf; nothing here needs it.
SERVICES = """\
{listen} inet n - n - - smtpd
pickup    unix n - n 1 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 1 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
lmtp      unix - - n - - lmtp
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def find_postfix() -> str | None:
    found = shutil.which("postfix")
    if found:
        return found
    return next((p for p in POSTFIX_CANDIDATES if os.access(p, os.X_OK)), None)


def why_no_private_postfix() -> str | None:
    """None when a private instance can run here, else the reason in one line."""
    if find_postfix() is None:
        return "Postfix is not installed (python3 scripts/dev.py test installs it as root)"
    if os.geteuid() != 0:
        return ("a private Postfix needs root: its daemons drop to the postfix user and "
                "its queue belongs to the postdrop group")
    return None


class PostfixServer:
    """A throw-away Postfix: mail for `routes` (address or domain -> transport) goes
    there, everything else to `default` (e.g. "smtp:[127.0.0.1]:PORT")."""

    def __init__(self, binary: str, *, routes: dict[str, str], default: str) -> None:
        self.binary = binary
        self.sbin = Path(binary).parent
        self.root = Path(tempfile.mkdtemp(prefix="mailgate-postfix-"))
        self.root.chmod(0o755)  # the daemons run as the postfix user
        self.port = free_port()
        self.routes = dict(routes)
        self.default = default

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def log(self) -> Path:
        return self.root / "maillog"

    def _write_config(self) -> None:
        self.config_dir.mkdir(exist_ok=True)
        for sub in ("queue", "data"):
            (self.root / sub).mkdir(exist_ok=True)
        shutil.chown(self.root / "data", "postfix", "postfix")
        transport = self.config_dir / "transport"
        transport.write_text("".join(f"{key} {value}\n" for key, value in
                                     self.routes.items()) + f"* {self.default}\n")
        domains = sorted({key.rpartition("@")[2] for key in self.routes})
        (self.config_dir / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.root}/queue
data_directory = {self.root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.mailgate-test.invalid
mydomain = mailgate-test.invalid
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {", ".join(domains)}
transport_maps = texthash:{transport}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_banner = $myhostname ESMTP
biff = no
alias_maps =
alias_database =
local_recipient_maps =
maillog_file_prefixes = {self.root}
maillog_file = {self.log}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtp_connect_timeout = 5s
lmtp_connect_timeout = 5s
""")
        (self.config_dir / "master.cf").write_text(
            SERVICES.format(listen=f"127.0.0.1:{self.port}"))

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, check=check, timeout=60)

    def start(self, timeout: float = 30.0) -> None:
        self._write_config()
        self.postfix("start")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    if sock.recv(100).startswith(b"220"):
                        return
            except OSError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Postfix did not start: {exc}\n{self.log_tail()}") \
                        from exc
            time.sleep(0.2)

    def flush(self) -> None:
        """postqueue -f: try every deferred message again now."""
        subprocess.run([str(self.sbin / "postqueue"), "-c", str(self.config_dir), "-f"],
                       capture_output=True, check=True, timeout=60)

    def queue(self) -> str:
        """postqueue -p: the queue listing ("Mail queue is empty" when it is)."""
        return subprocess.run([str(self.sbin / "postqueue"), "-c", str(self.config_dir), "-p"],
                              capture_output=True, text=True, check=True, timeout=60).stdout

    def running(self) -> bool:
        return self.postfix("status", check=False).returncode == 0

    def stop(self) -> None:
        if not (self.root / "queue" / "pid" / "master.pid").exists():
            return
        self.postfix("stop", check=False)
        deadline = time.monotonic() + 15  # master.pid stays; ask the master instead
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
