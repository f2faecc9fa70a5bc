"""Reading fetched mail in another process (intake/reading.py): the same result as reading
it inline, and a lost process costs nothing but the inline reading of one group."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from mailgate.core.mime.files import extract
from mailgate.core.mime.largemail import LARGE
from mailgate.core.mime.parse import parse
from mailgate.intake.read import Asked, read_group, read_mail
from mailgate.intake.reading import READ_AHEAD_BYTES, Reader, ahead_of
from mailgate.outbound.compose import RelayParts, relay_parts
from mailgate.storage.attachments import AttachmentStore
from mailgate.storage.packing import pack
from tests.factories import IT, Harness, harness, mail

LIMIT = 200_000
ASKED = Asked(LIMIT, 10 * 1024 * 1024)


def with_attachment(i: int) -> bytes:
    data = base64.encodebytes(bytes(range(256)) * 8).decode().replace("\n", "\r\n")
    return (f"From: Ann <ann{i}@example.com>\r\nTo: it-help@example.com\r\n"
            f"Subject: log {i}\r\nMessage-ID: <att-{i}@example.com>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain; charset=utf-8\r\n\r\nSee the log.\r\n--b\r\n"
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="log-{i}.bin"\r\n\r\n{data}--b--\r\n'
            ).encode()


def with_two_files(first: bytes, second: bytes) -> bytes:
    def part(name: str, data: bytes) -> str:
        encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
        return ("--b\r\nContent-Type: application/octet-stream\r\n"
                "Content-Transfer-Encoding: base64\r\n"
                f'Content-Disposition: attachment; filename="{name}"\r\n\r\n{encoded}')
    return ("From: Ann <ann@example.com>\r\nTo: it-help@example.com\r\nSubject: two files\r\n"
            "Message-ID: <two@example.com>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain; charset=utf-8\r\n\r\nTwo files.\r\n"
            f"{part('a.bin', first)}{part('b.bin', second)}--b--\r\n").encode()


MAILS = [mail(f"request {i}", message_id=f"<r{i}@example.com>") for i in range(3)] + [
    with_attachment(1),
    b"\x00\xff not mail at all \r\n\r\n\xfe",
    mail("=?utf-8?q?caf=C3=A9?=", body="d\xe9j\xe0 vu".encode("latin-1").decode("latin-1")),
]


@pytest.fixture
async def reader() -> AsyncIterator[Reader]:
    reader = Reader(1)
    yield reader
    reader.close()


def test_reading_is_parsing_extracting_and_packing() -> None:
    for raw, read in zip(MAILS, read_group(MAILS, ASKED), strict=True):
        assert read.msg == parse(raw, LIMIT)
        assert read.packed == pack(raw)
        assert read.asked == ASKED
        expected = extract(raw) if read.msg and read.msg.attachments else None
        assert read.parts == (tuple(expected) if expected is not None else None)
    with_file = read_mail(with_attachment(2), ASKED)
    assert with_file.parts  # the attachment, decoded
    assert with_file.relay == relay_parts(with_attachment(2), ASKED.relay_limit)
    assert with_file.relay and with_file.relay.parts  # and as the MIME part to relay
    assert read_mail(MAILS[0], ASKED).relay is None  # a single text body has none


async def test_a_reading_process_reads_what_inline_reading_reads(reader: Reader) -> None:
    fetched = dict(enumerate(MAILS, start=10))
    reads = await reader.read(fetched, ASKED)
    assert sorted(reads) == sorted(fetched)
    for uid, raw in fetched.items():
        assert reads[uid] == read_mail(raw, ASKED)


async def test_large_mail_and_no_processes_are_left_to_the_pipeline(reader: Reader) -> None:
    big = mail("big", body="x" * (LARGE + 10))
    assert list(await reader.read({1: big, 2: MAILS[0]}, ASKED)) == [2]
    assert await Reader(0).read({1: MAILS[0]}, ASKED) == {}


async def test_a_killed_reading_process_costs_one_inline_group(reader: Reader) -> None:
    await reader.warm()
    pool = reader._pool
    assert pool is not None
    for pid in list(pool._processes):  # the OOM killer, an admin's kill -9
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    assert await reader.read({1: MAILS[0]}, ASKED) == {}  # read inline by the pipeline
    again = await reader.read({1: MAILS[0]}, ASKED)  # a new process for the next group
    assert again[1].msg == parse(MAILS[0], LIMIT)
    assert reader._pool is not pool


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await harness(tmp_path, acks_per_hour=1000)
    yield h
    await h.store.close()


async def test_the_pipeline_stores_the_same_from_a_reading_as_inline(h: Harness) -> None:
    raws = [with_attachment(i) for i in range(4)]
    async with h.store.transaction() as tx:
        for i, raw in enumerate(raws):
            read = read_mail(raw, h.pipeline.reading) if i % 2 else None
            assert (await h.pipeline.handle(tx, raw, IT, read)).action == "ticket"
    stored = await h.rows("SELECT t.ref, a.filename, a.size, a.sha256 FROM attachments a "
                          "JOIN tickets t ON t.id = a.ticket ORDER BY t.ref")
    assert [(ref, name) for ref, name, _, _ in stored] == [
        (f"IT-{1001 + i}", f"log-{i}.bin") for i in range(4)]
    assert len({(size, digest) for _, _, size, digest in stored}) == 1  # same bytes kept
    packed = await h.rows("SELECT raw FROM messages ORDER BY id")
    assert [row[0] for row in packed] == [pack(raw) for raw in raws]


async def test_a_reading_with_another_body_limit_is_not_used(h: Harness) -> None:
    raw = mail("long", body="word " * 100)
    # Read before a reload changed [limits] max_body_chars.
    stale = read_mail(raw, replace(h.pipeline.reading, body_limit=10))
    async with h.store.transaction() as tx:
        await h.pipeline.handle(tx, raw, IT, stale)
    [(text,)] = await h.rows("SELECT body FROM messages")
    assert len(text) > 10


async def test_a_machine_without_processes_reads_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(38, "Function not implemented")  # sem_open in a tight sandbox

    monkeypatch.setattr("mailgate.intake.reading.ProcessPoolExecutor", refused)
    reader = Reader(1)
    assert await reader.read({1: MAILS[0]}, ASKED) == {}
    assert reader.workers == 0  # not tried again for every group


async def test_the_pipeline_routes_by_the_searches_done_ahead(h: Harness) -> None:
    # The example's "locked-out" rule searches the subject; the reading process's answer
    # is used as it is (here: a match the subject alone would not give).
    raw = mail("Printer jammed", message_id="<ahead@example.com>")
    read = read_mail(raw, h.pipeline.reading)
    assert read.searched and not any(read.searched.values())
    said_yes = replace(read, searched=dict.fromkeys(read.searched, True))
    async with h.store.transaction() as tx:
        await h.pipeline.handle(tx, raw, IT, said_yes)
    assert await h.rows("SELECT priority FROM tickets") == [("high",)]


async def test_the_team_notification_relays_the_parts_read_ahead(h: Harness) -> None:
    raw = with_attachment(7)
    read = read_mail(raw, h.pipeline.reading)
    marked = RelayParts((b"Content-Type: text/plain\r\n\r\nrelayed from the reading\r\n",), ())
    async with h.store.transaction() as tx:
        await h.pipeline.handle(tx, raw, IT, replace(read, relay=marked))
    notices = await h.rows("SELECT raw FROM outbox WHERE kind = 'notify-team'")
    assert notices and all(b"relayed from the reading" in row[0] for row in notices)


def test_what_is_read_ahead_is_bounded_per_group() -> None:
    mails = {uid: b"x" * (700 * 1024) for uid in range(1, 6)}  # 3.5 MB in all
    mails[6] = b"x" * (LARGE + 1)
    mails[7] = MAILS[0]
    chosen = ahead_of(mails)
    assert list(chosen) == [1, 2, 7]  # 1.4 MB + a small one; the third would pass 2 MB
    assert sum(map(len, chosen.values())) <= READ_AHEAD_BYTES


async def test_groups_are_read_inline_while_the_process_starts(reader: Reader) -> None:
    warming = asyncio.create_task(reader.warm())
    await asyncio.sleep(0)
    assert await reader.read({1: MAILS[0]}, ASKED) == {}  # not held up by the start
    await warming
    assert list(await reader.read({1: MAILS[0]}, ASKED)) == [1]


def test_a_reading_process_ends_with_the_daemon_that_started_it(tmp_path: Path) -> None:
    # A stand-in daemon starts its reading process, says its pid, and is SIGKILLed.
    script = tmp_path / "daemon.py"
    script.write_text(
        "import asyncio, os, sys\n"
        "from mailgate.intake.reading import Reader\n"
        "async def main():\n"
        "    reader = Reader(1)\n"
        "    await reader.warm()\n"
        "    print(*reader._pool._processes, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n")
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                          cwd=Path(__file__).resolve().parent.parent) as daemon:
        assert daemon.stdout is not None
        [child] = [int(pid) for pid in daemon.stdout.readline().split()]
        assert _alive(child)
        daemon.kill()
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the reading process outlived its daemon"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its parent (init here) has to reap it


def test_a_reading_stores_the_attachments_the_pipeline_will_keep(tmp_path: Path) -> None:
    first, second = b"first file " * 100, b"second file " * 100
    asked = replace(ASKED, attachment_limit=len(first) + 10)  # room for the first only
    read = read_mail(with_two_files(first, second), asked, str(tmp_path))
    store = AttachmentStore(tmp_path)
    assert read.stored_in == str(tmp_path)
    assert read.stored[0] == hashlib.sha256(first).hexdigest()
    assert store.read(read.stored[0]) == first  # durable, under its content's name
    assert read.stored[1] is None  # the pipeline will drop it: not written
    assert store.read(hashlib.sha256(second).hexdigest()) is None
    assert read_mail(with_two_files(first, second), asked).stored == ()  # no directory


def test_a_part_that_cannot_be_stored_ahead_is_left_to_the_pipeline(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    read = read_mail(with_attachment(3), replace(ASKED, attachment_limit=LIMIT),
                     str(not_a_directory))
    assert read.parts and read.stored == (None,)


@pytest.mark.sqlite_only("attachments are files on SQLite, rows on PostgreSQL")
async def test_the_pipeline_keeps_the_files_stored_ahead(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    files = h.store.attachments()
    assert isinstance(files, AttachmentStore)
    raw = with_attachment(4)
    read = read_mail(raw, h.pipeline.reading, str(files.root))
    assert read.stored and read.stored[0]

    def no_second_write(self: AttachmentStore, data: bytes) -> str:
        raise AssertionError("stored again")

    monkeypatch.setattr(AttachmentStore, "put", no_second_write)
    async with h.store.transaction() as tx:
        assert (await h.pipeline.handle(tx, raw, IT, read)).action == "ticket"
    assert await h.rows("SELECT filename, sha256 FROM attachments") == [
        ("log-4.bin", read.stored[0])]
    assert files.read(read.stored[0]) == read.parts[0].data


@pytest.mark.sqlite_only("attachments are files on SQLite, rows on PostgreSQL")
async def test_files_stored_elsewhere_or_not_at_all_are_stored_by_the_pipeline(
        h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = h.store.attachments()
    assert isinstance(files, AttachmentStore)
    written: list[bytes] = []
    put = AttachmentStore.put

    def counted(self: AttachmentStore, data: bytes) -> str:
        written.append(data)
        return put(self, data)

    elsewhere = read_mail(with_attachment(5), h.pipeline.reading, str(tmp_path / "other"))
    failed = replace(read_mail(with_attachment(6), h.pipeline.reading, str(files.root)),
                     stored=(None,))
    monkeypatch.setattr(AttachmentStore, "put", counted)
    async with h.store.transaction() as tx:
        for raw, read in ((with_attachment(5), elsewhere), (with_attachment(6), failed)):
            assert (await h.pipeline.handle(tx, raw, IT, read)).action == "ticket"
    assert len(written) == 2
    for (digest,) in await h.rows("SELECT sha256 FROM attachments"):
        assert files.read(digest) is not None


async def test_a_reading_process_stores_ahead_in_the_directory_given(
        reader: Reader, tmp_path: Path) -> None:
    asked = replace(ASKED, attachment_limit=LIMIT)
    reads = await reader.read({1: with_attachment(8), 2: MAILS[0]}, asked, str(tmp_path))
    digest = reads[1].stored[0]
    assert digest and AttachmentStore(tmp_path).read(digest) == reads[1].parts[0].data
    assert reads[2].stored == ()


def slow_to_read(megabytes: float) -> bytes:
    """Mail whose reading costs about a second per megabyte: RFC 2231 parameters by the
    ten thousand (linear since linearparams.py, but slow per byte all the same)."""
    count = int(megabytes * 1024 * 1024 / 20)
    return (b"From: Ann <ann@example.com>\r\nTo: it-help@example.com\r\nSubject: params\r\n"
            b"Message-ID: <slow@example.com>\r\nContent-Type: text/plain; "
            + b"; ".join(b"name*%d*=utf-8''a" % i for i in range(count)) + b"\r\n\r\nbody\r\n")


async def test_a_mail_that_takes_too_long_to_read_is_given_up_the_rest_are_read(
        reader: Reader) -> None:
    asked = replace(ASKED, cpu_limit=0.05)
    slow = slow_to_read(0.5)
    assert ahead_of({2: slow}) == {2: slow}  # read ahead, in the reading process
    await reader.warm()
    reads = await reader.read({1: MAILS[0], 2: slow, 3: MAILS[1]}, asked)
    assert reads[2].msg is None and "more than 0.05 s of CPU" in reads[2].gave_up
    assert reads[1] == read_mail(MAILS[0], asked) and reads[3] == read_mail(MAILS[1], asked)
    assert not reads[1].gave_up
    # The same limit ends no ordinary reading, and the process is not left broken.
    assert (await reader.read({4: MAILS[2]}, asked))[4].msg == parse(MAILS[2], LIMIT)


async def test_a_mail_given_up_is_quarantined_with_the_reason_not_read_again(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = slow_to_read(0.2)
    [read] = read_group([slow], replace(h.pipeline.reading, cpu_limit=0.001))
    assert read.gave_up
    given_up = replace(read, asked=h.pipeline.reading)  # as the pipeline asked it
    monkeypatch.setattr("mailgate.intake.pipeline.parse", None)  # reading it again would fail
    async with h.store.transaction() as tx:
        outcome = await h.pipeline.handle(tx, slow, IT, given_up)
    assert outcome.action == "quarantined" and outcome.reason == read.gave_up
    assert await h.rows("SELECT raw, reason FROM quarantine") == [(slow, read.gave_up)]
    assert await h.count("tickets") == 0


def test_a_reading_process_imports_only_what_reading_needs() -> None:
    """What a spawned reading process imports: the parent's __main__ (`python -m mailgate`,
    run as __mp_main__) and intake/read.py. Not logging, asyncio, the directory, the
    templates or a database driver: each is memory in every reading process and start-up
    time before it reads its first group (28 MB and 269 modules with them, 22 and 172 without)."""
    code = ("import runpy, sys; runpy.run_module('mailgate.__main__', run_name='__mp_main__'); "
            "import mailgate.intake.read; print(*sorted(sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = set(done.stdout.split())
    assert "mailgate.core.mime.parse" in loaded  # the list is the one it should be
    unwanted = ("structlog", "asyncio", "mailgate.config.directory", "jinja2", "psycopg",
                "mailgate.service.log")
    assert not {m for m in loaded for u in unwanted if m == u or m.startswith(u + ".")}
