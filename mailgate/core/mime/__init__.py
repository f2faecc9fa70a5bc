"""Reading mail: bytes to an Inbound, whatever the charset or damage. Pure; never raises."""
