"""Reading mail: bytes to an Inbound, whatever the charset or damage. Pure; never raises."""

from mailgate.core.mime import linearaddresses, linearboundaries, linearparams

# Before any mail is read: see linearparams.py, linearaddresses.py, linearboundaries.py.
linearparams.install()
linearaddresses.install()
linearboundaries.install()
