"""Push intake: an aiosmtpd SMTP or LMTP listener for MTAs that deliver to mailgate.

The reply to DATA is sent only after the message and its effects are committed, so a 250
means "stored": if storing fails the MTA hears 451 and keeps the message to retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailgate import metrics
from mailgate.config import ListenerConfig
from mailgate.directory import Directory
from mailgate.log import get_logger
from mailgate.model import Origin
from mailgate.parse import clean_address
from mailgate.pipeline import Pipeline
from mailgate.store import Store

log = get_logger("mailgate.smtp")


class PushHandler:
    def __init__(self, store: Store, pipeline: Pipeline, directory: Directory,
                 on_commit: Callable[[], None]) -> None:
        self.store = store
        self.pipeline = pipeline
        self.directory = directory
        self.on_commit = on_commit

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        addr = clean_address(address)
        if not self.directory.accepts(addr):  # a department's or a rule's address, or a default
            return f"550 5.1.1 <{address}>: no department here has this address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            async with self.store.transaction() as tx:
                # Inside the transaction: a reload swaps directory and pipeline only between
                # transactions, so the origin and the processing see the same setup.
                origin = self._origin(envelope)
                outcome = await self.pipeline.handle(tx, raw, origin)
        except Exception as exc:
            log.error("smtp.store_failed", error=f"{type(exc).__name__}: {exc}")
            return self._reply(server, envelope, "451 4.3.0 cannot store the message now; "
                                                 "try again later")
        self.on_commit()
        metrics.METRICS.message_in("smtp", outcome.action)
        detail = " ".join(outcome.tickets) or outcome.action
        return self._reply(server, envelope, f"250 2.0.0 OK {detail}")

    def _origin(self, envelope: Envelope) -> Origin:
        recipients = tuple(a for a in (clean_address(r) for r in envelope.rcpt_tos) if a)
        departments = tuple(dict.fromkeys(
            d.key for d in map(self.directory.department_for_address, recipients) if d))
        return Origin(source="smtp", departments=departments,
                      envelope_sender=envelope.mail_from or "",
                      envelope_recipients=recipients)

    @staticmethod
    def _reply(server: SMTP, envelope: Envelope, line: str) -> str:
        # LMTP answers DATA once per recipient; we store once for all of them.
        if isinstance(server, LMTP):
            return "\r\n".join([line] * max(1, len(envelope.rcpt_tos)))
        return line


async def start_listener(config: ListenerConfig, handler: PushHandler) -> asyncio.Server:
    protocol = LMTP if config.protocol == "lmtp" else SMTP

    def factory() -> SMTP:
        return protocol(handler, data_size_limit=config.max_message_size,
                        enable_SMTPUTF8=True, ident="mailgate", hostname="mailgate")

    server = await asyncio.get_running_loop().create_server(factory, config.host, config.port)
    log.info("smtp.listening", host=config.host, port=_port(server), protocol=config.protocol)
    return server


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1]) if server.sockets else 0
