"""Who a From: address can be believed to be: trusted domains and our own MTA's verdict."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailgate.config.settings import load_config
from mailgate.core.mime.parse import parse
from mailgate.core.model import Address, Inbound
from mailgate.core.trust import Trust, TrustPolicy, dmarc_failed, may_command, sender_trust
from mailgate.errors import ConfigError
from tests.factories import harness, mail
from tests.test_authres import ATTACKER_TEXT, DECODING_BAIT, mta_header

OURS = TrustPolicy(frozenset({"example.com"}), "mx.example.com")


def trust_of(sender: str, *auth_results: str, policy: TrustPolicy = OURS) -> Trust:
    raw = mail(sender=sender)
    prefix = b"".join(f"Authentication-Results: {h}\r\n".encode() for h in auth_results)
    return sender_trust(parse(prefix + raw), policy)


def test_outside_domain_is_an_outsider_whatever_it_claims() -> None:
    assert trust_of("mallory@evil.test", "mx.example.com; dmarc=pass header.from=evil.test"
                    ) is Trust.OUTSIDER


def test_subdomain_of_a_trusted_domain_is_ours() -> None:
    policy = TrustPolicy(frozenset({"example.com"}))
    assert trust_of("ann@hq.example.com", policy=policy) is Trust.DOMAIN
    assert trust_of("ann@notexample.com", policy=policy) is Trust.OUTSIDER


def test_only_ascii_case_is_folded_in_the_from_domain() -> None:
    # str.lower() makes KELVIN SIGN "k": wor\u212a.example is not work.example.
    policy = TrustPolicy(frozenset({"work.example"}))
    assert trust_of("boss@wor\u212a.example", policy=policy) is Trust.OUTSIDER
    assert trust_of("boss@WORK.example", policy=policy) is Trust.DOMAIN


def test_without_authserv_id_the_domain_is_all_we_have() -> None:
    assert trust_of("ann@example.com", policy=TrustPolicy(frozenset({"example.com"}))
                    ) is Trust.DOMAIN
    assert trust_of("ann@anywhere.test", policy=TrustPolicy()) is Trust.DOMAIN


@pytest.mark.parametrize("result", [
    "mx.example.com; dmarc=pass (p=reject) header.from=example.com",
    "mx.example.com 1; dkim=pass header.d=example.com header.s=sel; spf=fail",
    "mx.example.com; spf=pass smtp.mailfrom=ann@example.com",
    "mx.example.com; dkim=pass header.i=@example.com",
])
def test_our_mta_vouching_verifies(result: str) -> None:
    assert trust_of("Ann <ann@example.com>", result) is Trust.VERIFIED


@pytest.mark.parametrize("result", [
    "mx.example.com; dmarc=fail header.from=example.com",
    "mx.example.com; dkim=pass header.d=evil.test",  # signed, but by someone else
    "mx.example.com; spf=pass smtp.mailfrom=bounce@evil.test",
    "mx.example.com; dmarc=pass header.from=evil.test",
    "other.example.net; dmarc=pass header.from=example.com",  # not our MTA
    "mx.example.com; dkim=pass (header.d=example.com is only a comment)",
])
def test_anything_else_is_unverified(result: str) -> None:
    assert trust_of("ann@example.com", result) is Trust.UNVERIFIED


def test_only_the_topmost_header_of_our_mta_counts() -> None:
    # Our MTA says fail; a forged "pass" further down (written by the sender) is ignored.
    assert trust_of("ann@example.com",
                    "mx.example.com; dmarc=fail header.from=example.com",
                    "mx.example.com; dmarc=pass header.from=example.com") is Trust.UNVERIFIED


@pytest.mark.parametrize(("results", "failed"), [
    (("mx.example.com; dmarc=fail header.from=example.com",), True),
    (("mx.example.com; dmarc=fail (p=none)",), True),  # no header.from: a fail is a fail
    (("mx.example.com; dkim=pass header.d=example.com",
      "mx.example.com; dmarc=fail header.from=example.com"), True),
    (("mx.example.com; dmarc=fail header.from=evil.test",), False),  # not about our From:
    (("mx.example.com; dmarc=none header.from=example.com",), False),
    (("relay.example.net; dmarc=fail header.from=example.com",), False),  # not our MTA's
    (("mx.example.com; dmarc=fail header.from=example.com junk",), False),  # unreadable
    ((), False),
])
def test_dmarc_failed_is_our_mtas_fail_for_our_from_domain(results: tuple[str, ...],
                                                          failed: bool) -> None:
    raw = mail(sender=ANN)
    prefix = b"".join(f"Authentication-Results: {h}\r\n".encode() for h in results)
    assert dmarc_failed(parse(prefix + raw), OURS) is failed
    assert dmarc_failed(parse(prefix + mail(sender="x@evil.test")), OURS) is False
    assert dmarc_failed(parse(prefix + raw), TrustPolicy(frozenset({"example.com"}))) is False


def test_commands_need_a_vouched_or_domain_trusted_sender() -> None:
    assert [may_command(t) for t in Trust] == [False, False, True, True, False]


def test_garbage_authentication_results_do_not_crash() -> None:
    for header in ("", ";", "mx.example.com;;;", "mx.example.com; =pass", "(only a comment)"):
        assert trust_of("ann@example.com", header) is Trust.UNVERIFIED


async def test_pipeline_stores_the_verdict(tmp_path: Path) -> None:
    h = await harness(tmp_path)
    await h.deliver(mail())
    assert await h.rows("SELECT sender_trust FROM messages") == [("domain",)]
    await h.store.close()


def test_security_config(tmp_path: Path) -> None:
    path = tmp_path / "mailgate.toml"
    base = '[outbox]\ndir = "out"\n[security]\n'
    path.write_text(base + 'trusted_domains = ["Example.com", "@corp.test"]\n'
                    'authserv_id = "MX.example.com"\n')
    security = load_config(path).security
    assert security.trusted_domains == {"example.com", "corp.test"}
    assert security.authserv_id == "mx.example.com"
    path.write_text(base + 'trusted_domains = ["ann@example.com"]\nauthserve_id = "x"\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    text = "\n".join(error.value.problems)
    assert "security.trusted_domains: 'ann@example.com' is not a domain name" in text
    assert "authserve_id" in text


# --- Authentication-Results read by the grammar (authres.py) --------------------------------

ANN = "ann@example.com"
PASS = "mx.example.com; dmarc=pass header.from=example.com"


def test_parse_hands_the_headers_over_raw_only_unfolded() -> None:
    raw = (b"Authentication-Results: mx.example.com;\r\n\tspf=fail\r\n"
           b" smtp.mailfrom==?us-ascii?q?x=3B_dmarc=3Dpass?=@evil.org (\xc3\xa9)\r\n"
           + mail())
    assert parse(raw).auth_results == (
        "mx.example.com;\tspf=fail smtp.mailfrom==?us-ascii?q?x=3B_dmarc=3Dpass?=@evil.org"
        " (\ufffd\ufffd)",)


@pytest.mark.parametrize("result", [
    # The finding: an encoded word in the envelope sender, which decoding turned into results.
    "mx.example.com; spf=fail smtp.mailfrom==?us-ascii?q?x=3B_dmarc=3Dpass?=@evil.org;"
    " dmarc=fail header.from=example.com",
    # ... and one that decodes into a complete, well-formed pass.
    "mx.example.com; spf=fail smtp.mailfrom==?us-ascii?q?x=3B_dmarc=3Dpass_header.from=3D"
    "example.com_policy.x=3D?=@evil.org",
    'mx.example.com; spf=fail smtp.mailfrom="x;dmarc=pass"@evil.org',
    'mx.example.com; spf=fail smtp.mailfrom="x;dmarc=pass header.from=example.com"@evil.org',
    "mx.example.com; spf=fail (a (b;dmarc=pass) c) smtp.mailfrom=x@evil.org",
    "mx.example.com; spf=fail (a (b) ;dmarc=pass header.from=example.com) smtp.helo=x",
    r"mx.example.com; spf=fail (a\); dmarc=pass header.from=example.com (\(b))",
    r'mx.example.com; spf=fail smtp.helo="a\"; dmarc=pass header.from=example.com smtp.x="\"',
    r'mx.example.com; spf=fail reason="\"; dmarc=pass header.from=example.com"',
    "mx.example.com; dmarc=pass",  # for which From:?
    "mx.example.com; dmarc=pass (header.from=example.com)",
    "mx.example.com; dmarc=pass header.from=ann@example.com",
    "mx.example.com; dmarc=pass header.from=example.com.evil.test",
    "mx.example.com; dmarc=pass header.from=notexample.com",
    "mx.example.com; dkim=pass header.d=hq.example.com",  # a child signs only for itself
    "mx.example.com; dkim=pass header.d=ample.com",
    "mx.example.com; dkim=pass header.d=evil.test header.i=@example.com",
    "mx.example.com; dkim=pass header.d=example.com header.d=evil.test",
    "mx.example.com; dkim=pass header.d=evil.test header.d=example.com",
    "mx.example.com; dkim=pass header.d=ann@example.com",
    'mx.example.com; dkim=pass header.d="example.com"',
    "mx.example.com; spf=pass smtp.helo=example.com",
    "mx.example.com; spf=pass smtp.mailfrom=ann@evil.test (ann@example.com)",
    "mx.example.com; iprev=pass policy.iprev=example.com",
    "mx.example.com; dkim=pass header.d=example.com; dmarc=fail header.from=example.com",
    "mx.example.com; dmarc=fail; spf=pass smtp.mailfrom=example.com",
    # Our MTA read another From: than we did: nothing it says about this mail counts.
    "mx.example.com; dkim=pass header.d=example.com; dmarc=pass header.from=evil.test",
    "mx.example.com; none",
    "mx.example.com; none; dmarc=pass header.from=example.com",  # bad grammar
    "mx.example.com; dmarc=pass header.from=example.com;",
    "mx.example.com 2; dmarc=pass header.from=example.com",  # a version we do not know
    "mx.example.com.evil.test; dmarc=pass header.from=example.com",
    # Names that start with ours, and a punycode lookalike (ex\u00e4mple.com).
    "mx.example.com; dkim=pass header.d=example.com.evil.test",
    "mx.example.com; spf=pass smtp.mailfrom=ann@example.com.evil.test",
    "mx.example.com; dmarc=pass header.from=xn--exmple-cua.com",
    "mx.example.com; dkim=pass header.i=ann@example.com.evil.test",
])
def test_results_that_do_not_vouch(result: str) -> None:
    assert trust_of(ANN, result) is Trust.UNVERIFIED


@pytest.mark.parametrize("result", [
    "MX.Example.COM; DMARC=Pass Header.From=Example.COM",
    '"mx.example.com"; dmarc=pass header.from=example.com',
    "mx.example.com 1 (v1); dmarc=pass header.from=example.com",
    "  mx.example.com(a comment);dmarc=pass header.from=example.com (p=reject)",
    "mx.example.com; dkim=pass (2048-bit key) header.d=example.com header.i=@example.com"
    " header.a=rsa-sha256 header.s=sel header.b=\"AbC/dE+f\"",
    "mx.example.com; dkim=pass header.i=ann@example.com",
    "mx.example.com; spf=pass smtp.mailfrom=example.com",
    'mx.example.com; spf=pass smtp.mailfrom="ann x"@example.com',
    "mx.example.com; dmarc=none header.from=example.com; dkim=pass header.d=example.com",
    "mx.example.com; spf=fail smtp.mailfrom=x@evil.test; dkim=pass header.d=example.com",
])
def test_results_that_vouch(result: str) -> None:
    assert trust_of(ANN, result) is Trust.VERIFIED


def test_a_parent_domain_signature_covers_a_subdomain_sender() -> None:
    assert trust_of("ann@hq.example.com", "mx.example.com; dkim=pass header.d=example.com"
                    ) is Trust.VERIFIED
    assert trust_of("ann@hq.example.com", "mx.example.com; spf=pass smtp.mailfrom=b@example.com"
                    ) is Trust.VERIFIED
    assert trust_of("ann@hq.example.com", PASS) is Trust.UNVERIFIED  # DMARC is exact


def test_the_policy_id_is_matched_whatever_its_case() -> None:
    policy = TrustPolicy(frozenset({"example.com"}), "MX.Example.com")
    assert trust_of(ANN, PASS, policy=policy) is Trust.VERIFIED


def test_only_ascii_case_is_folded_in_the_id() -> None:
    # str.lower() makes KELVIN SIGN "k"; the MTA stripping forged headers does not.
    policy = TrustPolicy(frozenset({"example.com"}), "mk.example.com")
    forged = '"m\u212a.example.com"; dmarc=pass header.from=example.com'
    msg = Inbound(message_id="", dedupe_key="x", sender=Address(ANN), auth_results=(forged,))
    assert sender_trust(msg, policy) is Trust.UNVERIFIED
    assert sender_trust(replace(msg, auth_results=(forged.replace("\u212a", "K"),)), policy
                        ) is Trust.VERIFIED


def test_several_headers_of_our_mta_count_together() -> None:
    # OpenDMARC above OpenDKIM, say: each adds its own header.
    assert trust_of(ANN, "mx.example.com; spf=none smtp.mailfrom=example.com",
                    "mx.example.com; dkim=pass header.d=example.com") is Trust.VERIFIED
    assert trust_of(ANN, "mx.example.com; dkim=pass header.d=example.com",
                    "mx.example.com; dmarc=fail header.from=example.com") is Trust.UNVERIFIED
    assert trust_of(ANN, "mx.example.com; none", PASS) is Trust.VERIFIED


def test_a_forged_header_with_our_id_below_another_id_does_not_count() -> None:
    relay = "relay.example.net; spf=pass smtp.mailfrom=example.com"
    assert trust_of(ANN, "mx.example.com; spf=none smtp.helo=x", relay, PASS
                    ) is Trust.UNVERIFIED
    # Topmost is somebody else's: our MTA wrote nothing, whatever is below is the sender's.
    assert trust_of(ANN, relay, PASS) is Trust.UNVERIFIED
    assert trust_of(ANN, PASS, relay) is Trust.VERIFIED


# Our MTA's own header (no DMARC record: dmarc=none), then one the sender wrote, with our id
# spelled so that the rule stripping forged headers leaves it in: README's header_checks
# regex (/^Authentication-Results:\s*"?mx\.example\.com"?[\s;(]/) or OpenDKIM's
# RemoveARAll, which keeps what its parser refuses.
OUR_NONE = "mx.example.com; spf=pass smtp.mailfrom=evil.test; dmarc=none header.from=example.com"


@pytest.mark.parametrize("forged", [
    "(ours) mx.example.com; dkim=pass header.d=example.com",  # a comment before the id
    ' "mx.ex\\ample.com"; dkim=pass header.d=example.com',  # an escape inside it
    "mx.example.com; dkim=pass header.d=example.com (" + "x" * 4100 + ")",  # too long
    "mx.example.com; dkim=pass header.d=example.com x-note.by=mx",  # ptype not registered
])
def test_a_forged_header_our_stripping_rule_leaves_in_does_not_count(forged: str) -> None:
    assert trust_of(ANN, OUR_NONE, forged) is Trust.UNVERIFIED
    assert trust_of(ANN, forged) is Trust.UNVERIFIED


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_a_header_smuggled_behind_a_bare_cr_does_not_count(line_end: bytes) -> None:
    """An MTA ends lines at LF only: to it, and to every rule stripping forged headers,
    "X-Note: x<CR>Authentication-Results: ..." is one X-Note header."""
    smuggled = b"X-Note: x\rAuthentication-Results: mx.example.com; dkim=pass header.d=example.com"
    raw = (f"Authentication-Results: {OUR_NONE}\r\n".encode() + smuggled + b"\r\n"
           + mail(sender=ANN)).replace(b"\r\n", line_end)
    assert sender_trust(parse(raw), OURS) is Trust.UNVERIFIED
    # The same header on a line of its own would count: the MTA should have stripped it.
    honest = raw.replace(b"x\rAuth", b"x" + line_end + b"Auth")
    assert sender_trust(parse(honest), OURS) is Trust.VERIFIED


@pytest.mark.parametrize("field", [
    b"Authentication-Results :", b"Authentication-Results\t:",
    # A line without a colon ends the header block for an MTA (the rest is body, which no
    # header rule sees); mailgate reads it as a continuation and goes on.
    b"X-Note: x\r\nno colon here\r\nAuthentication-Results:",
])
def test_a_field_a_stripping_rule_does_not_see_does_not_count(field: bytes) -> None:
    """Obsolete syntax (RFC 5322 4.5): Postfix takes it for a header, README's
    /^Authentication-Results:.../ rule does not match it, mailgate mends it into one."""
    forged = field + b" mx.example.com; dkim=pass header.d=example.com\r\n"
    raw = f"Authentication-Results: {OUR_NONE}\r\n".encode() + forged + mail(sender=ANN)
    assert sender_trust(parse(raw), OURS) is Trust.UNVERIFIED


RECEIVED = b"Received: from relay.example.net by mx.example.com; 24 Nov 2026 09:00 +0100\r\n"


@pytest.mark.parametrize(("layout", "at_one_hop"), [
    # Postfix and its milters: their headers above its Received, the sender's below it.
    ([OUR_NONE, RECEIVED, "mx.example.com; spf=pass smtp.mailfrom=ann@example.com"],
     Trust.VERIFIED),
    # Gmail's shape: the border's Received above its results, the sender's further down.
    ([RECEIVED, OUR_NONE, RECEIVED, "mx.example.com; dkim=pass header.d=example.com"],
     Trust.VERIFIED),
    # Our border's DMARC fail below an inner hop's pass: which one counts cannot be told.
    (["mx.example.com; spf=pass smtp.mailfrom=ann@example.com", RECEIVED,
      "mx.example.com; dmarc=fail header.from=example.com"], Trust.UNVERIFIED),
])
def test_headers_with_our_id_on_both_sides_of_a_hop_verify_nothing(
        layout: list[str | bytes], at_one_hop: Trust) -> None:
    """One MTA hop writes its results above its own Received field or right below it:
    one of ours below another hop's Received was in the mail before that hop. Where the
    MTA strips nothing, it is the sender's."""
    fields = [f if isinstance(f, bytes) else f"Authentication-Results: {f}\r\n".encode()
              for f in layout]
    head = b"".join(fields)
    assert sender_trust(parse(head + mail(sender=ANN)), OURS) is Trust.UNVERIFIED
    # The same headers without the Received field between them: one hop's.
    between = len(fields) - 2
    one_hop = b"".join(fields[:between] + fields[between + 1:])
    assert sender_trust(parse(one_hop + mail(sender=ANN)), OURS) is at_one_hop


def test_a_run_of_ours_at_one_hop_still_verifies() -> None:
    spf = "mx.example.com; spf=pass smtp.mailfrom=ann@example.com"
    for head in (f"Authentication-Results: {OUR_NONE}\r\nAuthentication-Results: {spf}\r\n"
                 .encode() + RECEIVED + RECEIVED,
                 RECEIVED + f"Authentication-Results: {spf}\r\n".encode() + RECEIVED):
        assert sender_trust(parse(head + mail(sender=ANN)), OURS) is Trust.VERIFIED


def test_our_id_quoted_without_escapes_is_still_ours() -> None:
    # The README's regex strips it ("?...?"), OpenDKIM's parser reads it.
    assert trust_of(ANN, OUR_NONE, '"mx.example.com"; dkim=pass header.d=example.com'
                    ) is Trust.VERIFIED


def test_a_forged_header_right_below_ours_cannot_undo_a_dmarc_fail() -> None:
    # Adjacent headers with our id all count (an MTA that does not strip forged ones lets
    # them in: see the README); a DMARC fail of ours still wins over a forged pass.
    assert trust_of(ANN, "mx.example.com; dmarc=fail header.from=example.com",
                    "mx.example.com; dkim=pass header.d=example.com") is Trust.UNVERIFIED


@pytest.mark.parametrize("headers", [
    ("mx.example.com; dmarc=pass header.from=example.com junk",),
    (PASS, "mx.example.com; dmarc=fail header.from=example.com junk"),
    ("mx.example.com; dmarc=fail (unterminated", PASS),
    (PASS, 'MX.EXAMPLE.COM; spf=fail smtp.helo="x'),
])
def test_a_header_of_ours_that_does_not_parse_makes_the_sender_unverified(
        headers: tuple[str, ...]) -> None:
    assert trust_of(ANN, *headers) is Trust.UNVERIFIED


def test_an_unreadable_header_of_someone_else_only_ends_the_run() -> None:
    assert trust_of(ANN, PASS, "relay.example.net; dmarc=pass junk") is Trust.VERIFIED
    assert trust_of(ANN, "(unterminated", PASS) is Trust.UNVERIFIED


@pytest.mark.parametrize(("from_lines", "count"), [
    (b"From: ann@example.com\r\n", 1),
    (b"From: Ann <ann@example.com>, Bob <bob@example.com>\r\n", 2),
    (b"From: ann@example.com\r\nFrom: mallory@evil.test\r\n", 2),
    (b"From: ann@example.com, ann@example.com\r\n", 2),
    (b"From: group: ann@example.com, bob@example.com;\r\n", 2),
    (b"Sender: ann@example.com\r\n", 0),
    (b"From: undisclosed:;\r\nSender: ann@example.com\r\n", 0),
    # From: without a usable address, and the sender taken from another header
    (b"From: ann\r\nSender: ann@example.com\r\n", 0),
    (b"From: ann@example.com@evil.test\r\nSender: ann@example.com\r\n", 0),
    (b"From: @example.com\r\nReply-To: ann@example.com\r\n", 0),
    (b"From: ann@\r\nSender: ann@example.com\r\n", 0),
    # a second From: field without an address (DKIM signs the last one)
    (b"From: ann@example.com\r\nFrom: \r\n", 2),
    (b"From: <>\r\nFrom: ann@example.com\r\n", 2),
])
def test_only_one_from_address_can_be_verified(from_lines: bytes, count: int) -> None:
    raw = (f"Authentication-Results: {PASS}\r\n".encode() + from_lines
           + mail().split(b"\r\n", 1)[1])
    msg = parse(raw)
    assert msg.from_count == count
    assert msg.sender is not None and msg.sender.addr == ANN
    expected = Trust.VERIFIED if count == 1 else Trust.UNVERIFIED
    assert sender_trust(msg, OURS) is expected


@pytest.mark.parametrize(("from_line", "expected"), [
    ('"ann@example.com" <mallory@evil.test>', Trust.OUTSIDER),  # an address as the name
    ("=?utf-8?q?ann=40example.com?= <mallory@evil.test>", Trust.OUTSIDER),  # encoded
    ("mallory@evil.test (ann@example.com)", Trust.OUTSIDER),  # in a comment
    ("ann@example.com <mallory@evil.test>", Trust.UNVERIFIED),  # two addresses to a parser
    ("ann@example.com)<mallory@evil.test>", Trust.UNVERIFIED),
])
def test_only_the_from_address_is_the_sender(from_line: str, expected: Trust) -> None:
    raw = (f"Authentication-Results: {PASS}\r\nFrom: {from_line}\r\n".encode()
           + mail().split(b"\r\n", 1)[1])
    assert sender_trust(parse(raw), OURS) is expected


# Where an MTA copies what the sender chose: the envelope sender (in smtp.mailfrom and in a
# comment), the HELO name, a reason. Written as a careful MTA writes them, none may vouch.
@settings(max_examples=300, deadline=None)
@given(local=ATTACKER_TEXT, helo=ATTACKER_TEXT, reason=ATTACKER_TEXT, dmarc_fail=st.booleans(),
       fold=st.booleans())
@example(local=DECODING_BAIT, helo="h", reason="r", dmarc_fail=False, fold=False)
@example(local="x;dmarc=pass header.from=example.com", helo="x;dkim=pass header.d=example.com",
         reason="(;dmarc=pass header.from=example.com)", dmarc_fail=False, fold=True)
def test_what_the_sender_chose_never_verifies(local: str, helo: str, reason: str,
                                              dmarc_fail: bool, fold: bool) -> None:
    header = mta_header(local, helo, reason, dmarc_fail=dmarc_fail, fold=fold)
    raw = f"Authentication-Results: {header}\r\n".encode() + mail(sender=ANN)
    assert sender_trust(parse(raw), OURS) is Trust.UNVERIFIED


# --- provider headers, in the shapes Google Workspace and Microsoft 365 write them --------

GMAIL = TrustPolicy(frozenset({"example.com"}), "mx.google.com")
GMAIL_PASS = ("mx.google.com;\r\n       dkim=pass header.i=@example.com header.s=google "
              "header.b=AbCdEf12;\r\n       spf=pass (google.com: domain of alice@example.com "
              "designates 209.85.220.41 as permitted sender) smtp.mailfrom=alice@example.com;"
              "\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com")
# Exchange Online writes no authserv-id at all: the header starts with the first result.
M365_PASS = ("spf=pass (sender IP is 40.107.22.55) smtp.mailfrom=example.com; dkim=pass "
             "(signature was verified) header.d=example.com;dmarc=pass action=none "
             "header.from=example.com;compauth=pass reason=100")


def test_google_workspace_results_verify_with_its_authserv_id() -> None:
    assert trust_of("alice@example.com", GMAIL_PASS, policy=GMAIL) is Trust.VERIFIED
    forged_below = trust_of("alice@example.com", "mx.google.com; dmarc=fail "
                            "header.from=example.com", GMAIL_PASS, policy=GMAIL)
    assert forged_below is Trust.UNVERIFIED  # a DMARC fail in the run vetoes any pass


def test_microsoft_365_results_have_no_authserv_id_and_never_verify() -> None:
    for policy in (OURS, TrustPolicy(frozenset({"example.com"}), "spf=pass")):
        assert trust_of("alice@example.com", M365_PASS, policy=policy) is not Trust.VERIFIED


# --- which end of the header block our MTA writes ([security] authserv_position) --------

BOTTOM = replace(OURS, authserv_position="bottom")
BORDER = b"Received: from evil.test by mx.example.com; 24 Nov 2026 09:00 +0100\r\n"
FORGED = b"Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\r\n"


def exim(ours: str, *, forged: bytes = b"", above: bytes = b"") -> bytes:
    """A mail as Exim hands it over with add_header and no :at_start:: its Received on
    top, then the sender's fields (`forged` first, as a sender puts it), and our
    Authentication-Results appended below them all. `above`: what lies above the
    sender's fields (another hop's results)."""
    head, _, body = mail(sender=ANN).partition(b"\r\n\r\n")
    return (BORDER + above + forged + head
            + f"\r\nAuthentication-Results: {ours}\r\n\r\n".encode() + body)


@pytest.mark.parametrize("ours", [
    "mx.example.com; spf=fail smtp.mailfrom=evil.test; dkim=none",  # no DMARC: no veto
    "mx.example.com; dkim=pass header.d=example.com",
])
@pytest.mark.parametrize("policy", [OURS, BOTTOM], ids=["top", "bottom"])
def test_a_forged_header_on_top_of_exims_is_never_believed(ours: str,
                                                           policy: TrustPolicy) -> None:
    """Exim appends its results at the bottom and, unless told to, strips nothing: the
    sender's "dmarc=pass" with our id sits on top. Read from the top (the default), ours
    lies below the sender's fields: not where our MTA writes, so nothing verifies (it
    verified before: both were one run). Read from the bottom, the forged one lies above
    them: the sender's, left in, and nothing verifies either."""
    assert sender_trust(parse(exim(ours, forged=FORGED)), policy) is Trust.UNVERIFIED


def test_exims_own_results_verify_only_when_read_from_the_bottom() -> None:
    """Stripped as README asks, with results of another hop above the sender's fields:
    from the bottom ours are the trailing run; read from the top they are below the
    sender's fields, which our MTA does not write to, so the sender stays unverified."""
    ours = "mx.example.com; dkim=pass header.d=example.com"
    relay = b"Authentication-Results: mx.relay.example; dkim=fail header.d=example.com\r\n"
    for raw in (exim(ours), exim(ours, above=relay)):
        assert sender_trust(parse(raw), BOTTOM) is Trust.VERIFIED
        assert sender_trust(parse(raw), OURS) is Trust.UNVERIFIED


def test_read_from_the_bottom_results_past_those_kept_verify_nothing() -> None:
    """Parse keeps the first ten headers: nine of another hop on top, then the sender's
    own with our id, last of its fields, push Exim's (a DMARC fail) past them. The last
    one kept is not the last one written: nothing verifies."""
    relay = b"Authentication-Results: mx.relay.example; dkim=pass header.d=example.com\r\n"
    head, _, body = mail(sender=ANN).partition(b"\r\n\r\n")
    fail = b"Authentication-Results: mx.example.com; dmarc=fail header.from=example.com\r\n"
    raw = BORDER + relay * 9 + head + b"\r\n" + FORGED + fail + b"\r\n" + body
    assert sender_trust(parse(raw), BOTTOM) is Trust.UNVERIFIED
    assert sender_trust(parse(raw.replace(relay * 9, relay * 8)), BOTTOM) is Trust.UNVERIFIED


def test_read_from_the_bottom_a_top_writers_results_verify_nothing() -> None:
    raw = b"Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n"
    assert sender_trust(parse(raw + mail(sender=ANN)), OURS) is Trust.VERIFIED
    assert sender_trust(parse(raw + mail(sender=ANN)), BOTTOM) is Trust.UNVERIFIED


def test_one_of_ours_among_the_senders_fields_verifies_nothing() -> None:
    """A top-writing MTA that strips nothing: the sender's header with our id between
    its From and its Subject is no part of our run, and says our MTA was not obeyed."""
    head, _, body = mail(sender=ANN).partition(b"\r\n\r\n")
    first, _, rest = head.partition(b"\r\n")
    raw = (f"Authentication-Results: {OUR_NONE}\r\n".encode() + first + b"\r\n" + FORGED
           + rest + b"\r\n\r\n" + body)
    assert sender_trust(parse(raw), OURS) is Trust.UNVERIFIED


@pytest.mark.parametrize(("written", "expected"), [
    ("", "top"), ('authserv_position = "bottom"\n', "bottom")])
def test_authserv_position_is_read_top_by_default(tmp_path: Path, written: str,
                                                  expected: str) -> None:
    path = tmp_path / "mailgate.toml"
    path.write_text('[state]\ndir = "s"\n[smtp]\nhost = "h"\n'
                    f'[security]\nauthserv_id = "mx.example.com"\n{written}')
    assert load_config(path).security.authserv_position == expected


def test_another_authserv_position_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "mailgate.toml"
    path.write_text('[state]\ndir = "s"\n[smtp]\nhost = "h"\n'
                    '[security]\nauthserv_position = "middle"\n')
    with pytest.raises(ConfigError, match="authserv_position"):
        load_config(path)
