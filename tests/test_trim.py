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


# Attributions as clients write them in other languages (Gmail, Thunderbird, Apple Mail).
@pytest.mark.parametrize("attribution", [
    "Il giorno mar 24 nov 2026 alle ore 10:00 Ann <ann@example.com> ha scritto:",
    "Em ter., 24 de nov. de 2026 às 10:00, Ann <ann@example.com> escreveu:",
    "Op di 24 nov 2026 om 10:00 schreef Ann <ann@example.com>:",
    "Den tis 24 nov. 2026 kl 10:00 skrev Ann <ann@example.com>:",
    "wt., 24 lis 2026 o 10:00 Ann <ann@example.com> napisał(a):",
    "W dniu 24.11.2026 o 10:00, Ann pisze:",
    "Dne 24. 11. 2026 v 10:00 Ann napsal(a):",
    "24.11.2026 10:00, Ann пишет:",
    "вт, 24 нояб. 2026 г. в 10:00, Ann <ann@example.com>:",
    "2026年11月24日(火) 10:00 Ann <ann@example.com>:",
    "Ann <ann@example.com> 于2026年11月24日周二 10:00写道：",
    "ti 24.11.2026 klo 10.00 Ann (ann@example.com) kirjoitti:",
    "24 Kas 2026 Sal, 10:00 tarihinde Ann <ann@example.com> şunu yazdı:",
    "Ann <ann@example.com> ezt írta (időpont: 2026. nov. 24., K, 10:00):",
    "On Nov 24, 2026, at 10:00, Ann Example <ann@example.com> wrote:",
])
def test_attributions_in_many_languages(attribution: str) -> None:
    assert trim_reply(f"Fatto.\n\n{attribution}\n\n> Vecchio testo\n> altro\n") == "Fatto."


def test_a_verb_and_a_date_begin_a_quote_only_when_a_quote_follows() -> None:
    text = "The installer wrote at 10:30:\nERROR 1603 fatal error during installation\n"
    assert trim_reply(text) == text.strip()
    text = "Ann <ann@example.com> at 10:00:\nthe printer again\n"  # no verb, nothing quoted
    assert trim_reply(text) == text.strip()


@pytest.mark.parametrize(("separator", "from_label", "sent_label"), [
    ("-----Messaggio originale-----", "Da:", "Inviato:"),
    ("-----Mensagem original-----", "De:", "Enviada em:"),
    ("-----Oorspronkelijk bericht-----", "Van:", "Verzonden:"),
    ("-----Ursprungligt meddelande-----", "Från:", "Skickat:"),
    ("-----Oryginalna wiadomość-----", "Od:", "Wysłano:"),
    ("-----Исходное сообщение-----", "От:", "Отправлено:"),
    ("-----Original Message-----", "差出人:", "送信日時:"),
    ("-----原始邮件-----", "发件人:", "发送时间:"),
])
def test_outlook_quotes_in_other_languages(separator: str, from_label: str,
                                           sent_label: str) -> None:
    quoted = f"{from_label} Ann\n{sent_label} 24.11.2026 10:00\nOld request text\n"
    assert trim_reply(f"Done.\n\n{separator}\n{quoted}") == "Done."
    assert trim_reply(f"Done.\n\n________________________________\n{quoted}") == "Done."
    assert trim_reply(f"Done.\n\n{quoted}") == "Done."


@pytest.mark.parametrize("mobile", [
    "Inviato dal mio iPhone", "Envoyé de mon iPhone", "Enviado desde mi Android",
    "Verzonden vanaf mijn iPhone", "Skickat från min iPhone", "Wysłane z mojego iPhone'a",
    "Отправлено с iPhone", "iPhoneから送信", "发自我的iPhone",
])
def test_mobile_signatures_in_other_languages(mobile: str) -> None:
    assert trim_reply(f"Grazie, funziona.\n\n{mobile}\n") == "Grazie, funziona."


@pytest.mark.parametrize("forwarded", [
    "---------- Messaggio inoltrato ---------", "---------- Doorgestuurd bericht ---------",
    "---------- Пересылаемое сообщение ---------",
])
def test_a_forwarded_message_in_other_languages_is_content(forwarded: str) -> None:
    text = f"See below.\n\n{forwarded}\nFrom: Printer\nDate: Tue\n\nToner empty\n"
    assert "Toner empty" in trim_reply(text)
