"""Threading hints and subject handling, and routing to departments."""

from __future__ import annotations

from mailgate.core.mime.parse import parse
from mailgate.core.model import Origin
from mailgate.core.routing import departments_for
from mailgate.tickets.conversation import clean_subject, tagged_subject, thread_hints
from tests.factories import example_directory, mail

PREFIXES = frozenset({"IT", "FAC"})


def test_tags_of_known_prefixes_only_in_subject_order() -> None:
    msg = parse(mail("Re: [fac-0042] and [IT-1001] and [HR-7] and [IT-1001]"))
    assert thread_hints(msg, PREFIXES).ticket_refs == ("FAC-42", "IT-1001")


def test_in_reply_to_first_then_references_newest_first_without_own_id() -> None:
    msg = parse(mail(message_id="<me@x>", headers={"In-Reply-To": "<parent@x>",
                                                   "References": "<root@x> <mid@x> <me@x>"}))
    assert thread_hints(msg, PREFIXES).message_ids == ("parent@x", "mid@x", "root@x")


def test_clean_subject_strips_prefixes_and_tags_repeatedly() -> None:
    assert clean_subject("Re: AW: [IT-1001] Fwd: Re[2]: Laptop") == "Laptop"
    assert clean_subject("   ") == "(no subject)"
    assert clean_subject("Readme file") == "Readme file"


def test_tagged_subject() -> None:
    assert tagged_subject(["IT-1001", "FAC-1001"], "Re: Laptop") == \
        "[IT-1001] [FAC-1001] Re: Laptop"


def test_routing_by_headers_plus_address_origin_and_default() -> None:
    directory = example_directory()
    it = Origin("imap:it", ("it",))
    to_both = parse(mail(to="facilities@example.com", cc="IT-Help+laptop@example.com"))
    assert departments_for(to_both, it, directory) == ["facilities", "it"]
    bcc = parse(mail(to="someone@example.com"))
    assert departments_for(bcc, Origin("imap:pay", ("payroll",)), directory) == ["payroll"]
    nowhere = parse(mail(to="someone@example.com"))
    assert departments_for(nowhere, Origin("smtp"), directory) == ["it"]  # default_department
