"""The reply-key secrets on disk: `<state>/reply-keys.json`, mode 0600.

Created with one random secret the first time the daemon (or `mailgate keys`) needs it.
`rotate` puts a new secret first; the old one is retired, not deleted: it keeps proving the
keys it signed until they have all expired (retired_at + ttl), then `load` leaves it out and
the next rotation drops it. Written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime, timedelta
from pathlib import Path

from mailgate.config.settings import Config
from mailgate.core.replykey import KeyRing
from mailgate.service.startup import StartError

FILENAME = "reply-keys.json"


class KeyFileError(StartError):
    """The secret file cannot be used: the daemon (and any command that needs the keys)
    stops with this one line instead of a traceback."""


def ring_for(config: Config, now: datetime) -> KeyRing:
    """The ring the pipeline signs and checks with, for this configuration."""
    return load(config.state_dir, timedelta(days=config.security.reply_key_days), now)


def load(state_dir: Path, ttl: timedelta, now: datetime, create: bool = True) -> KeyRing:
    """The ring of secrets still valid at `now`; creates the file when missing (unless
    `create` is false: then an empty ring, which signs and proves nothing)."""
    path = state_dir / FILENAME
    if not path.exists():
        if not create:
            return KeyRing((), ttl)
        _write(path, [_new(now)])
    entries = _read(path)
    valid = [(e["id"], bytes.fromhex(e["secret"])) for e in entries
             if e.get("retired_at") is None or e["retired_at"] + ttl.total_seconds()
             >= now.timestamp()]
    if not valid:
        raise KeyFileError(f"{path}: no usable secret; run `mailgate keys rotate`")
    return KeyRing(tuple(valid), ttl)


def rotate(state_dir: Path, ttl: timedelta, now: datetime) -> tuple[str, int]:
    """A new signing secret; returns its id and how many older ones still verify."""
    path = state_dir / FILENAME
    entries = _read(path) if path.exists() else []
    for entry in entries:
        entry.setdefault("retired_at", None)
        if entry["retired_at"] is None:
            entry["retired_at"] = now.timestamp()
    kept = [e for e in entries if e["retired_at"] + ttl.total_seconds() >= now.timestamp()]
    new = _new(now)
    _write(path, [new, *kept])
    return new["id"], len(kept)


def _new(now: datetime) -> dict:
    return {"id": secrets.token_hex(3), "secret": secrets.token_hex(32),
            "created_at": now.timestamp(), "retired_at": None}


def _read(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text("utf-8"))
        entries = data["keys"]
        for entry in entries:
            bytes.fromhex(entry["secret"])
            str(entry["id"])
        return entries
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path}: unreadable reply-key file ({exc}); restore it from a "
                           "backup, or delete it to start with a new secret (keys already "
                           "sent stop working)") from exc


def _write(path: Path, entries: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"keys": entries}, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    owner = os.stat(path.parent)
    if os.geteuid() == 0 and owner.st_uid != 0:
        # An admin rotating as root must leave the file readable by the service's user
        # (systemd's DynamicUser owns the state directory).
        os.chown(tmp, owner.st_uid, owner.st_gid)
    os.replace(tmp, path)
