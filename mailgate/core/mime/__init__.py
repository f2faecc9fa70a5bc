"""Reading mail: bytes to an Inbound, whatever the charset or damage. Pure; never raises."""

from mailgate.core.mime import linearaddresses, linearboundaries, linearparams, quotedprintable

# Before any mail is read: see linearparams.py, linearaddresses.py, linearboundaries.py,
# quotedprintable.py.
linearparams.install()
linearaddresses.install()
linearboundaries.install()
quotedprintable.install()
