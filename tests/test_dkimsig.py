"""DKIM-Signature read by RFC 6376's grammar (core/dkimsig.py), and what a DKIM pass then
pins (trust.mail_trust) on mail with crafted headers; no servers. test_replay.py sends the
replays through the pipeline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailgate.core import dkimsig
from mailgate.core.headernames import PINNING_FIELDS
from mailgate.core.mime.parse import parse
from mailgate.core.trust import Trust, TrustPolicy, mail_trust, sender_trust

B = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/AbCdEfGhIjKlMnOp="
BH = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
ALL = "from:to:subject:date:message-id:in-reply-to:content-type"
OURS = TrustPolicy(frozenset({"example.com"}), "mx.example.com")


def sig(h: str = ALL, *, d: str = "example.com", s: str = "sel", b: str = B,
        extra: str = "") -> str:
    return f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={d}; s={s}; h={h};{extra} bh={BH}; b={b}"


# --- the tag-list grammar ---------------------------------------------------------------


def test_a_signature_as_gmail_folds_it() -> None:
    value = (" v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n        d=Gmail.com; s=20161025;\r\n"
             "        h=mime-version:references:in-reply-to:from:date:message-id:subject:to\r\n"
             "         :cc;\r\n        bh=FxpZqsXOqP7QwGjTy+2TnpU3kRAj4oIDk2CQQL89iQw=;\r\n"
             "        b=BTr6rlkyVSHbsM1LAhf4i0YyjMnmdZhoV2QMy+71J0W3tpU1IXKy8GwZVS9uuo/Tsn\r\n"
             "         gx3JFPYg7yw47ABRsPPi==")
    found = dkimsig.parse(value)
    assert found is not None
    assert found.domain == "gmail.com" and found.selector == "20161025"
    assert found.signed == ("mime-version", "references", "in-reply-to", "from", "date",
                            "message-id", "subject", "to", "cc")
    assert found.b == "BTr6rlkyVSHbsM1LAhf4i0YyjMnmdZhoV2QMy+71J0W3tpU1IXKy8GwZVS9uuo/Tsn" \
                      "gx3JFPYg7yw47ABRsPPi=="
    assert found.identity == "@gmail.com" and found.body_length is None


def test_a_field_listed_twice_covers_two_instances() -> None:
    found = dkimsig.parse(sig("From:Subject:SUBJECT:from"))
    assert found is not None
    assert found.instances("subject") == 2 and found.instances("from") == 2
    assert found.instances("to") == 0


@pytest.mark.parametrize("value", [
    sig() + "; d=evil.test",  # a tag twice: invalid (RFC 6376 3.2)
    sig() + "; h=from:subject:message-id:in-reply-to:references:content-type",
    sig().replace("v=1", "v=2"),  # a version we do not know
    sig().replace("v=1; ", ""),  # required tags missing
    sig().replace(f" b={B}", ""),
    sig().replace(f" bh={BH};", ""),
    sig().replace("d=example.com", "d="),
    sig(h=""),  # h= names no field
    sig(h="from::subject"),  # an empty name
    sig(h="from:sub ject"),  # whitespace inside a name
    sig(b="AbCd;Ef"),  # ";" ends the value: "Ef" is no tag-spec
    sig(b="AbCd$Ef"),  # not base64
    sig(extra=" l=12x;"),  # l= not a number
    sig(extra=" l=" + "9" * 77 + ";"),  # more digits than l= allows
    sig(extra=" 1x=y;"),  # a tag name starts with a letter
    sig(extra=" x y=z;"),  # whitespace inside a tag name
    sig(extra=" x=\u00e9;"),  # not ASCII
    sig(extra=" x=a\rb;"),  # a bare CR is no folding whitespace
    sig(extra=" x=a\r\nb;"),  # a line break not followed by whitespace
    sig() + ";;",  # an empty tag-spec
    "",
    "v=1",
    sig() + " " * dkimsig.MAX_CHARS,
])
def test_what_breaks_the_grammar_is_not_read(value: str) -> None:
    assert dkimsig.parse(value) is None


def test_tag_names_are_case_sensitive() -> None:
    """'H=' is another (unknown, ignored) tag than 'h=': it does not stand in for h=."""
    assert dkimsig.parse(sig().replace(" h=", " H=")) is None
    found = dkimsig.parse(sig(extra=" H=to:cc;"))
    assert found is not None and found.instances("to") == 1 and found.instances("cc") == 0


def test_unknown_tags_and_a_final_semicolon_are_fine() -> None:
    found = dkimsig.parse(sig(extra=" x=1700000000; z=From:ann@example.com|To:x; q=dns/txt;")
                          + ";")
    assert found is not None and found.signed == tuple(ALL.split(":"))
    assert dkimsig.parse(sig(extra=" l=7;")).body_length == 7  # type: ignore[union-attr]


_FWS = st.sampled_from(["", " ", "\t", "  ", "\r\n ", "\r\n\t", " \r\n  "])
_NAMES = st.lists(st.sampled_from(["From", "subject", "In-Reply-To", "REFERENCES", "To",
                                   "message-id", "Content-Type", "x-Mailer", "dAtE"]),
                  min_size=1, max_size=12)


@st.composite
def _signatures(draw: st.DrawFn) -> tuple[str, list[str], str]:
    """A signature written with folding whitespace wherever 3.2 allows it, its tags in
    any order: (value, its h= names, its b= without whitespace)."""
    names = draw(_NAMES)
    h = names[0] + "".join(f"{draw(_FWS)}:{draw(_FWS)}{n}" for n in names[1:])
    chunks = draw(st.lists(st.sampled_from(["AbC", "d0+", "/9z", "QQ"]), min_size=1,
                           max_size=8))
    b = chunks[0] + "".join(f"{draw(_FWS)}{c}" for c in chunks[1:])
    more = draw(st.sampled_from([[], [("l", "42")], [("x", "17"), ("t", "1")]]))
    pairs = [("v", "1"), ("a", "rsa-sha256"), ("d", "Example.COM"), ("s", "Sel"), ("h", h),
             ("bh", BH), ("b", b), *more]
    pairs = draw(st.permutations(pairs))
    specs = [f"{draw(_FWS)}{k}{draw(_FWS)}={draw(_FWS)}{v}{draw(_FWS)}" for k, v in pairs]
    value = ";".join(specs) + draw(st.sampled_from(["", ";", f";{' '}"]))
    return value, names, "".join(chunks)


@given(_signatures())
def test_folding_whitespace_and_case_change_nothing(drawn: tuple[str, list[str], str]) -> None:
    value, names, b = drawn
    found = dkimsig.parse(value)
    assert found is not None
    assert found.signed == tuple(n.lower() for n in names)
    assert (found.domain, found.selector, found.b) == ("example.com", "sel", b)


@given(_signatures(), st.data())
def test_any_tag_given_twice_makes_the_signature_unreadable(
        drawn: tuple[str, list[str], str], data: st.DataObject) -> None:
    value = drawn[0].rstrip(" \t\r\n;")
    tag = data.draw(st.sampled_from(sorted(dkimsig.tags(value) or ())))
    again = data.draw(st.sampled_from(["1", "example.com", "from", "QUJD", "7"]))
    assert dkimsig.parse(f"{value}; {tag}={again}") is None
    assert dkimsig.parse(f" {tag}={again};{value}") is None


# --- what a pass pins ---------------------------------------------------------------------


def mail_with(*signatures: str, results: str = "mx.example.com; dkim=pass header.d=example.com"
              " header.s=sel header.b=AbCdEfGh", subject: str = "Re: [IT-1001] x",
              fields: str = "", before: str = "") -> bytes:
    header = [f"Authentication-Results: {results}", *([before] if before else []),
              *(f"DKIM-Signature: {s}" for s in signatures),
              "From: Alice <alice@example.com>", "To: it-help@example.com",
              f"Subject: {subject}", "Date: Tue, 24 Nov 2026 10:00:00 +0100",
              "Message-ID: <a-1@example.com>", *fields.splitlines(),
              "Content-Type: text/plain; charset=utf-8"]
    return ("\r\n".join(header) + "\r\n\r\n#close\r\n").encode()


def trust(raw: bytes) -> Trust:
    msg = parse(raw)
    assert sender_trust(msg, OURS) is Trust.VERIFIED  # who sent it is never in doubt here
    return mail_trust(msg, OURS)


def test_a_signature_over_every_pinning_field_pins() -> None:
    assert trust(mail_with(sig())) is Trust.VERIFIED


@pytest.mark.parametrize("h", [
    "FROM:To:SUBJECT:Date:Message-ID:In-Reply-To:CONTENT-TYPE",  # names: any case
    "from : to : subject : date : message-id : in-reply-to : content-type",  # h= with spaces
    "from:\r\n\tto:subject:date\r\n :message-id:in-reply-to:content-type",  # folded
    ALL + ":references:subject:content-transfer-encoding",  # over-signed: absent fields too
])
def test_h_spelled_any_way_the_grammar_allows_pins(h: str) -> None:
    assert trust(mail_with(sig(h))) is Trust.VERIFIED


@pytest.mark.parametrize(("h", "fields"), [
    ("from:to:date:message-id:in-reply-to:content-type", ""),  # Subject not signed
    (ALL, "References: <req-2@example.com>"),  # a References the signature does not cover
    ("from:to:subject:date:message-id:content-type", "In-Reply-To: <req-2@example.com>"),
    (ALL, "Content-Transfer-Encoding: quoted-printable"),  # decides what the text says
    (ALL, "Content-Disposition: inline"),
    ("from:to:subject:date:in-reply-to:content-type", ""),  # Message-ID not signed
    ("to:subject:date:message-id:in-reply-to:content-type", ""),  # From not signed
])
def test_a_field_outside_h_leaves_the_mail_replayable(h: str, fields: str) -> None:
    assert trust(mail_with(sig(h), fields=fields)) is Trust.REPLAYABLE


def test_a_field_listed_once_covers_only_the_bottom_instance() -> None:
    """Content-Type is not one RFC 5322 allows once (such a repeat voids the results
    anyway): a second one above the signed one is what mailgate would read."""
    raw = mail_with(sig()).replace(b"Content-Type:", b"Content-Type: multipart/mixed; "
                                                     b"boundary=x\r\nContent-Type:")
    assert trust(raw) is Trust.REPLAYABLE
    twice = sig(ALL + ":content-type")
    assert trust(mail_with(twice).replace(b"Content-Type:", b"Content-Type: text/plain\r\n"
                                                            b"Content-Type:")) is Trust.VERIFIED


def test_a_mail_without_a_message_id_is_not_pinned() -> None:
    """Its copies are told apart by a hash of all of it, unsigned fields included."""
    raw = mail_with(sig()).replace(b"Message-ID: <a-1@example.com>\r\n", b"")
    assert trust(raw) is Trust.REPLAYABLE


def test_a_body_length_limit_pins_nothing() -> None:
    assert trust(mail_with(sig(extra=" l=8;"))) is Trust.REPLAYABLE


@pytest.mark.parametrize(("signatures", "results", "expected"), [
    # header.b names the one that passed among several of our domain
    ((sig(b="ZZZZZZZZ" + B[8:]), sig()), None, Trust.VERIFIED),
    ((sig(), sig("from:to:date:message-id:in-reply-to:content-type", b="ZZZZZZZZ" + B[8:])),
     "mx.example.com; dkim=pass header.d=example.com header.b=ZZZZZZZZ", Trust.REPLAYABLE),
    # without header.b (nor header.s), every signature of that domain must cover
    ((sig(), sig("from:to:date:message-id:in-reply-to:content-type", s="other")),
     "mx.example.com; dkim=pass header.d=example.com", Trust.REPLAYABLE),
    ((sig(), sig("from:to:date:message-id:in-reply-to:content-type", s="other")),
     "mx.example.com; dkim=pass header.d=example.com header.s=sel", Trust.VERIFIED),
    # a covering signature by another domain passed, ours (over less) failed
    ((sig("from:to:date:message-id:in-reply-to:content-type"),
      sig(d="mailer.example.net", b="ZZZZZZZZ" + B[8:])),
     "mx.example.com; dkim=fail header.d=example.com header.b=AbCdEfGh; "
     "dkim=pass header.d=mailer.example.net header.b=ZZZZZZZZ; spf=fail", None),
    ((sig("from:to:date:message-id:in-reply-to:content-type"),
      sig(d="mailer.example.net", b="ZZZZZZZZ" + B[8:])),
     "mx.example.com; dkim=pass header.d=example.com header.b=AbCdEfGh; "
     "dkim=pass header.d=mailer.example.net header.b=ZZZZZZZZ", Trust.REPLAYABLE),
    # a pass names no signature the mail carries
    ((sig(),), "mx.example.com; dkim=pass header.d=example.com header.b=ZZZZZZZZ",
     Trust.REPLAYABLE),
    ((), None, Trust.REPLAYABLE),
    # header.i: the signature's i= (by default "@" and d=)
    ((sig(extra=" i=alice@example.com;"),),
     "mx.example.com; dkim=pass header.i=alice@Example.com", Trust.VERIFIED),
    ((sig(extra=" i=bob@example.com;"),),
     "mx.example.com; dkim=pass header.i=alice@example.com", Trust.REPLAYABLE),
    # one signature we cannot read could be the one that passed
    ((sig(), sig() + "; d=example.com"), None, Trust.REPLAYABLE),
    # an SPF pass: the mail came from our own servers, whatever DKIM says
    ((), "mx.example.com; spf=pass smtp.mailfrom=alice@example.com", Trust.VERIFIED),
    # DMARC passes on DKIM or on SPF and does not say which
    ((sig("from:to:date:message-id:in-reply-to:content-type"),),
     "mx.example.com; dkim=pass header.d=example.com; dmarc=pass header.from=example.com",
     Trust.REPLAYABLE),
    ((), "mx.example.com; dmarc=pass header.from=example.com", Trust.REPLAYABLE),
])
def test_the_signature_that_passed(signatures: tuple[str, ...], results: str | None,
                                   expected: Trust | None) -> None:
    msg = parse(mail_with(*signatures, **({"results": results} if results else {})))
    if expected is None:  # not verified at all: the passing signature is not aligned
        assert mail_trust(msg, OURS) is Trust.UNVERIFIED
    else:
        assert mail_trust(msg, OURS) is expected


@pytest.mark.parametrize("line", [
    "Subject : [IT-1002] x",  # blanks before the colon: which field is it to a verifier?
    "DKIM-Signature : " + sig(),
    "X-Note: x\rSubject: Re: [IT-1002] x",  # compat32 ends a line at a bare CR, an MTA not
])
def test_a_field_the_mta_and_mailgate_read_differently_pins_nothing(line: str) -> None:
    raw = mail_with(sig(), before=line)
    if b"\rSubject" in raw:  # the signed mail had no Subject: h= signed it as absent
        raw = raw.replace(b"Subject: Re: [IT-1001] x\r\n", b"")
    msg = parse(raw)
    assert mail_trust(msg, OURS) in (Trust.REPLAYABLE, Trust.UNVERIFIED)


def test_more_signatures_than_are_read_pin_nothing() -> None:
    raw = mail_with(*[sig()] * 11)
    assert trust(raw) is Trust.REPLAYABLE
    assert trust(mail_with(*[sig()] * 10)) is Trust.VERIFIED


_EXTRA = {"in-reply-to": "In-Reply-To: <req-1@example.com>",
          "references": "References: <req-0@example.com> <req-1@example.com>",
          "content-transfer-encoding": "Content-Transfer-Encoding: 7bit",
          "content-disposition": "Content-Disposition: inline"}
_ALWAYS = {"from", "subject", "message-id", "content-type"}  # in every mail_with() mail


@given(st.sets(st.sampled_from(sorted(_EXTRA))),
       st.sets(st.sampled_from(PINNING_FIELDS), max_size=2),
       st.permutations([*PINNING_FIELDS, "to", "date", "x-mailer"]),
       st.lists(st.booleans(), min_size=11, max_size=11), st.sampled_from([":", " : "]))
def test_pinned_exactly_when_every_present_pinning_field_is_signed(
        present: set[str], left_out: set[str], names: list[str], upper: list[bool],
        colon: str) -> None:
    signed = [n.upper() if up else n for n, up in zip(names, upper, strict=True)
              if n not in left_out]
    raw = mail_with(sig(colon.join(signed)),
                    fields="\r\n".join(_EXTRA[n] for n in sorted(present)))
    expected = Trust.REPLAYABLE if left_out & (_ALWAYS | present) else Trust.VERIFIED
    assert trust(raw) is expected
