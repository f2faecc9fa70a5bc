"""How far a message's From: can be believed (pure; no I/O).

From: is whatever the sender typed. mailgate believes it only as far as configured:
- `trusted_domains` say which sender domains are the organisation's own; mail from any
  other domain is from an outsider, whatever else it claims;
- `authserv_id` names our own MTA's Authentication-Results (RFC 8601), read by the grammar
  (authres.py), never RFC 2047-decoded. Walking the headers from the end our MTA writes
  them (`authserv_position`: "top", as most MTAs prepend them, or "bottom", as Exim's
  add_header without :at_start: appends them), only the run carrying our id counts (an
  MTA may add several, one per filter); the first header with another id, or that does
  not parse, ends the run: headers further in may be the sender's. Our MTA writes on one
  side of the fields the sender writes (From, Date, Subject ...): a header with our id
  among them or on their far side makes the sender unverified (the MTA left the
  sender's in, or writes at the other end than configured). Our id counts only spelled
  as an MTA writes it and a stripping rule matches it (authres.leading_id: no comment
  before it, no escapes in it). A header with our id that does not parse, or of an
  unknown version, or that the usual stripping filter could not read (_filters_read),
  makes the sender unverified: our MTA said something we cannot read, maybe a fail, or
  the filter left a forged header in. So does a Received field between two headers with
  our id: one MTA hop writes its results above its own Received field or right below it,
  so the lower one was in the mail before that hop (an earlier hop's, or the sender's
  where the MTA strips nothing).
- In the counted headers, the sender is verified by `dmarc=pass` with `header.from` equal to
  the From: domain, or `dkim=pass` whose `header.d` (else the domain of `header.i`) is the
  From: domain or a parent of it, or `spf=pass` whose `smtp.mailfrom` domain is. A DMARC
  fail, or a DMARC result about another From: domain (the MTA read another From: than we
  did), overrides every pass. Mail whose From: carries no address or more than one is never
  verified: DMARC evaluators disagree about which address they checked.
- A DMARC fail about one of our From: domains (`dmarc_failed`) takes even a reply key's
  proof away: keys can leak with a forwarded copy of our mail; DMARC says who sent it.

The MTA must remove incoming Authentication-Results carrying our id (RFC 8601 section 5),
and must quote or escape what it copies into its own; nothing here can make up for that.

What a pass proves is not all of the mail (`mail_trust`). DKIM vouches for the body and
the fields its signature's h= lists, nothing more (RFC 6376 3.5, 5.4): whoever holds a copy
of a signed mail can send it again with another Subject tag, an added In-Reply-To or
References, another Message-ID, another Content-Type, or text appended beyond an l= limit,
and DKIM still passes. So a VERIFIED sender is REPLAYABLE unless the proof pins the mail:
- an aligned `spf=pass` (as above): the mail came from a server the From: domain
  authorises, our own; a copy sent from anywhere else does not pass, and whoever can
  send through those servers can forge a From: outright anyway;
- or an aligned `dkim=pass` whose signature covers every instance of every field of
  headernames.PINNING_FIELDS the mail has (a Message-ID among them) and signs all of the
  body (no l=). The signature that passed is the DKIM-Signature field whose d=, s= and b=
  match the result's header.d, header.s and header.b (RFC 8601 2.7.1, RFC 6008); when
  several could be it, each of them must cover. When one DKIM-Signature field does not
  parse (dkimsig.py), or the MTA and mailgate's parser do not see the fields alike, no
  DKIM pass pins: the one that passed may be one we cannot read.
- `dmarc=pass` alone pins nothing: it rests on SPF or on DKIM, and does not say which.

Email commands (#resolve, #assign ...) are accepted only from senders `may_command`
approves; everything else is still a ticket or a reply, just never an instruction.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mailgate.core import authres, dkimsig
from mailgate.core.addresses import fold_case, within
from mailgate.core.authres import AuthResults, Result
from mailgate.core.dkimsig import Signature
from mailgate.core.headernames import PINNING_FIELDS
from mailgate.core.model import Inbound

# RFC 8601's and RFC 8904's property types; the bytes of one header OpenDKIM parses.
_PTYPES = frozenset({"smtp", "header", "body", "policy", "dns"})
_READ_BY_FILTERS = 4096


class Trust(StrEnum):
    OUTSIDER = "outsider"  # the From: domain is not one of ours
    UNVERIFIED = "unverified"  # one of ours, but our MTA did not vouch for it
    DOMAIN = "domain"  # one of ours; no authserv_id configured, so the domain is all we have
    VERIFIED = "verified"  # one of ours and SPF/DKIM/DMARC passed per our own MTA
    # One of ours, and our MTA vouched for the sender, but not for what puts this copy of
    # the mail on its tickets or which text its commands are: it may be a replayed copy.
    REPLAYABLE = "replayable"


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    trusted_domains: frozenset[str] = frozenset()  # empty: every domain is ours
    authserv_id: str | None = None
    # Where our MTA writes its Authentication-Results: "top" (prepends them, as OpenDKIM
    # and OpenDMARC behind Postfix, Exim's add_header = :at_start:, rspamd's
    # milter_headers do) or "bottom" (appends them below the sender's fields: Exim's
    # add_header without :at_start:).
    authserv_position: str = "top"


def sender_trust(msg: Inbound, policy: TrustPolicy) -> Trust:
    if msg.sender is None:
        return Trust.OUTSIDER
    domain = _from_domain(msg.sender.addr)
    if policy.trusted_domains and not within(domain, policy.trusted_domains):
        return Trust.OUTSIDER
    if policy.authserv_id is None:
        return Trust.DOMAIN
    if msg.from_count == 1 and _verified(msg, policy, domain):
        return Trust.VERIFIED
    return Trust.UNVERIFIED


def mail_trust(msg: Inbound, policy: TrustPolicy) -> Trust:
    """What this copy of the mail proves, for the tickets it lands on and the commands
    in it: `sender_trust`, a VERIFIED sender REPLAYABLE where the proof does not pin the
    fields that choose the tickets and the text (see the module's docstring)."""
    trust = sender_trust(msg, policy)
    if trust is not Trust.VERIFIED or policy.authserv_id is None or msg.sender is None:
        return trust
    results = _counted(msg, policy) or []
    domain = _from_domain(msg.sender.addr)
    return Trust.VERIFIED if _pinned(msg, results, domain) else Trust.REPLAYABLE


def dmarc_failed(msg: Inbound, policy: TrustPolicy) -> bool:
    """Whether our own MTA says DMARC failed for the From: domain, one of ours: the mail
    did not come from our domain's servers, whatever else it carries. A reply key does
    not prove such a mail (tickets can leak keys: a member forwards our mail with its
    headers), so the pipeline drops its keys."""
    if msg.sender is None or policy.authserv_id is None:
        return False
    domain = _from_domain(msg.sender.addr)
    if policy.trusted_domains and not within(domain, policy.trusted_domains):
        return False
    results = _counted(msg, policy)
    return results is not None and any(_failed_for(r, domain) for r in results)


def may_command(trust: Trust) -> bool:
    return trust in (Trust.VERIFIED, Trust.DOMAIN)


def _verified(msg: Inbound, policy: TrustPolicy, domain: str) -> bool:
    results = _counted(msg, policy)
    if results is None or not domain.isascii():  # AR domains are ASCII; so must ours be
        return False
    if any(_vetoes(r, domain) for r in results):
        return False
    return any(_passes(r, domain) for r in results)


def _pinned(msg: Inbound, results: list[Result], domain: str) -> bool:
    if any(r.method == "spf" and _passes(r, domain) for r in results):
        return True  # the mail came from our domain's own servers, headers and all
    signatures = _signatures(msg)
    return signatures is not None and any(
        _covering(r, signatures, msg) for r in results
        if r.method == "dkim" and _passes(r, domain))


def _signatures(msg: Inbound) -> list[Signature] | None:
    """Every DKIM-Signature field, read; None when one does not parse, or the MTA read
    others than parse.py kept (a name with blanks before its colon, too many, too long):
    the one that passed could be one we cannot read."""
    if len(msg.dkim_signatures) != msg.field_counts.get("dkim-signature"):
        return None
    found = [dkimsig.parse(value) for value in msg.dkim_signatures]
    return None if None in found else [s for s in found if s is not None]


def _covering(result: Result, signatures: list[Signature], msg: Inbound) -> bool:
    """Whether the signature this pass is about covers the mail; every one it could be."""
    candidates = [s for s in signatures if _is_about(result, s)]
    return bool(candidates) and all(_covers(s, msg) for s in candidates)


def _is_about(result: Result, signature: Signature) -> bool:
    """Whether `result` can be about `signature`: each of header.d, header.s, header.i
    and header.b it gives matches (header.b: a prefix of b=, RFC 6008)."""
    for prop in result.properties:
        if prop.ptype != "header":
            continue
        if prop.property == "d" and _ascii_lower(prop.value) != signature.domain:
            return False
        if prop.property == "s" and _ascii_lower(prop.value) != signature.selector:
            return False
        if prop.property == "b" and not signature.b.startswith(prop.value):
            return False
        if prop.property == "i" and not _same_identity(prop.value, signature.identity):
            return False
    return True


def _same_identity(written: str, identity: str) -> bool:
    local, _, domain = written.rpartition("@")
    their_local, _, their_domain = identity.rpartition("@")
    return local == their_local and _ascii_lower(domain) == _ascii_lower(their_domain)


def _covers(signature: Signature, msg: Inbound) -> bool:
    """Every instance of every pinning field signed (a field absent from the mail need
    not be: this copy does not have it), a Message-ID among them, and all of the body.
    A count of -1 is a field parse.py and the MTA read differently."""
    counts = msg.field_counts
    if signature.body_length is not None or counts.get("message-id", 0) < 1:
        return False
    return all(0 <= counts.get(name, 0) <= signature.instances(name)
               for name in PINNING_FIELDS)


def _counted(msg: Inbound, policy: TrustPolicy) -> list[Result] | None:
    """Results of the run of our MTA's headers at the end it writes them (the leading run
    from the top, or the trailing run from the bottom); None when one of ours is
    unreadable, when one of ours lies among or on the far side of the sender's fields
    (From, Date, Subject ...: our MTA writes on one side of them all; one elsewhere is the
    sender's, which it failed to strip, or our MTA writes at the other end than
    configured), or when a Received field lies between two of the run: the lower one was
    in the mail before that hop, written by an earlier hop or by the sender, and which of
    them the MTA should have stripped cannot be told here."""
    assert policy.authserv_id is not None
    authserv_id = _ascii_lower(policy.authserv_id)
    top = policy.authserv_position != "bottom"
    headers = list(zip(msg.auth_results,
                       msg.auth_results_depths or (0,) * len(msg.auth_results),
                       msg.auth_results_sides or ((0, 0),) * len(msg.auth_results),
                       strict=False))
    if any(_is_ours(header, authserv_id) and (above if top else below)
           for header, _, (above, below) in headers):
        return None
    if not top and len(msg.auth_results_sides) > len(msg.auth_results):
        return None  # the bottom ones, ours among them, were not kept (parse keeps 10)
    counted: list[Result] = []
    run = headers if top else headers[::-1]
    for header, depth, _ in run:
        if not _is_ours(header, authserv_id):
            break
        if depth != run[0][1]:
            return None
        parsed = authres.parse(header)
        if parsed is None or not _filters_read(header, parsed):
            return None
        if parsed.version != 1:  # RFC 8601 is version 1; a later one may mean other things
            return None
        counted.extend(parsed.results)
    return counted


def _is_ours(header: str, authserv_id: str) -> bool:
    written_id = authres.leading_id(header)
    return written_id is not None and _ours(written_id, authserv_id)


def _filters_read(header: str, parsed: AuthResults) -> bool:
    """Whether the filter that strips forged headers could have read this one. OpenDKIM
    (RemoveARAll) leaves in what its parser refuses: a header longer than 4,096 bytes, a
    property type not registered. Such a header with our id may be a forged one it left."""
    return (len(header.encode("utf-8", "replace")) <= _READ_BY_FILTERS
            and all(p.ptype in _PTYPES for r in parsed.results for p in r.properties))


def _ours(written_id: str, authserv_id: str) -> bool:
    # ASCII case only: str.lower() would turn a KELVIN SIGN into "k", and the MTA that
    # strips forged headers carrying our id does not do that.
    return written_id.isascii() and _ascii_lower(written_id) == authserv_id


def _from_domain(addr: str) -> str:
    """The From: domain, ASCII case folded only: str.lower() made "wor\u212a.example"
    (KELVIN SIGN) the trusted "work.example", a domain the sender's is not."""
    return fold_case(addr.rpartition("@")[2])


def _ascii_lower(text: str) -> str:
    return text.lower() if text.isascii() else text


def _vetoes(result: Result, domain: str) -> bool:
    """A DMARC fail (for whichever From:), or any DMARC verdict about another From: domain."""
    if result.method != "dmarc":
        return False
    header_from = _domain_of(result, "header", "from", address=False)
    return result.result == "fail" or (header_from is not None and header_from != domain)


def _failed_for(result: Result, domain: str) -> bool:
    """A DMARC fail about this From: domain, or naming none (a fail is a fail)."""
    if result.method != "dmarc" or result.result != "fail":
        return False
    return _domain_of(result, "header", "from", address=False) in (None, domain)


def _passes(result: Result, domain: str) -> bool:
    if result.result != "pass":
        return False
    if result.method == "dmarc":
        return _domain_of(result, "header", "from", address=False) == domain
    if result.method == "dkim":
        signer = _domain_of(result, "header", "d", address=False)
        if signer is None:  # header.i stands in only when header.d is missing
            signer = _domain_of(result, "header", "i", address=True)
        return _aligned(signer, domain)
    if result.method == "spf":
        return _aligned(_domain_of(result, "smtp", "mailfrom", address=True), domain)
    return False


def _domain_of(result: Result, ptype: str, name: str, *, address: bool) -> str | None:
    """The domain a property names; None when it is missing, "" when it names no single
    domain (not a domain, an address where only a domain belongs, or repeated differently)."""
    found = {_domain_in(p.value, p.domain, address) for p in result.properties
             if p.ptype == ptype and p.property == name}
    if not found:
        return None
    return found.pop() if len(found) == 1 else ""


def _domain_in(value: str, domain: str, address: bool) -> str:
    return domain if address or "@" not in value else ""


def _aligned(signer: str | None, domain: str) -> bool:
    return bool(signer) and (domain == signer or domain.endswith(f".{signer}"))
