"""Reading mail: bytes to an Inbound, whatever the charset or damage. Pure; never raises."""

from mailgate.core.mime import linearparams

linearparams.install()  # before any mail is read: see linearparams.py
