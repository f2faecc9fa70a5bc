#!/usr/bin/env python3
"""Bootstrap for a fresh clone: only Python and apt are assumed.

    python3 scripts/dev.py demo     # venv + mailgate, then `mailgate demo`
    python3 scripts/dev.py test     # venv + test extras + Dovecot + Postfix + PostgreSQL +
                                    # Chromium, then pytest on SQLite, then on PostgreSQL

Extra arguments go to `mailgate demo` or to pytest. Standard library only, on purpose.
The PostgreSQL run (MAILGATE_TEST_ENGINE=postgresql) comes only after the SQLite run
passed, and only in a checkout that has the PostgreSQL engine (the `postgresql` extra).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"


def say(text: str) -> None:
    print(f"[dev] {text}", flush=True)


def run(*cmd: str | Path, check: bool = True) -> int:
    return subprocess.run([str(c) for c in cmd], check=check).returncode


def can_apt() -> bool:
    return shutil.which("apt-get") is not None and (os.geteuid() == 0 or _sudo_ok())


def _sudo_ok() -> bool:
    return shutil.which("sudo") is not None and subprocess.run(
        ["sudo", "-n", "true"], capture_output=True).returncode == 0


def as_root() -> list[str]:
    """The command prefix that runs a command as root: none when we are root."""
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


def apt_install(*packages: str) -> bool:
    prefix = as_root()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    say(f"apt-get install {' '.join(packages)}")
    if subprocess.run(install, env=env).returncode == 0:
        return True
    subprocess.run([*prefix, "apt-get", "update", "-q"], env=env)
    return subprocess.run(install, env=env).returncode == 0


def ensure_venv() -> None:
    if (BIN / "python").exists():
        return
    say(f"creating {VENV}")
    if subprocess.run([sys.executable, "-m", "venv", str(VENV)]).returncode == 0:
        return
    shutil.rmtree(VENV, ignore_errors=True)
    version = f"python3.{sys.version_info.minor}-venv"
    if not (can_apt() and (apt_install(version) or apt_install("python3-venv"))):
        sys.exit("[dev] python3 -m venv failed; install the venv module (Debian: "
                 "apt-get install python3-venv) and run this again")
    run(sys.executable, "-m", "venv", VENV)


def has_extra(name: str) -> bool:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return name in tomllib.load(file)["project"].get("optional-dependencies", {})


def has_postgresql_engine() -> bool:
    """The checkout has the PostgreSQL engine: its driver is the `postgresql` extra."""
    return has_extra("postgresql")


def ensure_packages(extra: str) -> None:
    """pip install -e . only when pyproject.toml changed since the last install."""
    spec = f".[{extra}]" if extra else "."
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + spec.encode()).hexdigest()
    stamp = VENV / f".installed-{extra or 'base'}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    say(f"pip install -e '{spec}'")
    run(BIN / "python", "-m", "pip", "install", "-q", "--upgrade", "pip")
    subprocess.run([str(BIN / "python"), "-m", "pip", "install", "-q", "-e", spec],
                   cwd=ROOT, check=True)
    stamp.write_text(digest)


def ensure_server(program: str, package: str, skipped: str, hint: str = "",
                  debconf: str = "", installed: bool | None = None, name: str = "") -> None:
    """Install a server (or tool) the tests need, or say which tests will be skipped
    (fatal under CI, where the tests would fail). `installed` says whether it is here
    (default: PROGRAM on the PATH or in /usr/sbin); `debconf` answers the package's
    questions first."""
    if installed is None:
        installed = bool(shutil.which(program) or Path(f"/usr/sbin/{program}").exists())
    if installed:
        return
    if can_apt():
        if debconf:
            subprocess.run([*as_root(), "debconf-set-selections"], text=True, input=debconf)
        if apt_install(package):
            return
    name = name or program.capitalize()
    message = (f"{name} is not installed and cannot be installed here (needs root or sudo "
               f"and apt-get): {skipped} will be skipped. Install it with: "
               f"sudo apt-get install {package}{hint}")
    if os.environ.get("CI") == "true":
        sys.exit(f"[dev] {message}")
    say(message)


def ensure_dovecot() -> None:
    ensure_server("dovecot", "dovecot-imapd", "end-to-end tests")


def ensure_postfix() -> None:
    """A private Postfix instance sits in front of mailgate in tests/test_postfix_e2e.py.
    Debian's package asks what kind of mail server to set up: "No configuration" leaves
    the system's Postfix unconfigured and stopped; the tests bring their own config."""
    ensure_server("postfix", "postfix", "the Postfix end-to-end tests",
                  hint=' (choose "No configuration")',
                  debconf="postfix postfix/main_mailer_type select No configuration\n")


def ensure_postgresql() -> None:
    """tests/postgres.py runs a private PostgreSQL (initdb in a temporary directory) from
    Debian's versioned binaries, /usr/lib/postgresql/<version>/bin, which are not on the
    PATH."""
    installed = any(Path("/usr/lib/postgresql").glob("*/bin/postgres")) \
        or shutil.which("postgres") is not None
    ensure_server("postgres", "postgresql", "the PostgreSQL tests", installed=installed,
                  name="PostgreSQL")


def ensure_systemd_analyze() -> None:
    """Lets the tests check the unit file with `systemd-analyze verify`."""
    ensure_server("systemd-analyze", "systemd", "the unit-file check",
                  installed=shutil.which("systemd-analyze") is not None,
                  name="systemd-analyze")


def ensure_chromium() -> None:
    """Headless Chromium renders the HTML report in a test (about 20 s to install)."""
    ensure_server("chromium", "chromium", "the HTML report screenshot test",
                  installed=Path("/usr/bin/chromium").exists())


def run_tests(pytest_args: list[str]) -> int:
    """The suite on SQLite; when that passed and the checkout has the PostgreSQL engine,
    the suite again on PostgreSQL. The first failing run's exit status is returned."""
    # The daemons the tests start (hundreds of them) then load compiled modules, as an
    # installed mailgate does, even where PYTHONDONTWRITEBYTECODE keeps Python from
    # writing them: compiling ~165 modules from source costs each start about 0.3 s.
    subprocess.run([str(BIN / "python"), "-m", "compileall", "-q", "mailgate"], cwd=ROOT,
                   check=True)
    status = pytest_on("sqlite", pytest_args)
    if status != 0 or not has_postgresql_engine():
        return status
    return pytest_on("postgresql", pytest_args)


# One engine's run takes ~7 minutes. A test that hangs must not hold CI until its own
# limit kills everything unexplained: pytest's faulthandler_timeout (pyproject.toml) prints
# where a test that has run for 10 minutes stands, and the run is stopped here after 30.
RUN_LIMIT_S = 30 * 60


def pytest_on(engine: str, pytest_args: list[str]) -> int:
    say(f"pytest with MAILGATE_TEST_ENGINE={engine}")
    env = {**os.environ, "MAILGATE_TEST_ENGINE": engine}
    # A session of its own, so that stopping it stops the servers and daemons it started.
    with subprocess.Popen([str(BIN / "python"), "-m", "pytest", *pytest_args], cwd=ROOT,
                          env=env, start_new_session=True) as suite:
        try:
            return suite.wait(timeout=RUN_LIMIT_S)
        except subprocess.TimeoutExpired:
            say(f"the {engine} run did not finish within {RUN_LIMIT_S // 60} minutes: "
                "stopped (a hung test's traceback is printed above)")
            os.killpg(suite.pid, signal.SIGKILL)
            return 124
        except KeyboardInterrupt:  # the terminal's Ctrl-C reaches this session only
            os.killpg(suite.pid, signal.SIGINT)
            suite.wait()
            return 130


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_venv()
    if argv[0] == "demo":
        ensure_packages("")
        os.execv(BIN / "mailgate", [str(BIN / "mailgate"), "demo", *argv[1:]])
    ensure_packages("test,postgresql" if has_postgresql_engine() else "test")
    ensure_dovecot()
    ensure_postfix()
    ensure_postgresql()
    ensure_systemd_analyze()
    ensure_chromium()
    return run_tests(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
