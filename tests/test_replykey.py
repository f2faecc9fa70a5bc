"""Reply keys (pure) and their secret file: what proves that a mail answers ours."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailgate.core.replykey import (
    DAY,
    KeyRing,
    _b36,
    _mac,
    keyed_message_id,
    proven_refs,
    valid_keys,
)
from mailgate.service import keyfile

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
RING = KeyRing((("k1", b"one secret"),), ttl=timedelta(days=60))


def key(recipient: str = "alice@example.com", refs: tuple[str, ...] = ("IT-1042",),
        ring: KeyRing = RING, now: datetime = NOW) -> str:
    return keyed_message_id(ring, refs, recipient, "example.com", now)


def test_a_key_proves_its_ticket_for_its_recipient_only() -> None:
    mid = key()
    assert mid.startswith("mgk2.k1.") and mid.endswith("@example.com")
    assert proven_refs(RING, [mid], "alice@example.com", NOW) == {"IT-1042"}
    assert proven_refs(RING, [f"<{mid}>"], "alice@example.com", NOW) == {"IT-1042"}
    assert proven_refs(RING, [mid], "bob@example.com", NOW) == frozenset()
    assert proven_refs(RING, [mid], "alice@example.org", NOW) == frozenset()


def test_plus_tags_and_case_are_one_mailbox() -> None:
    mid = key("Alice+IT@Example.com")
    assert proven_refs(RING, [mid], "alice@example.com", NOW) == {"IT-1042"}
    assert proven_refs(RING, [mid], "ALICE+other@example.COM", NOW) == {"IT-1042"}


@pytest.mark.parametrize(("issued_to", "lookalike"), [
    ("\u017fam@example.com", "sam@example.com"),  # LONG S: casefold() makes it "s"
    ("\ufb01ona@example.com", "fiona@example.com"),  # the "fi" ligature
    ("gro\u00df@example.com", "gross@example.com"),  # SHARP S: casefold() makes it "ss"
    ("fran\u212a@example.com", "frank@example.com"),  # KELVIN SIGN: lower() makes it "k"
])
def test_only_ascii_case_is_one_mailbox(issued_to: str, lookalike: str) -> None:
    """Unicode case folding joins distinct (SMTPUTF8) mailboxes: a key issued to one must
    not prove the ASCII address it folds to, nor the other way round."""
    assert proven_refs(RING, [key(issued_to)], lookalike, NOW) == frozenset()
    assert proven_refs(RING, [key(lookalike)], issued_to, NOW) == frozenset()
    assert proven_refs(RING, [key(issued_to)], issued_to, NOW) == {"IT-1042"}


def test_one_key_for_a_request_with_several_tickets() -> None:
    mid = key("ann@example.com", ("IT-1042", "FAC-1001"))
    assert proven_refs(RING, [mid], "ann@example.com", NOW) == {"IT-1042", "FAC-1001"}


def test_tampering_with_any_part_breaks_the_key() -> None:
    mid = key()
    version, key_id, expiry, refs, mac, rest = mid.split(".", 5)
    forged = [
        ".".join((version, key_id, expiry, "IT-1043", mac, rest)),  # another ticket
        ".".join((version, key_id, "zzzzz", refs, mac, rest)),  # a later expiry
        ".".join((version, key_id, expiry, refs, mac[:-1] + ("a" if mac[-1] != "a" else "b"),
                  rest)),
        ".".join((version, "k2", expiry, refs, mac, rest)),  # a key id nobody has
        ".".join((version, key_id, expiry, refs, mac, "0" + rest[1:])) if rest[0] != "0"
        else ".".join((version, key_id, expiry, refs, mac, "1" + rest[1:])),  # another nonce
        ".".join((version, key_id, expiry, refs, mac)),  # no nonce
        ".".join(("mgk1", key_id, expiry, refs, mac, rest)),  # the old version's MAC
    ]
    for value in forged:
        assert proven_refs(RING, [value], "alice@example.com", NOW) == frozenset(), value


def old_key(recipient: str = "alice@example.com", refs: str = "IT-1042",
            nonce: str = "0123456789abcdef0123456789abcdef") -> str:
    """An mgk1 key as mailgate issued them before mgk2: the MAC leaves the nonce out."""
    expiry = _b36(int(NOW.timestamp()) // DAY + 30)  # within the ring's ttl of NOW
    mac = _mac(b"one secret", "mgk1", "k1", expiry, refs, recipient)
    return f"mgk1.k1.{expiry}.{refs}.{mac}.{nonce}@example.com"


def test_each_mail_has_a_key_of_its_own() -> None:
    """Two mails to one person about one ticket on one day: two identities, so burning
    the key one of them exposed leaves the other proving."""
    first, second = key(), key()
    [one] = valid_keys(RING, [first], ["alice@example.com"], NOW)
    [two] = valid_keys(RING, [second], ["alice@example.com"], NOW)
    assert one.identity != two.identity and one.refs == two.refs == {"IT-1042"}
    assert proven_refs(RING, [first], "alice@example.com", NOW, exposed={one.identity}) \
        == frozenset()
    assert proven_refs(RING, [second], "alice@example.com", NOW, exposed={one.identity}) \
        == {"IT-1042"}


def test_old_keys_still_prove_and_burn_by_the_day() -> None:
    first, second = old_key(), old_key(nonce="f" * 32)
    assert proven_refs(RING, [first], "alice@example.com", NOW) == {"IT-1042"}
    assert proven_refs(RING, [first], "bob@example.com", NOW) == frozenset()
    [one] = valid_keys(RING, [first], ["alice@example.com"], NOW)
    [two] = valid_keys(RING, [second], ["alice@example.com"], NOW)
    assert one.identity == two.identity and one.identity.startswith("mgk1.")
    assert proven_refs(RING, [second], "alice@example.com", NOW, exposed={one.identity}) \
        == frozenset()


def test_valid_keys_are_found_for_any_holder_once() -> None:
    alice, bob = key("alice@example.com"), key("bob@example.com", ("FAC-1001",))
    found = valid_keys(RING, [f"<{alice}>", alice, bob, "<other@x>", "mgk2.k1.zz.IT-1.x"],
                       ["carol@example.com", "Bob@example.com", "alice+x@example.com"], NOW)
    assert [k.refs for k in found] == [{"IT-1042"}, {"FAC-1001"}]
    assert valid_keys(RING, [alice, bob], ["carol@example.com"], NOW) == ()
    assert valid_keys(RING, [alice], [], NOW) == ()


def test_keys_expire() -> None:
    mid = key()
    assert proven_refs(RING, [mid], "alice@example.com", NOW + timedelta(days=59))
    assert not proven_refs(RING, [mid], "alice@example.com", NOW + timedelta(days=62))


def test_an_empty_ring_signs_and_proves_nothing() -> None:
    mid = keyed_message_id(KeyRing(), ("IT-1042",), "alice@example.com", "example.com", NOW)
    assert not mid.startswith(("mgk1.", "mgk2."))
    assert proven_refs(KeyRing(), [key()], "alice@example.com", NOW) == frozenset()


def test_a_key_signed_elsewhere_proves_nothing() -> None:
    other = KeyRing((("k1", b"another installation"),))
    assert proven_refs(other, [key()], "alice@example.com", NOW) == frozenset()


@given(st.text(max_size=300))
def test_no_string_without_the_secret_proves_anything(value: str) -> None:
    assert proven_refs(RING, [value, f"mgk1.k1.zz.IT-1.{value}", f"mgk2.k1.zz.IT-1.{value}"],
                       "alice@example.com", NOW) == frozenset()


def test_the_secret_file_is_made_private_and_rotates(tmp_path: Path) -> None:
    ttl = timedelta(days=60)
    ring = keyfile.load(tmp_path, ttl, NOW)
    path = tmp_path / keyfile.FILENAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert keyfile.load(tmp_path, ttl, NOW) == ring  # the same secret next time
    old = key(ring=ring)
    new_id, kept = keyfile.rotate(tmp_path, ttl, NOW + timedelta(days=1))
    assert kept == 1
    rotated = keyfile.load(tmp_path, ttl, NOW + timedelta(days=1))
    assert rotated.secrets[0][0] == new_id and len(rotated.secrets) == 2
    assert key(ring=rotated).split(".")[1] == new_id  # new mail: the new secret
    assert proven_refs(rotated, [old], "alice@example.com", NOW + timedelta(days=1))
    # Once every key the old secret signed has expired, it is gone.
    later = keyfile.load(tmp_path, ttl, NOW + timedelta(days=62))
    assert [k for k, _ in later.secrets] == [new_id]


def test_a_damaged_secret_file_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / keyfile.FILENAME).write_text(json.dumps({"keys": [{"id": "x"}]}))
    with pytest.raises(keyfile.KeyFileError, match="restore it from a backup"):
        keyfile.load(tmp_path, timedelta(days=60), NOW)


def test_without_create_a_missing_file_is_an_empty_ring(tmp_path: Path) -> None:
    assert keyfile.load(tmp_path, timedelta(days=60), NOW, create=False) == KeyRing(
        (), timedelta(days=60))
    assert not (tmp_path / keyfile.FILENAME).exists()


def test_keys_command_rotates_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          ) -> None:
    from mailgate.cli.main import main

    config = tmp_path / "mailgate.toml"
    config.write_text('[state]\ndir = "state"\n[outbox]\ndir = "out"\n')
    assert main(["--config", str(config), "keys", "status"]) == 0
    assert "no reply-key file yet" in capsys.readouterr().out
    assert main(["--config", str(config), "keys", "rotate"]) == 0
    assert main(["--config", str(config), "keys", "rotate"]) == 0
    assert "1 older secret(s) keep verifying" in capsys.readouterr().out
    assert main(["--config", str(config), "keys", "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["verifying"]) == 2 and report["signing"] == report["verifying"][:1]


def test_check_warns_when_the_from_line_is_believed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.factories import EXAMPLE_DIRECTORY

    (tmp_path / "directory.toml").write_text(EXAMPLE_DIRECTORY.read_text())
    (tmp_path / "mailgate.toml").write_text(
        '[state]\ndir = "state"\n[outbox]\ndir = "out"\n[directory]\npath = "directory.toml"\n'
        '[security]\ntrusted_domains = ["example.com"]\nfrom_header_is_proof = true\n')
    result = subprocess.run([sys.executable, "-m", "mailgate", "--config",
                             str(tmp_path / "mailgate.toml"), "check"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    [warning] = [line for line in result.stdout.splitlines() if "warning:" in line]
    assert "from_header_is_proof" in warning and "can act as that person" in warning


def test_a_damaged_secret_file_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.factories import EXAMPLE_DIRECTORY

    (tmp_path / "directory.toml").write_text(EXAMPLE_DIRECTORY.read_text())
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / keyfile.FILENAME).write_text('{"keys": 3}')
    (tmp_path / "mailgate.toml").write_text('[state]\ndir = "state"\n[outbox]\ndir = "out"\n')
    result = subprocess.run([sys.executable, "-m", "mailgate", "--config",
                             str(tmp_path / "mailgate.toml"), "run"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "unreadable reply-key file" in result.stderr and "restore it" in result.stderr
