"""The orphan sweep: files no row names go once they are a day old; named, recent and
in-flight files stay."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from mailgate.storage.attachments import AttachmentStore
from mailgate.workers.attachment_sweep import MIN_AGE, AttachmentSweeper
from tests.factories import harness, mail

DAY = 86400.0


def attachment_mail(payload: bytes) -> bytes:
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Disposition: attachment; filename=\"log.bin\"\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n"
            f"{base64.b64encode(payload).decode()}\r\n--{boundary}--\r\n")
    return mail(headers={"MIME-Version": "1.0",
                         "Content-Type": f'multipart/mixed; boundary="{boundary}"'},
                body=body)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.sqlite_only("attachments are files on SQLite, rows on PostgreSQL")
async def test_sweep_deletes_only_old_unnamed_files(tmp_path: Path) -> None:
    h = await harness(tmp_path)
    try:
        await h.deliver(attachment_mail(b"kept by a ticket"))
        [(digest,)] = await h.rows("SELECT sha256 FROM attachments")
        root = tmp_path / "state" / "attachments"
        files = AttachmentStore(root)
        named = files.path(digest)
        orphan = files.path(files.put(b"from a crash before the commit"))
        recent = files.path(files.put(b"written a minute ago, row not yet committed"))
        leftover = named.parent / ".abc.123.tmp"
        leftover.write_bytes(b"half")
        for path in (named, orphan, leftover):
            age(path, 2 * DAY)
        age(recent, 60)

        swept = await AttachmentSweeper(h.store, AttachmentStore(root)).run_once()

        assert (swept.files, swept.bytes) == (2, len(b"from a crash before the commit") + 4)
        assert named.exists() and recent.exists()
        assert not orphan.exists() and not leftover.exists()
        again = await AttachmentSweeper(h.store, AttachmentStore(root)).run_once()
        assert again.files == 0
    finally:
        await h.store.close()


@pytest.mark.sqlite_only("attachments are files on SQLite, rows on PostgreSQL")
async def test_reusing_an_old_orphan_makes_it_recent_again(tmp_path: Path) -> None:
    """The same content arriving again reuses the file: put() touches it, so the sweep
    cannot delete it between the write and the commit of the row that names it."""
    h = await harness(tmp_path)
    try:
        root = tmp_path / "state" / "attachments"
        files = AttachmentStore(root)
        orphan = files.path(files.put(b"the same log twice"))
        age(orphan, 2 * DAY)
        await h.deliver(attachment_mail(b"the same log twice"))
        assert time.time() - orphan.stat().st_mtime < MIN_AGE
        assert (await AttachmentSweeper(h.store, AttachmentStore(root)).run_once()).files == 0
        assert orphan.exists()
    finally:
        await h.store.close()


async def test_sweep_without_an_attachments_folder_does_nothing(tmp_path: Path) -> None:
    h = await harness(tmp_path)
    try:
        swept = await AttachmentSweeper(h.store, AttachmentStore(tmp_path / "none")).run_once()
        assert swept.files == 0
    finally:
        await h.store.close()
