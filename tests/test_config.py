"""Configuration and directory loading: every mistake is one line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config.directory import load_directory
from mailgate.config.readers import parse_duration
from mailgate.config.settings import Secret, load_config
from mailgate.errors import ConfigError
from tests.factories import EXAMPLE_DIRECTORY


def test_example_directory_loads() -> None:
    directory = load_directory(EXAMPLE_DIRECTORY)
    assert set(directory.departments) == {"it", "facilities", "payroll"}
    it = directory.departments["it"]
    assert it.address == "it-help@example.com" and it.prefix == "IT"
    assert directory.department_for_address("HelpDesk@example.com") is it
    assert directory.department_for_address("it-help+printer@example.com") is it
    assert directory.sla_for(directory.departments["payroll"]).name == "finance"


def problems(tmp_path: Path, name: str, text: str, loader: object) -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        loader(path)  # type: ignore[operator]
    assert all(line.startswith(str(path)) for line in caught.value.problems)
    return caught.value.problems


def test_directory_mistakes(tmp_path: Path) -> None:
    found = problems(tmp_path, "directory.toml", """
default_department = "hr-x"
[[department]]
key = "it"
addresses = ["it@example.com"]
prefix = "IT"
sla = "gold"
[[department]]
key = "fac"
addresses = ["it@example.com", "not an address"]
prefix = "IT"
colour = "blue"
[[department]]
key = "hr"
addresses = ["hr@example.com"]
prefix = "hr-desk"
[sla.silver]
first_response = { normal = "soon" }
""", load_directory)
    text = "\n".join(found)
    for expected in ("default_department: unknown department 'hr-x'",
                     "department[2].prefix: must be",
                     "department[0].sla: unknown SLA policy 'gold'",
                     "department[1].addresses: it@example.com is already an address",
                     "not an email address", "department[1].prefix: prefix 'IT' is already",
                     "department[1].colour: unknown key", "first_response.normal"):
        assert expected in text, expected


def test_config_mistakes_and_no_inline_password(tmp_path: Path) -> None:
    found = problems(tmp_path, "mailgate.toml", """
[smtp]
port = "25"
tls = "maybe"
[intake.smtp]
listen = "localhost"
[[mailbox]]
name = "it"
host = "imap"
username = "u"
password = "hunter2"
poll_interval = "soon"
[[mailbox]]
name = "it"
department = "it"
host = "imap"
username = "u"
password_file = "/nonexistent/secret"
""", load_config)
    text = "\n".join(found)
    for expected in ("smtp.host: missing", "smtp.port: expected an integer",
                     "smtp.tls: must be one of none, starttls, implicit",
                     "intake.smtp.listen: expected HOST:PORT", "mailbox[0].department: missing",
                     "mailbox[0].password: inline passwords are not accepted",
                     "mailbox[0].poll_interval: not a duration",
                     "mailbox[1].password_file: cannot read /nonexistent/secret",
                     "mailbox[1].name: duplicate mailbox name 'it'"):
        assert expected in text, expected
    assert "hunter2" not in text


def test_secret_never_shows_itself(tmp_path: Path) -> None:
    secret = Secret("hunter2", "file /x")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret!r} {secret}"
    assert secret.reveal() == "hunter2"


def test_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MG_PW", "s3cret")
    path = tmp_path / "mailgate.toml"
    path.write_text('[outbox]\ndir = "out"\n[[mailbox]]\nname = "it"\ndepartment = "it"\n'
                    'host = "imap"\nusername = "u"\npassword_env = "MG_PW"\n')
    config = load_config(path)
    assert config.mailboxes[0].password.reveal() == "s3cret"
    assert config.state_dir == (tmp_path / "state").resolve()


def test_two_sources_of_one_password_are_named_as_such(tmp_path: Path) -> None:
    """Not 'unknown key' (a typo hunt): the second source is named with the first."""
    found = problems(tmp_path, "mailgate.toml",
                     '[smtp]\nhost = "mail"\nusername = "u"\npassword_env = "X"\n'
                     'password_credential = "smtp"\n', lambda p: load_config(p, "none"))
    assert found == [f"{tmp_path / 'mailgate.toml'}: smtp.password_credential: password_env "
                     f"is set too; keep one of password_file, password_env and "
                     f"password_credential"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), ("1h30m", 5400), ("250ms", 0.25)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "soon", "5", "1x", "h1"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_ports_out_of_range(tmp_path: Path) -> None:
    found = problems(tmp_path, "mailgate.toml", """
[smtp]
host = "mail"
port = 70000
[intake.smtp]
listen = "127.0.0.1:65536"
[metrics]
listen = "127.0.0.1:1e3"
[[mailbox]]
name = "it"
department = "it"
host = "imap"
port = 0
username = "u"
password_env = "NOT_SET_ANYWHERE"
""", lambda path: load_config(path, secrets="none"))
    text = "\n".join(found)
    for expected in ("smtp.port: must be at most 65535, got 70000",
                     "intake.smtp.listen: port 65536 is out of range",
                     "metrics.listen: expected HOST:PORT", "mailbox[0].port: must be at least 1"):
        assert expected in text, expected


def test_files_that_would_hang_or_are_not_text(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer for ever
    for path, expected in ((fifo, "not a regular file but a FIFO"),
                           (Path("/dev/zero"),
                            "not a regular file but a device (such as /dev/zero)"),
                           (tmp_path, "not a regular file but a directory")):
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.problems == [f"{path}: cannot read: {expected}; name a file"]
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[state]\ndir = "\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(latin1)
    assert caught.value.problems == [f"{latin1}: not UTF-8 text (byte 0xe9 on line 2); "
                                     f"save it as UTF-8"]


def test_a_password_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"caf\xe9")
    found = problems(tmp_path, "mailgate.toml", '[smtp]\nhost = "mail"\nusername = "u"\n'
                     'password_file = "pw"\n', load_config)
    assert found == [f"{tmp_path / 'mailgate.toml'}: smtp.password_file: {tmp_path / 'pw'}: "
                     f"not UTF-8 text; write the password as UTF-8"]


def test_absurd_durations_and_non_finite_numbers_are_one_line_problems(tmp_path: Path) -> None:
    from mailgate.config.settings import load_config
    from mailgate.errors import ConfigError

    path = tmp_path / "mailgate.toml"
    path.write_text('[outbox]\ndir = "out"\n[conversation]\nreopen_window = "99999999999d"\n'
                    "auto_close_after = nan\n[smtp]\nhost = \"m\"\ntimeout = inf\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = "\n".join(caught.value.problems)
    assert "conversation.reopen_window: '99999999999d' is longer than 100 years" in problems
    assert "conversation.auto_close_after: expected a duration" in problems
    assert "smtp.timeout: expected a finite number, got inf" in problems


def test_cluster_settings_and_the_default_node_name(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "mailgate.toml"
    path.write_text('[outbox]\ndir = "out"\n')
    default = load_config(path, secrets="none")
    # Stable across restarts, unique while running (one daemon per state directory).
    assert default.node == f"{socket.gethostname()}:{tmp_path / 'state'}"
    assert default.cluster.lease_seconds == 30.0 and default.cluster.renew_every == 10.0
    path.write_text('[outbox]\ndir = "out"\n[cluster]\nnode = "mail-2"\nlease_seconds = 6\n')
    named = load_config(path, secrets="none")
    assert (named.node, named.cluster.lease_seconds, named.cluster.renew_every) == (
        "mail-2", 6.0, 2.0)


def test_cluster_mistakes(tmp_path: Path) -> None:
    found = problems(tmp_path, "mailgate.toml", """
[outbox]
dir = "out"
[cluster]
node = " mail-2"
lease_seconds = 0.2
leader = true
""", lambda path: load_config(path, secrets="none"))
    text = "\n".join(found)
    for expected in ("cluster.node: must not start or end with a space",
                     "cluster.lease_seconds: must be at least 1, got 0.2",
                     "cluster.leader: unknown key"):
        assert expected in text, expected
