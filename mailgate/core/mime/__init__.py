"""Reading mail: bytes to an Inbound, whatever the charset or damage. Pure; never raises."""

from mailgate.core.mime import linearaddresses, linearparams

# Before any mail is read: see linearparams.py and linearaddresses.py.
linearparams.install()
linearaddresses.install()
