"""One small exception hierarchy: callers decide retry, give up or quarantine by type.

Transient errors subclass ConnectionError so code that already retries network errors
retries them too; permanent errors are recorded and not retried; BadMessage sends the raw
mail to quarantine.
"""


class MailgateError(Exception):
    """Base class of every error mailgate raises on purpose."""


class ConfigError(MailgateError):
    """The configuration or directory is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class TransientError(MailgateError, ConnectionError):
    """Worth retrying later with backoff (network down, server busy, 4xx reply)."""


class PermanentError(MailgateError):
    """Retrying will not help (5xx reply, bad credentials); record it and stop."""


class BadMessage(MailgateError, ValueError):
    """A message that cannot be processed; it goes to quarantine with this reason."""


class StartError(MailgateError):
    """The daemon (or a command that must not run beside it) cannot start; str() is the
    whole message for the admin, one line."""
