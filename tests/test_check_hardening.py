"""`mailgate check` (and `run`, which loads the same way) on hostile or mistaken files:
one clear line per problem, never a traceback, never a hang; warnings for settings that
work but expose something."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailgate.config.loader import is_loopback, load_setup, nested_repetition
from tests.factories import EXAMPLE_DIRECTORY

MAILGATE = [sys.executable, "-m", "mailgate"]
BASE = '[state]\ndir = "state"\n[outbox]\ndir = "out"\n[directory]\npath = "{directory}"\n'


def mailgate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run mailgate as a user would; a hang fails the test (timeout) instead of the run."""
    env = {k: v for k, v in os.environ.items() if k != "INVOCATION_ID"}
    return subprocess.run([*MAILGATE, "--config", str(tmp_path / "mailgate.toml"), *args],
                          capture_output=True, timeout=30, cwd=tmp_path, env=env)


def setup_files(tmp_path: Path, extra: str = "", directory: str = "directory.toml",
                directory_extra: str = "") -> None:
    (tmp_path / "directory.toml").write_text(EXAMPLE_DIRECTORY.read_text() + directory_extra)
    (tmp_path / "mailgate.toml").write_text(BASE.format(directory=directory) + extra)


def one_line(result: subprocess.CompletedProcess) -> str:
    out, err = result.stdout.decode(), result.stderr.decode()
    assert "Traceback" not in out + err, out + err
    lines = out.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def rule(pattern: str, key: str = "subject") -> str:
    return f'\n[[rule]]\n{key} = """{pattern}"""\ndepartment = "it"\n'


def test_non_utf8_config_and_directory(tmp_path: Path) -> None:
    setup_files(tmp_path)
    config = tmp_path / "mailgate.toml"
    config.write_bytes(config.read_bytes() + b"# caf\xe9\n")
    result = mailgate(tmp_path, "check")
    assert result.returncode == 1
    assert "mailgate.toml: not UTF-8 text (byte 0xe9 on line 7); save it as UTF-8" \
        in one_line(result)

    setup_files(tmp_path)
    directory = tmp_path / "directory.toml"
    directory.write_bytes(directory.read_bytes() + b"\n# \xff\xfe\n")
    result = mailgate(tmp_path, "check")
    assert result.returncode == 1
    assert f"{directory}: not UTF-8 text (byte 0xff" in one_line(result)


@pytest.mark.parametrize(("pattern", "expected"), [
    ("(?V1)x", "rule[5].subject: invalid regular expression '(?V1)x': VERSION0 and VERSION1"),
    ("(?<", "rule[5].subject: invalid regular expression '(?<'"),
    ("[a-", "rule[5].subject: invalid regular expression '[a-'"),
    ("*a", "rule[5].subject: invalid regular expression '*a'"),
])
def test_invalid_rule_regex(tmp_path: Path, pattern: str, expected: str) -> None:
    setup_files(tmp_path, directory_extra=rule(pattern))
    result = mailgate(tmp_path, "check")
    assert result.returncode == 1
    assert expected in one_line(result)


def test_catastrophic_rule_regex_is_a_warning(tmp_path: Path) -> None:
    setup_files(tmp_path, directory_extra=rule("(a+)+$", "body"))
    result = mailgate(tmp_path, "check")
    assert result.returncode == 0, result.stdout
    out = result.stdout.decode()
    assert "warning:" in out and "rule[5].body: '(a+)+$' repeats a group" in out


def special_files(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (path to put in the config, what check must say it is)."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    big = tmp_path / "big.toml"
    with big.open("wb") as fh:  # sparse: no disk used
        fh.truncate(65 * 1024 * 1024)
    return {"dev-zero": ("/dev/zero", "not a regular file but a device"),
            "fifo": (str(fifo), "not a regular file but a FIFO"),
            "directory": (str(tmp_path / "folder"), "not a regular file but a directory"),
            "symlink-to-dev-zero": (str(tmp_path / "zero.toml"),
                                    "not a regular file but a device"),
            "too-big": (str(big), "larger than 65536 kB")}


def test_directory_path_that_is_not_a_regular_file(tmp_path: Path) -> None:
    for name, (path, expected) in special_files(tmp_path).items():
        setup_files(tmp_path, directory=path)
        result = mailgate(tmp_path, "check")
        assert result.returncode == 1, name
        assert expected in one_line(result), name


def test_config_that_is_not_a_regular_file(tmp_path: Path) -> None:
    result = subprocess.run([*MAILGATE, "--config", "/dev/zero", "check"],
                            capture_output=True, timeout=30)
    assert result.returncode == 1
    assert "/dev/zero: cannot read: not a regular file but a device" in one_line(result)


def test_password_file_that_is_not_a_regular_file(tmp_path: Path) -> None:
    setup_files(tmp_path, '[smtp]\nhost = "mail"\nusername = "u"\n'
                'password_file = "/dev/zero"\n')
    result = mailgate(tmp_path, "check")
    assert result.returncode == 1
    assert "smtp.password_file: cannot read /dev/zero: not a regular file" in one_line(result)


@pytest.mark.parametrize(("listen", "expected"), [
    ("127.0.0.1:99999", "intake.smtp.listen: port 99999 is out of range (0-65535)"),
    ("127.0.0.1:-1", "intake.smtp.listen: expected HOST:PORT"),
    ("127.0.0.1:abc", "intake.smtp.listen: expected HOST:PORT"),
    ("127.0.0.1:²", "intake.smtp.listen: expected HOST:PORT"),
    ("2525", "intake.smtp.listen: expected HOST:PORT"),
])
def test_bad_listen_ports(tmp_path: Path, listen: str, expected: str) -> None:
    setup_files(tmp_path, f'[intake.smtp]\nlisten = "{listen}"\n')
    result = mailgate(tmp_path, "check")
    assert result.returncode == 1
    assert expected in one_line(result)


@pytest.mark.parametrize(("port", "expected"), [
    ("99999", "must be at most 65535, got 99999"), ("0", "must be at least 1, got 0"),
    ("-1", "must be at least 1, got -1"), ('"abc"', "expected an integer, got 'abc'")])
def test_bad_smtp_port(tmp_path: Path, port: str, expected: str) -> None:
    setup_files(tmp_path, f'[smtp]\nhost = "mail"\nport = {port}\n')
    result = mailgate(tmp_path, "check")
    assert result.returncode == 1
    assert f"smtp.port: {expected}" in one_line(result)


@pytest.mark.parametrize(("listen", "expected"), [
    ("0.0.0.0:2525", "intake.smtp.listen: 0.0.0.0 listens beyond this machine"),
    ("[::]:2525", "intake.smtp.listen: :: listens beyond this machine"),
    ("127.0.0.1:0", "intake.smtp.listen: port 0 takes a different free port"),
])
def test_listeners_beyond_loopback_are_warnings(tmp_path: Path, listen: str,
                                                  expected: str) -> None:
    setup_files(tmp_path, f'[intake.smtp]\nlisten = "{listen}"\n')
    result = mailgate(tmp_path, "check")
    assert result.returncode == 0, result.stdout
    warnings = [line for line in result.stdout.decode().splitlines() if "warning:" in line]
    assert len(warnings) == 1 and expected in warnings[0], warnings


def test_metrics_beyond_loopback_is_a_warning(tmp_path: Path) -> None:
    setup_files(tmp_path, '[metrics]\nlisten = "0.0.0.0:9464"\n')
    result = mailgate(tmp_path, "check")
    assert result.returncode == 0
    assert "metrics.listen: 0.0.0.0 listens beyond this machine and the endpoint has no " \
        "authentication" in result.stdout.decode()


def test_password_file_others_can_read_is_a_warning(tmp_path: Path) -> None:
    secret = tmp_path / "smtp.pw"
    secret.write_text("hunter2\n")
    setup_files(tmp_path, '[smtp]\nhost = "mail"\nusername = "u"\npassword_file = "smtp.pw"\n')
    for mode, who in ((0o644, "group and others"), (0o640, "its group"), (0o604, "others")):
        secret.chmod(mode)
        result = mailgate(tmp_path, "check")
        assert result.returncode == 0, result.stdout
        assert f"smtp.password_file: {secret} is readable by {who} (mode 0{mode:o}); " \
            f"run chmod 600 {secret}" in result.stdout.decode()
    secret.chmod(0o600)
    assert "warning" not in mailgate(tmp_path, "check").stdout.decode()


def test_the_old_name_of_the_automatic_mail_limit_is_reported_by_check(
        tmp_path: Path) -> None:
    """acks_per_sender_per_hour reads as a limit on acknowledgements, but it sets the one
    on every automatic mail to a mailbox: check says so, and says when it is ignored."""
    setup_files(tmp_path, "[limits]\nacks_per_sender_per_hour = 3\n")
    assert load_setup(tmp_path / "mailgate.toml").config.limits \
        .auto_mail_per_recipient_per_hour == 3  # still read
    result = mailgate(tmp_path, "check")
    assert result.returncode == 0, result.stdout
    [warning] = [line for line in result.stdout.decode().splitlines() if "warning:" in line]
    assert "limits.acks_per_sender_per_hour: the old name of " \
        "auto_mail_per_recipient_per_hour: it limits not only acknowledgements but every " \
        "automatic mail (command replies and refusals, notices, thanks) to 3 an hour per " \
        "mailbox; rename it" in warning
    setup_files(tmp_path, "[limits]\nacks_per_sender_per_hour = 3\n"
                          "auto_mail_per_recipient_per_hour = 7\n")
    assert load_setup(tmp_path / "mailgate.toml").config.limits \
        .auto_mail_per_recipient_per_hour == 7
    assert "limits.acks_per_sender_per_hour: ignored, auto_mail_per_recipient_per_hour = 7 " \
        "is set too; remove the old key" in mailgate(tmp_path, "check").stdout.decode()
    setup_files(tmp_path, "[limits]\nauto_mail_per_recipient_per_hour = 7\n")
    assert "warning" not in mailgate(tmp_path, "check").stdout.decode()


@pytest.mark.parametrize("case", ["non-utf8", "regex", "dev-zero", "port"])
def test_run_refuses_the_same_files_in_one_line(tmp_path: Path, case: str) -> None:
    """The daemon loads through the same loader: the same one line, exit 1, no hang."""
    if case == "non-utf8":
        setup_files(tmp_path)
        config = tmp_path / "mailgate.toml"
        config.write_bytes(config.read_bytes() + b"# \xe9\n")
    elif case == "regex":
        setup_files(tmp_path, directory_extra=rule("(?V1)x"))
    elif case == "dev-zero":
        setup_files(tmp_path, directory="/dev/zero")
    else:
        setup_files(tmp_path, '[intake.smtp]\nlisten = "127.0.0.1:99999"\n')
    result = mailgate(tmp_path, "run")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# --- the pure helpers --------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "nested"), [
    ("(a+)+$", True), (r"(\w+\s?)*$", True), ("(x*y){2,}", True), ("((ab)*c)+", True),
    ("(?:a*)*", True), ("(a{2,})+", True),
    ("(?i)password|locked out", False), (r"(\d{1,3}\.){3}", False), ("(a+){1}", False),
    ("(a+)?", False), ("[(a+)]+", False), (r"\(a+\)+", False), ("x+y*", False),
    ("(?i)(urgent|asap)+", False), ("[]a+]+(b)", False), ("(a?)+", False)])
def test_nested_repetition(pattern: str, nested: bool) -> None:
    assert nested_repetition(pattern) is nested


def test_is_loopback() -> None:
    assert all(map(is_loopback, ("127.0.0.1", "127.0.0.2", "::1", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "192.0.2.1", "mail.example.com")))



def test_check_reports_every_problem_in_one_run(tmp_path: Path) -> None:
    """Unreadable passwords do not hide the rest: an unknown mailbox department and a
    template syntax error (with its line) are reported in the same run; a missing
    directory file names the key to fix, not the command line."""
    import shutil

    from tests.factories import TEMPLATES

    templates = tmp_path / "tpl"
    shutil.copytree(TEMPLATES, templates)
    (templates / "ack.txt.j2").write_text("{% if x %}\nhello\n")
    setup_files(tmp_path, '[templates]\ndir = "tpl"\n[smtp]\nhost = "m"\nusername = "u"\n'
                          'password_file = "/nonexistent/secret"\n[[mailbox]]\nname = "it"\n'
                          'department = "nope"\nhost = "imap"\nusername = "u"\n'
                          'password_file = "/nonexistent/imap"\n')
    result = mailgate(tmp_path, "check")
    assert result.returncode == 1
    out = result.stdout.decode()
    assert "smtp.password_file: cannot read /nonexistent/secret" in out
    assert "mailbox[0].department: unknown department 'nope'" in out
    assert "ack.txt.j2, line 2: TemplateSyntaxError" in out
    setup_files(tmp_path, directory="gone.toml")
    out = mailgate(tmp_path, "check").stdout.decode()
    assert "gone.toml: file not found: set [directory] path in" in out
    assert "--config" not in out
