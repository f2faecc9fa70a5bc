"""`mailgate check`, `status` and `quarantine`: is the setup sound, how is the running
service doing, and what became of the mail it could not process."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from datetime import UTC, datetime

from mailgate.cli.loading import directory_or_none, with_store
from mailgate.cli.output import print_json, print_table, say, say_lines
from mailgate.config.loader import Setup, load_setup
from mailgate.config.settings import config_path, load_config, unread_secrets
from mailgate.connect import tls
from mailgate.core.model import Origin
from mailgate.core.routing import envelope_departments
from mailgate.errors import ConfigError
from mailgate.storage import quarantine
from mailgate.storage.history import local_time
from mailgate.storage.leases import LeaseBook
from mailgate.storage.store import Store


def cmd_check(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    # Under systemd (ExecStartPre/ExecReload) the service's secrets are there: check them
    # as the daemon will read them; from an admin's shell, check what this shell has.
    mode = "read" if os.environ.get("INVOCATION_ID") else "available"
    try:
        setup = load_setup(path, secrets=mode)
    except ConfigError as exc:
        say_lines(exc.problems)
        return 1
    say(f"{path}: OK ({len(setup.directory.departments)} departments, "
        f"{len(setup.config.mailboxes)} mailboxes)")
    say_lines(f"  warning: {line}" for line in (*setup.warnings, *tls.warnings(setup.config)))
    unread = unread_secrets(path)
    if unread:
        say(f"  not read from this shell (the service reads them when it starts): "
            f"{', '.join(unread)}")
    if getattr(args, "connect", False):
        from mailgate.connect import check as connect_check

        return connect_check.run(setup.config, say)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mailgate.storage.queries import risk_horizons, sla_overview

    directory = directory_or_none(args)
    daemon = _daemon_status(args)

    async def work(store: Store) -> int:
        now = datetime.now(UTC)
        oldest = await store.oldest_queued_at()
        leases = await LeaseBook(store).all()
        load = await sla_overview(store, now, risk_horizons(directory, now))
        report = {
            "mailboxes": await store.mailbox_states(),
            "outbox": {"queued": 0, "sent": 0, "failed": 0, **await store.outbox_summary()},
            "outbox_oldest_queued": oldest.isoformat() if oldest else None,
            "quarantine_held": await store.quarantine_count(),
            # Which node holds what, by the database's clock ("live": not expired).
            "leases": [{"name": lease.name, "holder": lease.holder, "live": lease.live,
                        "expires_at": lease.expires_at.isoformat(),
                        "acquired_at": lease.acquired_at.isoformat()} for lease in leases],
            "open_tickets": {d.department: d.open for d in load},
            "sla": {d.department: {"open": d.open, "at_risk": d.at_risk,
                                   "breached": d.breached} for d in load},
            **daemon,
        }
        if args.json:
            print_json(report)
            return 0
        print_table(("MAILBOX", "STATE", "SINCE", "LAST MESSAGE", "LAST UID", "ERROR"), [
            (m["name"], m["state"], _when_ts(m["state_at"]), _when_ts(m["last_message_at"]),
             m["last_uid"], (m["last_error"] or "-")[:60]) for m in report["mailboxes"]])
        # The whole explanation (it names the setting to change); the column is cut short.
        say_lines(f"  {m['name']}: {m['last_error']}" for m in report["mailboxes"]
                  if m["last_error"] and m["state"] in ("error", "reconnecting"))
        outbox = report["outbox"]
        say(f"\noutbox      queued {outbox.get('queued', 0)} (oldest "
            f"{local_time(oldest) if oldest else '-'}), sent {outbox.get('sent', 0)}, "
            f"failed {outbox.get('failed', 0)}")
        say(f"quarantine  {report['quarantine_held']} held (mailgate quarantine list)")
        say_lines(_daemon_lines(daemon))
        say("")
        print_table(("LEASE", "NODE", "SINCE", "UNTIL"), [
            (lease.name, lease.holder, _to_the_second(lease.acquired_at),
             _to_the_second(lease.expires_at) + ("" if lease.live else " (expired)"))
            for lease in leases], empty="leases      none (no daemon has run yet)")
        say("")
        print_table(("DEPARTMENT", "OPEN", "AT RISK", "BREACHED"),
                    [(d.department, d.open, d.at_risk, d.breached) for d in load],
                    empty="open        none")
        if any(d.at_risk or d.breached for d in load):
            say("\nat risk: a warning fired or at most one business hour left "
                "(mailgate tickets --at-risk / --breached lists them)")
        return 0

    return with_store(args, work)


def _daemon_status(args: argparse.Namespace) -> dict:
    """The push listener and the last reload: as the running daemon wrote them to
    <state>/daemon-status.json, else the listener as the config sets it."""
    from mailgate.service.daemon import STATUS_FILE

    config = load_config(config_path(args.config), secrets="none")
    try:
        written = json.loads((config.state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        written = {}
    running = written.get("running") is True
    listener = written.get("listener") if running else None
    if listener is None and config.listener is not None:
        listener = {"listen": f"{config.listener.host}:{config.listener.port}",
                    "protocol": config.listener.protocol}
    if listener is not None:
        listener = {"listen": listener.get("listen"), "protocol": listener.get("protocol"),
                    "listening": running and written.get("listener") is not None}
    return {"daemon_running": running, "listener": listener,
            "last_reload": written.get("last_reload") if running else None}


def _daemon_lines(daemon: dict) -> list[str]:
    listener = daemon["listener"]
    if listener is None:
        lines = ["listener    off"]
    else:
        state = "listening" if listener["listening"] else "not listening (daemon not running)"
        lines = [f"listener    {listener['listen']}, protocol {listener['protocol']}, {state}"]
    reload = daemon["last_reload"]
    if reload:
        result = "ok" if reload.get("ok") else f"failed: {reload.get('problem')}"
        lines.append(f"reload      last {reload.get('at')}, {result}")
    elif daemon["daemon_running"]:
        lines.append("reload      none since the daemon started")
    return lines


def _to_the_second(moment: datetime) -> str:
    """Local time with seconds: leases last seconds, not minutes."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _when_ts(value: float | None) -> str:
    return local_time(datetime.fromtimestamp(value, UTC)) if value else "-"


def cmd_quarantine(args: argparse.Namespace) -> int:
    async def work(store: Store) -> int:
        if args.action == "list":
            entries = await store.quarantined()
            if args.json:
                rows = [dataclasses.asdict(e) | {"at": e.at.isoformat()} for e in entries]
                print_json(rows)
                return 0
            print_table(("ID", "AT", "SOURCE", "FROM", "SIZE", "REASON"),
                        [(e.id, local_time(e.at), e.source, e.sender, e.size, e.reason[:60])
                         for e in entries])
            return 0
        if args.id is None:
            say(f"mailgate quarantine {args.action} needs an ID (see quarantine list)",
                file=sys.stderr)
            return 2
        return await _quarantine_action(store, args)

    return with_store(args, work)


async def _quarantine_action(store: Store, args: argparse.Namespace) -> int:
    held = await quarantine.entry(store, args.id)
    if held is None:
        say(f"no quarantine entry {args.id}", file=sys.stderr)
        return 1
    if args.action == "show":
        envelope = ([f"envelope: MAIL FROM:<{held.envelope_sender}> RCPT TO:"
                     + ",".join(f"<{r}>" for r in held.envelope_recipients)]
                    if held.envelope_sender is not None else [])
        say_lines([f"quarantine {args.id} ({held.status}) from {held.source}",
                   f"reason: {held.reason}", *envelope, ""])
        say(held.raw[:20000].decode("utf-8", "replace"), end="")
        return 0
    if args.action == "drop":
        await quarantine.drop(store, args.id)
        say(f"quarantine {args.id} dropped")
        return 0
    if held.status != "held":
        say(f"quarantine {args.id} is {held.status}; only held entries can be retried",
            file=sys.stderr)
        return 1
    return await _retry(store, args, held)


async def _retry(store: Store, args: argparse.Namespace, held: quarantine.HeldMail) -> int:
    """Run the message through the pipeline again, e.g. after fixing the directory: from
    where it came, with the envelope it came with (MAIL FROM:<> makes pushed mail
    automatic, RCPT TO routes it), which the directory of now maps to departments."""
    from mailgate.intake.pipeline import Pipeline, PipelineSettings
    from mailgate.service import keyfile
    from mailgate.service.daemon import system_clock

    setup = load_setup(config_path(args.config), secrets="none")
    settings = PipelineSettings.from_config(setup.config,
                                            keyfile.ring_for(setup.config, system_clock()))
    pipeline = Pipeline(setup.directory, setup.renderer, settings,
                        system_clock)
    origin = _origin_of(setup, held)
    async with store.transaction() as tx:
        await quarantine.mark_retried(tx, args.id)
        outcome = await pipeline.handle(tx, held.raw, origin)
        if outcome.quarantine not in (None, args.id):  # held again: keep one entry, not two
            await quarantine.held_again(tx, args.id, outcome.quarantine, outcome.reason)
    say(f"quarantine {args.id}: {outcome.action} {' '.join(outcome.tickets)} {outcome.reason}")
    return 0 if outcome.action != "quarantined" else 1


def _origin_of(setup: Setup, held: quarantine.HeldMail) -> Origin:
    if held.envelope_sender is not None:  # pushed: its departments are its recipients'
        return Origin(held.source, envelope_departments(setup.directory,
                                                        held.envelope_recipients),
                      held.envelope_sender, held.envelope_recipients)
    name = held.source.removeprefix("imap:")
    return Origin(held.source, tuple(b.department for b in setup.config.mailboxes
                                     if b.name == name))
