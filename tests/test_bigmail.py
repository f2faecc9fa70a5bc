"""Big mail from IMAP: fetched in groups bounded in bytes, a large message alone, and
ticketed like any other (parsed in a worker thread, see pipeline._safe_parse)."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path

import pytest

from mailgate.config.loader import load_setup
from mailgate.intake.imap import by_size
from mailgate.service.daemon import Daemon
from tests.factories import mail
from tests.harness import database, query, scalar
from tests.mailservers import (
    DovecotServer,
    ImapAccount,
    SmtpSink,
    imap_mailbox,
    write_daemon_config,
)


def test_groups_are_bounded_in_bytes_and_keep_the_order() -> None:
    sizes = {1: 100, 2: 100, 3: 5000, 4: 100, 5: 900, 6: 200, 7: 0}
    assert by_size([1, 2, 3, 4, 5, 6, 7], sizes, 1000) == [[1, 2], [3], [4, 5], [6, 7]]
    assert by_size([3], sizes, 1000) == [[3]]
    assert by_size([], sizes, 1000) == []
    assert by_size([8, 9], {}, 1000) == [[8, 9]]  # sizes unknown: one group


def large_request(message_id: str, attachment: bytes) -> bytes:
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (f"From: Ann Example <ann@example.com>\r\nTo: it-help@example.com\r\n"
            f"Subject: Big dump\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nThe dump is attached.\r\n"
            "--b\r\nContent-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="dump.bin"\r\n\r\n').encode() \
        + encoded + b"--b--\r\n"


@pytest.mark.e2e
async def test_a_large_message_between_small_ones_is_ticketed_once(
        tmp_path: Path, dovecot: DovecotServer, imap_account: ImapAccount,
        smtp_sink: SmtpSink) -> None:
    attachment = os.urandom(3_000_000)  # a 4 MB message: fetched and parsed on its own
    raws = [mail("small 1", message_id="<small-1@x>"),
            large_request("<large@x>", attachment),
            mail("small 2", message_id="<small-2@x>")]
    for raw in raws:
        await asyncio.to_thread(dovecot.append, imap_account, raw)
    config = write_daemon_config(
        tmp_path / "mailgate.toml", sink=smtp_sink, acks_per_sender_per_hour=1000,
        mailboxes=[imap_mailbox("it", imap_account, tmp_path / "imap.secret",
                                poll_interval="1s")])
    setup = load_setup(config)
    async with Daemon(setup.config, setup.directory) as daemon:
        deadline = time.monotonic() + 60
        while (count := _tickets(database(daemon.config.state_dir))) < 3:
            assert time.monotonic() < deadline, f"{count} of 3 ticketed"
            await asyncio.sleep(0.2)
    target = database(daemon.config.state_dir)
    [(body, size)] = query(target, "SELECT body, size FROM messages WHERE message_id = "
                           "'large@x'")
    files = query(target, "SELECT filename, size FROM attachments")
    position = scalar(target, "SELECT last_uid FROM mailboxes")
    assert body.strip() == "The dump is attached." and size == len(raws[1])
    assert files == [("dump.bin", len(attachment))]
    assert position == 3


def _tickets(target: Path | str) -> int:
    return int(scalar(target, "SELECT COUNT(*) FROM tickets"))
