"""One budget for automatic mail per recipient mailbox and per recipient domain.

Acknowledgements, command replies and refusals, not-kept notices, thanks and "how to act"
notices are automatic mail a stranger can cause by writing to us, with any From: line. So
whoever the address, mailgate sends it at most `per_mailbox` such mails an hour, counted on
the mailbox (plus tag removed, case folded: victim+1@ and Victim+2@ are one budget), and at
most `per_domain` an hour to a domain outside the organisation. The request itself is
always ticketed; only the automatic answer is left out (and recorded on the ticket).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.core.addresses import budget_mailbox, domain_of, within


@dataclass(frozen=True, slots=True)
class MailBudget:
    per_mailbox: int = 10
    per_domain: int = 100
    own_domains: frozenset[str] = frozenset()  # the organisation's: no domain limit

    def keys(self, recipient: str) -> tuple[str, str | None]:
        """The mailbox and (outside the organisation) the domain a mail draws on."""
        domain = domain_of(recipient)
        return budget_mailbox(recipient), None if within(domain, self.own_domains) else domain

    def judge(self, recipient: str, to_mailbox: int, to_domain: int) -> str | None:
        """Why no more automatic mail may go to `recipient`, given what went to its mailbox
        and its domain in the last hour, or None."""
        mailbox, domain = self.keys(recipient)
        if to_mailbox >= self.per_mailbox:
            return f"rate limit: {to_mailbox} automatic mails to {mailbox} in the last hour"
        if domain is not None and to_domain >= self.per_domain:
            return f"rate limit: {to_domain} automatic mails to @{domain} in the last hour"
        return None
