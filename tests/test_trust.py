"""Who a From: address can be believed to be: trusted domains and our own MTA's verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.config import load_config
from mailgate.errors import ConfigError
from mailgate.parse import parse
from mailgate.trust import Trust, TrustPolicy, may_command, sender_trust
from tests.factories import harness, mail

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


def test_commands_need_a_vouched_or_domain_trusted_sender() -> None:
    assert [may_command(t) for t in Trust] == [False, False, True, True]


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
