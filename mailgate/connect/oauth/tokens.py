"""The token file of the generic refresh-token flow: `<state>/oauth/<profile>--<user>.json`.

Many providers rotate refresh tokens: the answer to a refresh carries a new one and the
old one stops working soon after. Losing the new one (a crash between receiving and
storing it) locks mailgate out until someone logs in again -- the silent expiry helpdesk
trackers are full of. So the file is written before the new access token is used: a temp
file in the same directory, fsync, rename, fsync of the directory. An flock serialises
refreshes between the daemon's threads and `mailgate check --connect`/`oauth login`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mailgate.config.safefile import read_regular

MAX_TOKEN_FILE = 256 * 1024
DEFAULT_LIFETIME = 3600.0  # seconds, when a token endpoint leaves expires_in out


@dataclass(frozen=True)
class TokenSet:
    refresh_token: str
    access_token: str | None = None
    expires_at: float = 0.0  # Unix seconds
    obtained_at: float = 0.0  # when the refresh token was first stored
    rotated_at: float | None = None  # when the provider last handed out a new one
    scope: str = ""

    def valid_at(self, now: float) -> bool:
        return bool(self.access_token) and self.expires_at > now


def after_refresh(old: TokenSet, answer: dict, now: float) -> TokenSet:
    """The token set after a token endpoint answered a refresh (pure).

    A new refresh token replaces the old one (rotation); none means the old one stays.
    """
    lifetime = _seconds(answer.get("expires_in"), DEFAULT_LIFETIME)
    new_refresh = answer.get("refresh_token")
    rotated = isinstance(new_refresh, str) and new_refresh and new_refresh != old.refresh_token
    return replace(old, access_token=str(answer["access_token"]), expires_at=now + lifetime,
                   refresh_token=new_refresh if rotated else old.refresh_token,
                   rotated_at=now if rotated else old.rotated_at,
                   scope=str(answer.get("scope") or old.scope))


def first_tokens(answer: dict, now: float) -> TokenSet:
    """The token set from a completed login (device code or authorization code)."""
    refresh = answer.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        raise ValueError("the token endpoint sent no refresh_token; add offline_access (or "
                         "your provider's equivalent) to scope")
    return TokenSet(refresh_token=refresh, access_token=str(answer.get("access_token") or ""),
                    expires_at=now + _seconds(answer.get("expires_in"), DEFAULT_LIFETIME),
                    obtained_at=now, scope=str(answer.get("scope") or ""))


def _seconds(value: object, default: float) -> float:
    try:
        return max(0.0, float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def token_path(token_dir: Path, profile: str, username: str) -> Path:
    return token_dir / f"{_safe(profile)}--{_safe(username)}.json"


def _safe(text: str) -> str:
    """A file-name-safe spelling: the user name is whatever the config says."""
    return "".join(c if c.isalnum() or c in "@._+-" else f"%{ord(c):02X}" for c in text)


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> TokenSet | None:
        try:
            data = json.loads(read_regular(self.path, MAX_TOKEN_FILE))
            return TokenSet(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise OSError(f"{self.path}: unreadable token file ({type(exc).__name__}); run "
                          f"mailgate oauth login again") from None

    def write(self, tokens: TokenSet) -> None:
        """Atomically: the old file or the new one, whole, whatever happens."""
        directory = self.path.parent
        _ensure_dir(directory)
        tmp = directory / f".{self.path.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(asdict(tokens), out)
                out.flush()
                os.fsync(out.fileno())
            _own_like(directory, tmp)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(directory)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held while reading, refreshing and writing: one refresh at a time, across
        threads (each opens its own descriptor) and processes."""
        _ensure_dir(self.path.parent)
        lock = self.path.with_suffix(".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _own_like(self.path.parent, lock)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _ensure_dir(directory: Path) -> None:
    """<state>/oauth, 0700, owned like the state directory (see _own_like)."""
    if directory.is_dir():
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _own_like(directory.parent, directory)


def _own_like(directory: Path, path: Path) -> None:
    # `mailgate oauth login` runs as root; the daemon (DynamicUser) must still read it.
    owner = os.stat(directory)
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.chown(path, owner.st_uid, owner.st_gid)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
