"""The reply trimmer: what a person wrote on top, without quotes and signatures."""

from __future__ import annotations

import pytest

from mailgate.core.trim import trim_reply


def test_plain_text_is_kept() -> None:
    assert trim_reply("Hello,\n\nthe printer works again.\n") == (
        "Hello,\n\nthe printer works again.")


def test_gmail_attribution_and_quote_are_cut() -> None:
    text = ("I restarted it, try again.\n\nOn Tue, 24 Nov 2026 at 10:00, Ann <ann@example.com>"
            " wrote:\n> It only beeps.\n> Thanks\n")
    assert trim_reply(text) == "I restarted it, try again."


def test_wrapped_attribution_is_cut() -> None:
    text = ("Fixed.\n\nOn Tue, 24 Nov 2026 at 10:00, Ann Example <ann@example.com>\n"
            "wrote:\n\n> It only beeps.\n")
    assert trim_reply(text) == "Fixed."


@pytest.mark.parametrize("attribution", [
    "Am 24.11.2026 um 10:00 schrieb Ann Example <ann@example.com>:",
    "Le mar. 24 nov. 2026 à 10:00, Ann <ann@example.com> a écrit :",
    "El mar, 24 nov 2026 a las 10:00, Ann (<ann@example.com>) escribió:",
])
def test_other_languages_attributions(attribution: str) -> None:
    assert trim_reply(f"Erledigt.\n\n{attribution}\n> Alt\n") == "Erledigt."


def test_outlook_original_message_separator() -> None:
    text = ("Please send the serial number.\n\n-----Original Message-----\n"
            "From: Ann\nSent: Tuesday\nSubject: Laptop\n\nIt only beeps.\n")
    assert trim_reply(text) == "Please send the serial number."


def test_outlook_header_block_without_separator() -> None:
    text = ("Done.\n\n________________________________\nFrom: Ann Example\n"
            "Sent: Tuesday, November 24, 2026 10:00\nTo: IT\nSubject: Laptop\n\nold text\n")
    assert trim_reply(text) == "Done."
    text = "Done.\n\nFrom: Ann Example <ann@example.com>\nDate: Tue, 24 Nov 2026\n\nold\n"
    assert trim_reply(text) == "Done."


def test_a_from_line_alone_is_not_a_quote() -> None:
    text = "From: the third floor\nthe printer is jammed.\nNothing else happened.\n"
    assert trim_reply(text) == text.strip()


def test_signature_separator_cuts_the_rest() -> None:
    assert trim_reply("New cable is on its way.\n-- \nAlice Adams\nIT Service Desk\n") == (
        "New cable is on its way.")
    assert trim_reply("On its way.\n--\nAlice\n") == "On its way."


def test_mobile_signature() -> None:
    assert trim_reply("Thanks, works now.\n\nSent from my iPhone\n") == "Thanks, works now."


def test_interleaved_quote_lines_are_dropped() -> None:
    text = "> Which model?\nThinkPad T14\n> Since when?\nMonday\n"
    assert trim_reply(text) == "ThinkPad T14\nMonday"


def test_double_dash_inside_a_line_is_kept() -> None:
    assert trim_reply("Use --force -- it is safe.\n") == "Use --force -- it is safe."


def test_only_quoted_text_leaves_nothing() -> None:
    assert trim_reply("On Mon, Ann wrote:\n> hello\n") == ""


def test_crlf_and_blank_runs_are_normalised() -> None:
    assert trim_reply("a\r\n\r\n\r\n\r\nb\r\n") == "a\n\nb"


def test_a_sentence_starting_with_on_is_not_an_attribution() -> None:
    text = "On Monday the screen went dark.\nIt wrote nothing since.\n"
    assert trim_reply(text) == text.strip()


def test_a_forwarded_message_is_content_not_history() -> None:
    text = ("See the error below.\n\n---------- Forwarded message ---------\n"
            "From: Printer <printer@example.com>\nDate: Tue\n\nToner empty\n")
    assert "Toner empty" in trim_reply(text)
