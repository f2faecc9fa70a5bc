"""How a connection to PostgreSQL notices a server that has gone without a word.

A database host that loses power, or a network that drops everything, sends no reset: the
connection looks open, and a statement waits for its answer for as long as the kernel
keeps the socket -- hours with the system's defaults (first keepalive probe after 2 h).
mailgate then holds a mailbox batch, an outbox claim or a lease renewal for that long.

So unless the URL says otherwise, libpq is asked to probe an idle connection after 30 s
(3 probes 10 s apart) and to give up on data the server has not acknowledged for 60 s; a
connection attempt gives up after 10 s. The statement then fails as a lost connection,
which every caller already handles: the transaction is rolled back, the connection opened
anew, the work retried. Over a unix socket libpq ignores the TCP options.
"""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

LINK_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",  # milliseconds
}
# The options libpq also reads from the environment: a value there is the admin's choice.
_FROM_ENVIRONMENT = {"connect_timeout": "PGCONNECT_TIMEOUT"}


def link_options(url: str) -> dict[str, str]:
    """The LINK_DEFAULTS that neither the URL nor the environment sets."""
    given = conninfo_to_dict(url)
    return {name: value for name, value in LINK_DEFAULTS.items()
            if name not in given and not _set_in_environment(name)}


def _set_in_environment(name: str) -> bool:
    variable = _FROM_ENVIRONMENT.get(name)
    return variable is not None and variable in os.environ
