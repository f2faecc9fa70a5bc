"""Reading a file a setting names, without hanging or filling memory.

A setting such as `[directory] path` or `password_file` can name anything: /dev/zero
(never ends, memory grows), a FIFO (open blocks until a writer comes), a directory, a huge
log file. Only a regular file of bounded size is read; anything else is an OSError whose
strerror says what the path is, so callers report it as they report a missing file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MAX_TOML_BYTES = 64 * 1024 * 1024  # a people file from a large HR export fits easily
MAX_SECRET_BYTES = 64 * 1024


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at path (symlinks followed), at most limit of them."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"not a regular file but {_kind(mode)}; "
                          f"name a file", str(path))
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit // 1024} kB; is this the right "
                      f"file?", str(path))
    return data


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device (such as /dev/zero)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def decode_error(path: Path, exc: UnicodeDecodeError) -> str:
    """One line for a file that is not UTF-8: where the first bad byte is."""
    data = exc.object if isinstance(exc.object, bytes) else bytes(exc.object)
    line = data.count(b"\n", 0, exc.start) + 1
    return (f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            f"save it as UTF-8")
