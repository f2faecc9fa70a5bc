"""A ticket as the conversation's decisions see it: the list view's fields and more."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from mailgate.core.model import Ticket


@dataclass(frozen=True, slots=True)
class TicketState(Ticket):
    """A ticket with what the conversation needs beyond the list view's fields."""

    assignee: str | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    survey_at: datetime | None = None
    rating: int | None = None
    cc: tuple[str, ...] = ()  # the request's Cc (not us, not the requester), at most MAX_CC

    @classmethod
    def of(cls, ticket: Ticket, **extra: Any) -> TicketState:
        """The ticket's fields and these; a ticket just created has only its Cc."""
        return cls(**{f.name: getattr(ticket, f.name) for f in fields(Ticket)}, **extra)


MAX_CC = 20  # addresses of a request's Cc kept on its ticket
