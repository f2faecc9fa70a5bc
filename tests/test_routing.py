"""Routing: [[rule]] tables first (first match wins), then department addresses, the
mailbox, and default_department; the chosen priority reaches the ticket."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import regex

from mailgate.config.directory import Directory, load_directory
from mailgate.core.mime.parse import parse
from mailgate.core.model import Origin, Priority
from mailgate.core.render import Renderer
from mailgate.core.routing import Route, departments_for, routes_for, searches_of
from mailgate.core.rulesearch import MAX_BODY_CHARS, Search, search_ahead
from mailgate.errors import ConfigError
from mailgate.intake.pipeline import Pipeline, PipelineSettings
from mailgate.intake.smtp import PushHandler
from tests.factories import (
    EXAMPLE_DIRECTORY,
    IT,
    TEMPLATES,
    FakeClock,
    Harness,
    current_of,
    example_directory,
    harness,
    mail,
)
from tests.test_cli import run

HIGH, NORMAL, LOW = Priority.HIGH, Priority.NORMAL, Priority.LOW
SMTP = Origin("smtp")

DEPARTMENTS = """
[[department]]
key = "it"
addresses = ["it@example.com"]
[[department]]
key = "fac"
addresses = ["fac@example.com"]
[[department]]
key = "pay"
addresses = ["pay@example.com"]
[[person]]
email = "paula@corp.example.com"
department = "pay"
"""


def directory_with(tmp_path: Path, rules: str, extra: str = "") -> Directory:
    path = tmp_path / "directory.toml"
    path.write_text(extra + DEPARTMENTS + rules)
    return load_directory(path)


def route(directory: Directory, origin: Origin = SMTP, **kwargs: object) -> list[Route]:
    """Routes of a test mail, by default to it@ (the "it" department in DEPARTMENTS)."""
    kwargs.setdefault("to", "it@example.com")
    return routes_for(parse(mail(**kwargs)), origin, directory)  # type: ignore[arg-type]


# --- rule validation ----------------------------------------------------------------------

def rule_problems(tmp_path: Path, rules: str, extra: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        directory_with(tmp_path, rules, extra)
    lines = caught.value.problems
    assert all(line.startswith(f"{tmp_path / 'directory.toml'}: ") for line in lines), lines
    return [line.removeprefix(f"{tmp_path / 'directory.toml'}: ") for line in lines]


def test_every_rule_mistake_is_one_line(tmp_path: Path) -> None:
    found = rule_problems(tmp_path, """
[[rule]]
subject = "([a-z"
department = "hr"
priority = "asap"
colour = "red"
[[rule]]
name = "mail-from-nowhere"
to = ["it@example.com", "not an address"]
from = ["@example.com", "@", "bob"]
body = "(a+)+$"
header = { "X-Spam-Score" = "^9", "X-Priority" = 1 }
from_department = "sales"
[[rule]]
department = "it"
[[rule]]
name = "default"
to = "it@example.com"
[[rule]]
name = "mail-from-nowhere"
subject = "x"
department = "fac"
""")
    assert found == [
        "rule[0].department: unknown department 'hr'",
        "rule[0].priority: must be one of high, normal, low; got 'asap'",
        "rule[0].subject: invalid regular expression '([a-z': unterminated character set "
        "at position 5",
        "rule[0].colour: unknown key (check the spelling against the README)",
        "rule[1].department: missing; set it to a string",
        "rule[1].to: not an email address: 'not an address'",
        "rule[1].from: not an email address or @domain: '@'",
        "rule[1].from: not an email address or @domain: 'bob'",
        "rule[1].from_department: unknown department 'sales'",
        "rule[1].header.X-Spam-Score: mailgate does not keep this header, so no rule can see "
        "it; usable: auto-submitted, content-type, feedback-type, from, importance, keywords, "
        "list-id, list-post, list-unsubscribe, precedence, priority, report-type, "
        "return-path, sensitivity, x-auto-response-suppress, x-autoreply, x-autorespond, "
        "x-failed-recipients, x-loop, x-mailgate-instance, x-msmail-priority, x-priority",
        "rule[1].header.X-Priority: expected a string, got 1",
        "rule[2]: no matcher (to, from, from_department, subject, body, header); a rule "
        "without one takes every message: use default_department",
        "rule[3].name: 'default' is reserved (it reports routing without a rule)",
        "rule[3].department: missing; set it to a string",
        "rule[4].name: duplicate rule name 'mail-from-nowhere' (also rule[1])",
    ]


def test_from_department_needs_people(tmp_path: Path) -> None:
    path = tmp_path / "directory.toml"
    path.write_text(DEPARTMENTS.split("[[person]]")[0]
                    + '[[rule]]\nfrom_department = "pay"\ndepartment = "it"\n')
    with pytest.raises(ConfigError, match=r"rule\[0\].from_department: needs \[\[person\]\]"):
        load_directory(path)


@pytest.mark.parametrize("pattern", ["(a|b)+", "(?:ab+c)", "(a++)+", "(?>a+)+", "a{2,5}+",
                                     "(\\w{1,3})*", "password|locked out", "(a+)+$"])
def test_patterns_compile_case_insensitively(tmp_path: Path, pattern: str) -> None:
    rules = f'[[rule]]\nsubject = {json.dumps(pattern)}\ndepartment = "it"\n'
    compiled = directory_with(tmp_path, rules).rules[0].subject
    assert compiled is not None and compiled.flags & regex.IGNORECASE


# --- precedence ---------------------------------------------------------------------------

RULES = """
[[rule]]
name = "outage"
subject = "outage|down"
department = "it"
priority = "high"
[[rule]]
name = "anything-about-rooms"
subject = "room"
department = "fac"
[[rule]]
name = "help-fac"
to = "help+fac@example.com"
department = "fac"
[[rule]]
name = "help"
to = "help@example.com"
department = "it"
priority = "low"
"""


def test_first_matching_rule_decides_alone(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, RULES)
    # Both subject rules match; the first one wins, and only its department gets a ticket
    # although the message was also sent to fac.
    assert route(directory, subject="Room booking system is down", to="fac@example.com",
                 cc="it@example.com") == [Route("it", HIGH, "outage")]
    assert route(directory, subject="Meeting room too cold") == [
        Route("fac", NORMAL, "anything-about-rooms")]


def test_without_a_rule_addresses_mailbox_and_default_decide(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, RULES, 'default_department = "it"\n')
    assert route(directory, subject="Printer", to="fac@example.com", cc="pay@example.com") == [
        Route("fac", NORMAL, "address"), Route("pay", NORMAL, "address")]
    assert route(directory, Origin("imap:it", ("it",)), subject="x", to="fac@example.com") == [
        Route("fac", NORMAL, "address"), Route("it", NORMAL, "mailbox")]
    assert route(directory, subject="x", to="someone@example.com") == [
        Route("it", NORMAL, "default")]


def test_no_route_at_all_without_default(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, RULES)
    assert route(directory, subject="x", to="someone@example.com") == []


def test_departments_for_is_the_keys_of_routes_for() -> None:
    directory = example_directory()
    msg = parse(mail(to="facilities@example.com", cc="it-help@example.com"))
    assert departments_for(msg, IT, directory) == ["facilities", "it"]
    locked = parse(mail("I am locked out", to="facilities@example.com",
                        cc="it-help@example.com"))
    assert departments_for(locked, IT, directory) == ["it"]


# --- matchers -----------------------------------------------------------------------------

def test_plus_addressing_matches_exact_tag_and_base_address(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, RULES)
    assert route(directory, subject="x", to="help+fac@example.com") == [
        Route("fac", NORMAL, "help-fac")]
    assert route(directory, subject="x", to="Help+Other@Example.com") == [
        Route("it", LOW, "help")]
    assert route(directory, subject="x", to="help@example.com") == [Route("it", LOW, "help")]
    # A rule for the tagged address does not match its base, nor another tag on top.
    assert route(directory, subject="x", to="help+fac+x@example.com") == [
        Route("it", LOW, "help")]


def test_rule_address_matches_envelope_recipients_too(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, RULES)
    bcc = Origin("smtp", envelope_recipients=("help+fac@example.com",))
    assert route(directory, bcc, subject="x", to="someone@example.com") == [
        Route("fac", NORMAL, "help-fac")]


def test_from_department_uses_the_people_list(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, """
[[rule]]
name = "payroll-staff"
from_department = "pay"
department = "it"
priority = "high"
""")
    assert route(directory, subject="x", sender="Paula <Paula+x@corp.example.com>",
                 to="fac@example.com") == [Route("it", HIGH, "payroll-staff")]
    assert route(directory, subject="x", sender="stranger@corp.example.com",
                 to="fac@example.com") == [Route("fac", NORMAL, "address")]


def test_from_matches_address_or_domain(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, """
[[rule]]
name = "vendor"
from = ["@vendor.example", "ceo@example.com"]
department = "fac"
""")
    assert route(directory, subject="x", sender="a@vendor.example")[0].rule == "vendor"
    assert route(directory, subject="x", sender="ceo@example.com")[0].rule == "vendor"
    assert route(directory, subject="x", sender="a@sub.vendor.example")[0].rule == "address"
    assert route(directory, subject="x", sender="a@notvendor.example")[0].rule == "address"


def test_header_rule_needs_the_header_present_and_matching(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, """
[[rule]]
name = "urgent-flag"
header = { "X-Priority" = "^[12]", "importance" = "^$|high" }
department = "it"
priority = "high"
""")
    both = {"X-Priority": "1 (Highest)", "Importance": "High"}
    assert route(directory, subject="x", headers=both)[0].rule == "urgent-flag"
    assert route(directory, subject="x", headers={"X-Priority": "1"})[0].rule == "address"
    assert route(directory, subject="x", headers={**both, "X-Priority": "3"})[0].rule == \
        "address"


def test_all_matchers_of_a_rule_must_match(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, """
[[rule]]
name = "it-printer"
to = "it@example.com"
subject = "printer"
body = "toner|paper jam"
department = "fac"
""")
    assert route(directory, subject="Printer", to="it@example.com",
                 body="Paper jam on floor 2")[0].rule == "it-printer"
    assert route(directory, subject="Printer", to="it@example.com",
                 body="It is offline")[0].rule == "address"
    assert route(directory, subject="Printer", to="pay@example.com",
                 body="toner")[0].rule == "address"


def test_body_and_subject_are_matched_on_a_bounded_prefix(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, """
[[rule]]
name = "late-word"
body = "needle"
department = "fac"
[[rule]]
name = "late-subject"
subject = "needle"
department = "fac"
""")
    early = "x" * (MAX_BODY_CHARS - 10) + " needle"
    late = "x" * MAX_BODY_CHARS + " needle"
    assert route(directory, subject="x", to="it@example.com", body=early)[0].rule == \
        "late-word"
    assert route(directory, subject="x", to="it@example.com", body=late)[0].rule == "address"
    assert route(directory, subject="y" * 1000 + " needle",
                 to="it@example.com")[0].rule == "address"


@pytest.mark.parametrize("pattern", ["error.*disk.*full", "(a|aa)+$", "x.*y"])
def test_a_slow_rule_on_hostile_mail_is_stopped(tmp_path: Path, pattern: str) -> None:
    # Each of these backtracks for seconds to minutes on this text with Python's re.
    directory = directory_with(tmp_path, f'[[rule]]\nbody = {json.dumps(pattern)}\n'
                               'department = "fac"\n')
    body = {"error.*disk.*full": "error disk " * 1000, "(a|aa)+$": "a" * 5000 + "b",
            "x.*y": "x" * 10_000}[pattern]
    msg = parse(mail(subject="x", to="it@example.com", body=body))
    started = time.monotonic()
    assert routes_for(msg, SMTP, directory)[0].rule == "address"  # stopped: no match
    assert time.monotonic() - started < 2


def test_searches_done_ahead_route_as_searches_done_here(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, """
[[rule]]
name = "by-header"
header = { "X-Priority" = "^[12]" }
department = "fac"
[[rule]]
name = "by-body"
body = "printer|toner"
department = "fac"
""")
    searches = searches_of(directory)
    assert {s.field for s in searches} == {"header:x-priority", "body"}
    for raw in (mail(subject="x", to="it@example.com", headers={"X-Priority": "1"}),
                mail(subject="x", to="it@example.com", body="the toner is empty"),
                mail(subject="x", to="it@example.com", body="nothing to see")):
        msg = parse(raw)
        ahead = search_ahead(msg, searches)
        assert routes_for(msg, SMTP, directory, ahead) == routes_for(msg, SMTP, directory)
    msg = parse(mail(subject="x", to="it@example.com", body="toner"))
    # A search the reading process did not do (a rule a reload added meanwhile) is done here.
    assert routes_for(msg, SMTP, directory, {})[0].rule == "by-body"
    # What the reading process found is what counts: it searched the same bounded text.
    body = Search("printer|toner", directory.rules[1].body.flags, "body")  # type: ignore[union-attr]
    assert routes_for(msg, SMTP, directory, {body: False})[0].rule == "address"


def test_a_search_that_ran_out_of_time_ahead_is_no_match(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, '[[rule]]\nbody = "(a|aa)+$"\ndepartment = "fac"\n')
    msg = parse(mail(subject="x", to="it@example.com", body="a" * 5000 + "b"))
    ahead = search_ahead(msg, searches_of(directory))
    assert list(ahead.values()) == [None]  # stopped
    assert routes_for(msg, SMTP, directory, ahead)[0].rule == "address"


def test_example_directory_rules() -> None:
    directory = example_directory()
    it = "it-help@example.com"
    assert route(directory, subject="Password expired", to=it)[0] == Route(
        "it", HIGH, "locked-out")
    assert route(directory, subject="x", to=it, headers={"X-Priority": "1"})[0].rule == \
        "marked-important"
    assert route(directory, subject="x", to=it, sender="grace@example.com")[0].rule == \
        "payroll-staff"
    assert route(directory, subject="x", to=it, sender="ann@example.com")[0].rule == "address"
    assert route(directory, subject="x", to="help+facilities@example.com") == [
        Route("facilities", NORMAL, "help-facilities")]
    assert route(directory, subject="x", to="help+printer@example.com") == [
        Route("it", LOW, "help")]


# --- the SMTP listener accepts rule addresses ----------------------------------------------

def test_accepts_department_and_rule_addresses(tmp_path: Path) -> None:
    directory = directory_with(tmp_path, RULES)
    assert directory.accepts("IT+x@example.com")
    assert directory.accepts("help+fac@example.com") and directory.accepts("help+zz@example.com")
    assert not directory.accepts("someone@example.com")
    assert directory_with(tmp_path, RULES, 'default_department = "it"\n').accepts(
        "someone@example.com")


async def test_smtp_rcpt_takes_rule_addresses_and_refuses_others(tmp_path: Path) -> None:
    pipeline = Pipeline(directory_with(tmp_path, RULES), Renderer(TEMPLATES), PipelineSettings(),
                        FakeClock())
    handler = PushHandler(store=None, current=current_of(pipeline),  # type: ignore[arg-type]
                          on_commit=lambda: None)
    envelope = SimpleNamespace(rcpt_tos=[])

    async def rcpt(address: str) -> str:
        return await handler.handle_RCPT(None, None, envelope, address, [])  # type: ignore[arg-type]

    assert (await rcpt("help+fac@example.com")).startswith("250")
    assert (await rcpt("someone@example.com")).startswith("550")
    assert envelope.rcpt_tos == ["help+fac@example.com"]


# --- the priority reaches the ticket ------------------------------------------------------

@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    built = await harness(tmp_path)
    yield built
    await built.store.close()


async def test_rule_priority_reaches_the_ticket_and_the_ack(h: Harness) -> None:
    outcome = await h.deliver(mail("Locked out of my account", cc="facilities@example.com"))
    assert outcome.tickets == ("IT-1001",)  # the rule decided alone: no Facilities ticket
    assert await h.rows("SELECT ref, priority FROM tickets") == [("IT-1001", "high")]
    [(raw,)] = await h.rows("SELECT raw FROM outbox WHERE kind = 'ack'")
    assert b"1 business hour" in raw  # the high-priority first-response target


async def test_address_routing_keeps_normal_priority(h: Harness) -> None:
    await h.deliver(mail("Printer", message_id="<p@example.com>",
                         cc="facilities@example.com"))
    assert await h.rows("SELECT ref, priority FROM tickets ORDER BY ref") == [
        ("FAC-1001", "normal"), ("IT-1001", "normal")]


async def test_rule_with_low_priority_through_the_pipeline(h: Harness) -> None:
    await h.deliver(mail("x", to="help@example.com"), Origin("smtp"))
    assert await h.rows("SELECT ref, priority FROM tickets") == [("IT-1001", "low")]


# --- mailgate route -----------------------------------------------------------------------

def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "mailgate.toml"
    # No [smtp] or mailboxes: route needs nothing but the directory.
    config.write_text(f'[directory]\npath = "{EXAMPLE_DIRECTORY}"\n')
    return config


def test_cli_route_prints_department_priority_and_rule(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run("--config", str(config), "route", "--from", "ann@example.com",
                 "--to", "it-help@example.com", "--subject", "Locked out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "DEPARTMENT  NAME             PRIORITY  RULE",
        "it          IT Service Desk  high      locked-out"]


def test_cli_route_json_with_cc_header_and_body(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run("--config", str(config), "route", "--from", "ann@example.com",
                 "--to", "facilities@example.com", "--cc", "it-help@example.com",
                 "--subject", "Lamp", "--body", "broken", "--header", "X-Custom: 1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"department": "facilities", "name": "Facilities", "priority": "normal",
         "rule": "address"},
        {"department": "it", "name": "IT Service Desk", "priority": "normal",
         "rule": "address"}]
    assert "does not keep the header X-Custom" in result.stderr
    result = run("--config", str(config), "route", "--from", "ann@example.com",
                 "--to", "it-help@example.com", "--subject", "x", "--header", "X-Priority: 1",
                 "--json")
    assert json.loads(result.stdout)[0]["rule"] == "marked-important"


def test_cli_route_without_any_route_exits_1(tmp_path: Path) -> None:
    directory = tmp_path / "directory.toml"
    directory.write_text(DEPARTMENTS)
    config = tmp_path / "mailgate.toml"
    config.write_text('[directory]\npath = "directory.toml"\n')
    result = run("--config", str(config), "route", "--from", "a@example.com",
                 "--to", "nobody@example.com", "--subject", "x")
    assert result.returncode == 1
    assert "would quarantine this message" in result.stderr


def test_cli_route_reports_directory_problems(tmp_path: Path) -> None:
    directory = tmp_path / "directory.toml"
    directory.write_text(DEPARTMENTS + '[[rule]]\nsubject = "("\ndepartment = "it"\n')
    config = tmp_path / "mailgate.toml"
    config.write_text('[directory]\npath = "directory.toml"\n')
    result = run("--config", str(config), "route", "--from", "a@example.com",
                 "--to", "it@example.com", "--subject", "x")
    assert result.returncode == 1
    assert result.stderr.startswith(f"{directory}: rule[0].subject: invalid regular expression")
