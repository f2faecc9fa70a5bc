"""Mail going out: composing, the outbox and the transports."""
