"""The command parser: leading #lines of an agent's reply, all or nothing."""

from __future__ import annotations

import time

from mailgate.core.commands import Command, parse_commands


def test_no_commands_keeps_the_text() -> None:
    parsed = parse_commands("Hello Ann,\n#resolve is not a command here\n")
    assert parsed.commands == () and parsed.errors == ()
    assert not parsed.has_commands
    assert parsed.text.startswith("Hello Ann")


def test_leading_commands_and_the_rest() -> None:
    parsed = parse_commands("\n#take\n#Priority HIGH\n\nI am on it.\n#not a command\n")
    assert parsed.commands == (Command("take"), Command("priority", "high"))
    assert parsed.errors == ()
    assert parsed.text == "I am on it.\n#not a command"


def test_note_marks_the_message_internal() -> None:
    parsed = parse_commands("#note\nRequester is a VIP, be quick.")
    assert parsed.note and parsed.actions == ()
    assert parsed.text == "Requester is a VIP, be quick."


def test_arguments() -> None:
    parsed = parse_commands("#assign bob@example.com\n#transfer Facilities Team\n#resolve "
                            "replaced the cable")
    assert parsed.commands == (Command("assign", "bob@example.com"),
                               Command("transfer", "Facilities Team"),
                               Command("resolve", "replaced the cable"))


def test_unknown_command_is_an_error() -> None:
    parsed = parse_commands("#ntoe\nsecret stuff")
    assert parsed.errors and "unknown command #ntoe" in parsed.errors[0]
    assert parsed.unknown_only


def test_missing_or_bad_arguments() -> None:
    assert "needs a person" in parse_commands("#assign").errors[0]
    assert "expected one of low, normal, high" in parse_commands("#priority urgent").errors[0]
    assert "needs a department" in parse_commands("#transfer\n").errors[0]


def test_one_bad_line_fails_the_whole_reply() -> None:
    parsed = parse_commands("#take\n#priorty high\n")
    assert parsed.errors and not parsed.unknown_only
    assert parsed.commands == (Command("take"),)  # read, but the caller must not run it


def test_contradictions() -> None:
    assert "contradict" in parse_commands("#resolve\n#reopen").errors[0]
    assert "contradict" in parse_commands("#take\n#assign bob").errors[0]
    assert "more than once" in parse_commands("#resolve\n#resolve").errors[0]


def test_a_number_sign_with_digits_is_text() -> None:
    parsed = parse_commands("#1 the cable\n#2 the screen")
    assert not parsed.has_commands


def test_too_many_command_lines() -> None:
    parsed = parse_commands("#take\n" * 11)
    assert any("more than 10" in e for e in parsed.errors)


def test_command_str() -> None:
    assert str(Command("assign", "bob")) == "#assign bob"
    assert str(Command("resolve")) == "#resolve"


def test_rating_is_a_single_digit_on_the_first_line() -> None:
    from mailgate.core.commands import parse_rating

    assert parse_rating("\n 5 \n") == (5, "")
    assert parse_rating("4/5\nQuick, but the laptop is still slow.") == (
        4, "Quick, but the laptop is still slow.")
    assert parse_rating("3.") == (3, "")
    for text in ("6", "0", "45", "5 stars is too much", "It works, 5", ""):
        assert parse_rating(text) is None, text


def test_a_rating_line_of_blanks_is_read_in_linear_time() -> None:
    """Anyone can send such a line in a reply to a resolved ticket (its number is on every
    mail about it): three adjacent \\s* in the old pattern backtracked in cubic time, 2,000
    blanks took 17 s on the event loop. The bound is loose on purpose: it only tells
    the two apart."""
    from mailgate.core.commands import parse_rating

    started = time.monotonic()
    for blank in (" ", "\t", "\u00a0"):
        assert parse_rating("1" + blank * 2000 + "x") is None
        assert parse_rating("4" + blank * 2000 + "/" + blank * 2000 + "5 !") == (4, "")
    assert time.monotonic() - started < 2
