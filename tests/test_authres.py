"""Authentication-Results read by RFC 8601's grammar: the RFC's examples, the lexical traps
(comments, quoted strings, quoted-pairs, encoded words), and headers that must not parse."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailgate.core.authres import MAX_CHARS, AuthResults, Property, Result, leading_id, parse


def unfolded(text: str) -> str:
    """The RFC's multi-line examples as parse.py hands them over: CRLF + WSP -> the WSP."""
    return re.sub(r"\r?\n(?=[ \t])", "", text.strip("\n"))


def prop(ptype: str, name: str, value: str, domain: str = "") -> Property:
    return Property(ptype, name, value, domain)


# --- RFC 8601 Appendix B --------------------------------------------------------------------

def test_b2_service_provided_but_no_authentication_done() -> None:
    assert parse("example.org 1; none") == AuthResults("example.org", (), 1)


def test_b3_service_provided_authentication_done() -> None:
    header = unfolded("""
example.com;
          spf=pass smtp.mailfrom=example.net""")
    assert parse(header) == AuthResults("example.com", (
        Result("spf", "pass", properties=(prop("smtp", "mailfrom", "example.net",
                                               "example.net"),)),))


def test_b4_several_authentications_single_mta() -> None:
    first = unfolded("""
example.com;
          auth=pass (cram-md5) smtp.auth=sender@example.net;
          spf=pass smtp.mailfrom=example.net""")
    second = unfolded("""
example.com; iprev=pass
          policy.iprev=192.0.2.200""")
    assert parse(first) == AuthResults("example.com", (
        Result("auth", "pass", properties=(prop("smtp", "auth", "sender@example.net",
                                                "example.net"),)),
        Result("spf", "pass", properties=(prop("smtp", "mailfrom", "example.net",
                                               "example.net"),)),
    ))
    parsed = parse(second)
    assert parsed is not None
    assert [(r.method, r.result, r.properties[0].value) for r in parsed.results] == [
        ("iprev", "pass", "192.0.2.200")]


def test_b5_several_authentications_different_mtas() -> None:
    first = unfolded("""
example.com;
          dkim=pass (good signature) header.d=example.com""")
    second = unfolded("""
example.com;
          auth=pass (cram-md5) smtp.auth=sender@example.com;
          spf=fail smtp.mailfrom=example.com""")
    assert parse(first) == AuthResults("example.com", (
        Result("dkim", "pass", properties=(prop("header", "d", "example.com",
                                                "example.com"),)),))
    parsed = parse(second)
    assert parsed is not None
    assert [(r.method, r.result) for r in parsed.results] == [("auth", "pass"), ("spf", "fail")]


def test_b6_multi_tiered_authentication() -> None:
    first = unfolded("""
example.com;
      dkim=pass reason="good signature"
        header.i=@mail-router.example.net;
      dkim=fail reason="bad signature"
        header.i=@newyork.example.com""")
    second = unfolded("""
example.net;
      dkim=pass (good signature) header.i=@newyork.example.com""")
    assert parse(first) == AuthResults("example.com", (
        Result("dkim", "pass", "good signature",
               (prop("header", "i", "@mail-router.example.net", "mail-router.example.net"),)),
        Result("dkim", "fail", "bad signature",
               (prop("header", "i", "@newyork.example.com", "newyork.example.com"),)),
    ))
    parsed = parse(second)
    assert parsed is not None
    assert parsed.authserv_id == "example.net"
    assert parsed.results[0].properties[0].domain == "newyork.example.com"


def test_b7_comment_heavy_example() -> None:
    header = unfolded("""
foo.example.net (foobar) 1 (baz);
    dkim (Because I like it) / 1 (One yay) = (wait for it) fail
      policy (A dot can go here) . (like that) expired
      (this surprised me) = (as I wasn't expecting it) 1362471462""")
    assert parse(header) == AuthResults("foo.example.net", (
        Result("dkim", "fail", properties=(prop("policy", "expired", "1362471462"),),
               method_version=1),), 1)


# --- what an MTA copies in stays a value ----------------------------------------------------

def only_result(header: str) -> Result:
    parsed = parse(header)
    assert parsed is not None, header
    [result] = parsed.results
    return result


def test_an_encoded_word_is_text_never_decoded() -> None:
    parsed = parse("mx.example.com; spf=fail smtp.mailfrom==?us-ascii?q?x=3B_dmarc=3Dpass?="
                   "@evil.org; dmarc=fail header.from=example.com")
    assert parsed == AuthResults("mx.example.com", (
        Result("spf", "fail", properties=(
            prop("smtp", "mailfrom", "=?us-ascii?q?x=3B_dmarc=3Dpass?=@evil.org", "evil.org"),)),
        Result("dmarc", "fail", properties=(prop("header", "from", "example.com",
                                                 "example.com"),)),
    ))


def test_a_quoted_local_part_is_one_value() -> None:
    result = only_result('mx.example.com; spf=fail smtp.mailfrom="x;dmarc=pass"@evil.org')
    assert result.properties == (
        prop("smtp", "mailfrom", '"x;dmarc=pass"@evil.org', "evil.org"),)


ATEXT = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")


@pytest.mark.parametrize("char", [*map(chr, range(0x21, 0x7f)), "\x80", "é", "\u2028",
                                  "\ufeff", "😀", "\U0010ffff"])
def test_a_local_part_is_atext_or_non_ascii_between_dots(char: str) -> None:
    """RFC 5322 dot-atom with RFC 6532's UTF-8: every printable ASCII character but the
    specials, and every non-ASCII one."""
    header = f"mx.example.com; spf=pass smtp.mailfrom=a{char}b@example.org"
    parsed = parse(header)
    kept = parsed is not None and parsed.results[0].properties == (
        prop("smtp", "mailfrom", f"a{char}b@example.org", "example.org"),)
    assert kept == (char in ATEXT or char == "." or ord(char) >= 0x80)


def test_nested_comments_are_skipped_whole() -> None:
    result = only_result("mx.example.com; spf=fail (a (b;dmarc=pass) c) smtp.helo=mail.evil.org")
    assert result == Result("spf", "fail", properties=(
        prop("smtp", "helo", "mail.evil.org", "mail.evil.org"),))


def test_quoted_pairs_in_comments_do_not_open_or_close_them() -> None:
    header = r"mx.example.com; spf=fail (a\); dmarc=pass (\(b)) smtp.helo=h.evil.org"
    assert only_result(header).properties == (prop("smtp", "helo", "h.evil.org", "h.evil.org"),)


def test_quoted_strings_unescape_and_hide_semicolons() -> None:
    result = only_result(r'mx.example.com; spf=fail reason="a\"b;c\\d (e" '
                         r'smtp.helo="x\";dmarc=pass header.from=example.com"')
    assert result.reason == 'a"b;c\\d (e'
    assert result.properties == (
        prop("smtp", "helo", 'x";dmarc=pass header.from=example.com'),)


def test_none_and_methods_that_only_start_with_none() -> None:
    assert parse("mx.example.com; none (no checks (really))") == AuthResults("mx.example.com")
    assert parse("mx.example.com;none") == AuthResults("mx.example.com")
    assert only_result("mx.example.com; nonexistent=pass") == Result("nonexistent", "pass")


def test_versions_quoted_ids_and_case() -> None:
    assert parse("mx.example.com 1 (x); none") == AuthResults("mx.example.com", (), 1)
    assert parse("mx.example.com 2; none") == AuthResults("mx.example.com", (), 2)
    assert parse('"MX.Example.com"; none') == AuthResults("MX.Example.com")
    result = only_result("mx; DKIM/1=PASS Header.D=Example.COM")
    assert result == Result("dkim", "pass", properties=(
        prop("header", "d", "Example.COM", "example.com"),), method_version=1)


def test_reason_and_a_ptype_called_reason() -> None:
    result = only_result("mx; dkim=fail reason=expired reason.x=y")
    assert (result.reason, result.properties) == ("expired", (prop("reason", "x", "y"),))


def test_values_verifiers_write_unquoted() -> None:
    result = only_result("mx; dkim=pass header.b=AbC/dE+f header.s=sel smtp.helo=[192.0.2.1]")
    assert [p.value for p in result.properties] == ["AbC/dE+f", "sel", "[192.0.2.1]"]
    assert [p.domain for p in result.properties] == ["", "", ""]


@pytest.mark.parametrize("header", [
    "", ";", "(only a comment)", "mx.example.com", "mx.example.com;", "mx.example.com;;;",
    "mx.example.com; =pass", "mx.example.com; dmarc", "mx.example.com; dmarc=",
    "mx.example.com; dmarc=pass;",  # an empty resinfo
    "mx.example.com; dmarc=pass header.from", "mx.example.com; dmarc=pass header.from=",
    "mx.example.com; dmarc=pass header.from=example.com junk",
    "mx.example.com; dmarc=pass@evil.org",  # what decoding the encoded word used to make
    "mx.example.com; spf=fail smtp.mailfrom=x; dmarc=pass@evil.org",
    "mx.example.com; dkim=pass-header.d=example.com",  # no CFWS before the property
    'mx.example.com; dkim=pass reason="x"header.d=example.com',
    "mx.example.com; spf=pass (unterminated",
    "mx.example.com; spf=pass (a (b) smtp.mailfrom=example.com",
    "mx.example.com; spf=pass (a) b) smtp.mailfrom=example.com",
    'mx.example.com; spf=pass smtp.helo="unterminated',
    'mx.example.com; spf=pass smtp.helo="a\\',
    "mx.example.com; spf=pass smtp.helo=a\"b\"",
    "mx.example.com; spf=pass smtp.mailfrom=x @evil.org",  # CFWS inside an address
    "mx.example.com; spf=pass smtp.mailfrom=a..b@evil.org",
    "mx.example.com; spf=pass smtp.mailfrom=a@b@evil.org",
    'mx.example.com; spf=pass smtp.mailfrom="x"@evil',
    'mx.example.com; spf=pass smtp.mailfrom="x"@',
    "mx.example.com; spf=pass smtp.mailfrom=<x@evil.org>",
    "mx.example.com; none; dmarc=fail",
    "mx.example.com none",
    "mx.example.com 1 2; none",
    "mx.example.com 1234567890123; none",
    "mx.example.com; dkim/99999999999=pass",
    "mx.example.com; dmarc=pass\r\n header.from=example.com",  # not unfolded: CR LF
    "mx.example.com; dmarc=pass (a\x00b) header.from=example.com",
    'mx.example.com; spf=pass smtp.helo="a\\\x01"',
    "mx.ex\u00e4mple.com; none",  # a token is ASCII
    "mx.example.com; d\u0131kim=pass",
    "mx.example.com; spf=pass smtp.mailfrom=example.com" + " " * MAX_CHARS,
])
def test_headers_that_break_the_grammar_are_not_read(header: str) -> None:
    assert parse(header) is None


def test_the_id_of_an_unreadable_header_is_still_known() -> None:
    assert leading_id("mx.example.com; dmarc=pass junk") == "mx.example.com"
    assert leading_id(' "mx.example.com"(c);;') == "mx.example.com"
    assert leading_id("(unterminated mx.example.com") is None
    assert leading_id(";") is None
    # Spellings RFC 8601 reads as the id, but a stripping rule matching it as written not.
    assert leading_id("(c) mx.example.com; dmarc=pass") is None
    assert leading_id('"mx.ex\\ample.com"; dmarc=pass') is None
    assert leading_id('\t"mx.example.com"; dmarc=pass') == "mx.example.com"


# --- an MTA writing attacker-chosen values: they come back exactly as values ----------------

PIECES = (
    "=?us-ascii?q?x=3B_dmarc=3Dpass?=", "=?utf-8?b?OyBkbWFyYz1wYXNzIGhlYWRlci5mcm9tPWV4YW1w?=",
    ";", "(", ")", '"', "\\", "@", ".", "=", " ", "example.com", "dmarc=pass",
    "dmarc=pass header.from=example.com", "; dmarc=pass header.from=example.com",
    "dkim=pass header.d=example.com", ") ; spf=pass smtp.mailfrom=example.com (", "\u00e9",
)
PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)
ATTACKER_TEXT = st.lists(st.one_of(st.sampled_from(PIECES), st.text(PRINTABLE, max_size=6)),
                         max_size=6).map("".join)
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_STRING = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+")


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def smtp_local_part(text: str) -> str:
    """A reverse-path's local part as SMTP carries it, and so as an MTA copies it: a
    Dot-string as it is, anything else as a Quoted-string (RFC 5321 section 4.1.2)."""
    return text if _DOT_STRING.fullmatch(text) else quoted(text)


def mta_value(text: str) -> str:
    """A value as a careful MTA writes it: a token bare, anything else quoted."""
    return text if _TOKEN.fullmatch(text) else quoted(text)


def mta_comment(text: str) -> str:
    return "(" + re.sub(r"([()\\])", r"\\\1", text) + ")"


def mta_header(local: str, helo: str, reason: str, *, dmarc_fail: bool, fold: bool) -> str:
    """`mx.example.com; spf=fail smtp.mailfrom=<X>; dmarc=fail header.from=example.com`
    with the attacker's values where MTAs put them, folded or not."""
    mailfrom = f"{smtp_local_part(local)}@evil.org"
    parts = ["mx.example.com;", "spf=fail",
             mta_comment(f"mx.example.com: domain of {mailfrom} does not designate 192.0.2.9"),
             f"reason={mta_value(reason)}", f"smtp.mailfrom={mailfrom}",
             f"smtp.helo={mta_value(helo)}"]
    if dmarc_fail:
        parts[-1] += ";"
        parts += ["dmarc=fail", "header.from=example.com"]
    return ("\r\n\t" if fold else " ").join(parts)


def as_parse_py_hands_it_over(header: str) -> str:
    """What parse.py makes of the header line: unfolded, non-ASCII bytes as U+FFFD."""
    raw = unfolded(header).encode()
    return raw.decode("ascii", "replace")


DECODING_BAIT = "=?us-ascii?q?x=3B_dmarc=3Dpass_header.from=3Dexample.com_policy.x=3D?="


@settings(max_examples=300, deadline=None)
@given(local=ATTACKER_TEXT, helo=ATTACKER_TEXT, reason=ATTACKER_TEXT, dmarc_fail=st.booleans(),
       fold=st.booleans())
@example(local=DECODING_BAIT, helo="h", reason="r", dmarc_fail=False, fold=False)
@example(local="x;dmarc=pass header.from=example.com", helo="a)b;dmarc=pass (", reason='\\"',
         dmarc_fail=False, fold=True)
def test_attacker_values_come_back_as_the_values_written(local: str, helo: str, reason: str,
                                                          dmarc_fail: bool, fold: bool) -> None:
    header = as_parse_py_hands_it_over(mta_header(local, helo, reason, dmarc_fail=dmarc_fail,
                                                  fold=fold))
    parsed = parse(header)
    assert parsed is not None, header
    expected = [("spf", "fail"), ("dmarc", "fail")] if dmarc_fail else [("spf", "fail")]
    assert [(r.method, r.result) for r in parsed.results] == expected
    spf = parsed.results[0]
    assert spf.reason == as_parse_py_hands_it_over(reason)
    mailfrom, helo_property = spf.properties
    assert (mailfrom.ptype, mailfrom.property, mailfrom.domain) == ("smtp", "mailfrom", "evil.org")
    assert (helo_property.property, helo_property.value) == ("helo",
                                                             as_parse_py_hands_it_over(helo))


FRAGMENTS = st.sampled_from([*' \t;=()"\\@.:/abd1-', "dkim", "pass", "none", "header.d"])


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAGMENTS, max_size=40).map("".join))
def test_any_text_parses_or_not_without_raising(header: str) -> None:
    parsed = parse("mx.example.com; " + header)
    assert parsed is None or all(r.method and r.result for r in parsed.results)
