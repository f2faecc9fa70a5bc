"""Cut quoted history and signatures off a reply's text (pure; no I/O).

What a person wrote on top of a reply is what a ticket should keep and relay; the quoted
conversation below it is already on the ticket. The rules are deliberately few and
explicit, in the order a reader scans a mail top-down:

- the text ends at the first attribution line of a quote: a line ending in a colon that
  says someone wrote ("On <date>, <someone> wrote:", "Il giorno ... ha scritto:",
  "... 写道："), with a date, time or address in it or a quote right below it; a line with
  an address and a time but no verb (Gmail's Russian and Japanese forms) when a quote
  follows; also wrapped over two lines;
- at an Outlook "-----Original Message-----" separator, or an Outlook header block
  ("From: ..." followed within three lines by "Sent:"/"Date:");
- the text ends at a signature separator ("-- ", or "--" when the trailing space was
  eaten) and at "Sent from my ..." lines;
- lines starting with ">" are quoted and dropped wherever they are.

Each phrase is listed in the languages mail clients (Outlook, Gmail, Apple Mail,
Thunderbird) write it in: a table, not one example per language.

A forwarded message ("---------- Forwarded message ---------") is not history but content
someone chose to send, so it is kept.

When nothing is left (a mail that is only a quote), the text is empty: the caller decides.
"""

from __future__ import annotations

import re


def _any_of(phrases: tuple[str, ...]) -> str:
    """A regex alternative of PHRASES, blanks inside them matching any run of blanks."""
    return "|".join(r"\s+".join(map(re.escape, p.split())) for p in phrases)


# "wrote", as reply attributions write it (whole words; CJK phrases anywhere).
_WROTE_WORDS = ("wrote", "schrieb", "écrit", "escribió", "escreveu", "ha scritto",
                "scrisse", "schreef", "heeft geschreven", "skrev", "kirjoitti", "napisał",
                "napisała", "napsal", "napsala", "napísal", "пишет", "написал", "написала",
                "pisze", "пише", "написав", "yazdı", "írta", "έγραψε", "a scris", "napisao",
                "napisala")
_WROTE_CJK = ("写道", "寫道", "書きました", "작성", "のメッセージ")
_WROTE = re.compile(rf"(?i)\b(?:{_any_of(_WROTE_WORDS)})(?!\w)|{_any_of(_WROTE_CJK)}")
# How Thunderbird, Apple Mail and Gmail open one: "On", "Am", "Le", "Il giorno", "W dniu"...
_OPENING = re.compile(r"(?i)^\s*(?:on|am|le|el|op|il|em|den|w\s+dniu|dne|в)\b")
_TIME = re.compile(r"\d{1,2}[:.]\d\d|\d{4}")  # 10:00, 10.00, a year
_ADDRESS = re.compile(r"<[^<>@\s]+@[^<>@\s]+>|\S@\S")

_ORIGINAL = ("original message", "ursprüngliche nachricht", "ursprungliche nachricht",
             "message d'origine", "mensaje original", "mensagem original",
             "messaggio originale", "oorspronkelijk bericht", "origineel bericht",
             "ursprungligt meddelande", "oprindelig meddelelse", "opprinnelig melding",
             "alkuperäinen viesti", "oryginalna wiadomość", "wiadomość oryginalna",
             "původní zpráva", "pôvodná správa", "исходное сообщение",
             "вихідне повідомлення", "özgün ileti", "orijinal mesaj", "eredeti üzenet",
             "αρχικό μήνυμα", "mesaj original", "izvorna poruka", "元のメッセージ", "原始邮件",
             "原始郵件", "원본 메시지")
_SEPARATOR = re.compile(rf"(?i)^\s*+-{{2,}}+\s*+(?:{_any_of(_ORIGINAL)})\s*-{{2,}}\s*$")

_FORWARDED_PHRASES = (
    "forwarded message", "weitergeleitete nachricht", "message transféré",
    "message transfere", "mensaje reenviado", "mensagem encaminhada", "messaggio inoltrato",
    "doorgestuurd bericht", "vidarebefordrat meddelande", "videresendt meddelelse",
    "videresendt melding", "välitetty viesti", "wiadomość przekazana",
    "przekazana wiadomość", "přeposlaná zpráva", "пересылаемое сообщение",
    "переслане повідомлення", "iletilmiş ileti", "továbbított üzenet",
    "προωθημένο μήνυμα", "転送されたメッセージ", "転送メッセージ", "已转发邮件", "轉寄郵件",
    "전달된 메시지")
_FORWARDED = re.compile(
    rf"(?i)^\s*+-{{2,}}+\s*+(?:{_any_of(_FORWARDED_PHRASES)})\s*-{{2,}}\s*$")

# Outlook's header block of the quoted mail, in its languages: "From:" then "Sent:".
_FROM_LABELS = ("from", "von", "de", "da", "van", "från", "fra", "lähettäjä", "od", "от",
                "від", "kimden", "feladó", "από", "差出人", "发件人", "寄件者", "보낸 사람")
_SENT_LABELS = ("sent", "date", "gesendet", "datum", "envoyé", "envoye", "enviado",
                "enviado el", "enviado em", "enviada em", "enviada", "inviato", "data",
                "verzonden", "skickat", "sendt", "lähetetty", "wysłano", "wysłane",
                "odesláno", "odoslané", "отправлено", "надіслано", "gönderildi", "tarih",
                "elküldve", "küldve", "στάλθηκε", "送信日時", "发送时间", "發送時間",
                "보낸 날짜")
_HEADER_FROM = re.compile(rf"(?i)^\s*\*?(?:{_any_of(_FROM_LABELS)})\s*:\*?\s")
_HEADER_SENT = re.compile(rf"(?i)^\s*\*?(?:{_any_of(_SENT_LABELS)})\s*:")
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")

_MOBILE_PHRASES = ("sent from my", "von meinem", "get outlook for", "envoyé de mon",
                   "envoyé depuis mon", "enviado desde mi", "enviado do meu",
                   "enviado de meu", "inviato dal mio", "inviato da iphone",
                   "verzonden vanaf mijn", "verstuurd vanaf mijn", "verzonden met mijn",
                   "skickat från min", "sendt fra min", "lähetetty iphonesta",
                   "wysłane z mojego", "wysłane z iphone", "odesláno z mého",
                   "отправлено с моего", "отправлено с iphone", "надіслано з мого",
                   "发自我的", "從我的", "iphoneから送信", "내 iphone에서 보냄")
_MOBILE = re.compile(rf"(?i)^\s*(?:{_any_of(_MOBILE_PHRASES)}).{{0,60}}$")


def trim_reply(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    end = _end_of_own_text(lines)
    kept = [line.rstrip() for line in lines[:end] if not line.lstrip().startswith(">")]
    return _tidy(kept)


def _end_of_own_text(lines: list[str]) -> int:
    for index, line in enumerate(lines):
        if _FORWARDED.match(line):
            return len(lines)  # what follows was forwarded on purpose: all of it is content
        if _starts_quote(lines, index) or _is_signature(line):
            return index
    return len(lines)


def _starts_quote(lines: list[str], index: int) -> bool:
    line = lines[index]
    following = lines[index + 1:index + 4]
    if _SEPARATOR.match(line) or _is_attribution(line, lines, index + 1):
        return True
    # Gmail wraps a long attribution: "On Tue, 24 Nov 2026 at 10:00, Ann <a@x>\nwrote:";
    # the first half carries the date and often the address.
    if (following and _ends_in_colon(following[0]) and not _ends_in_colon(line)
            and _TIME.search(line)
            and _is_attribution(f"{line} {following[0].strip()}", lines, index + 2)):
        return True
    if _UNDERSCORES.match(line) and any(_HEADER_FROM.match(n) for n in following[:2]):
        return True
    if ":" in line[:32] and _HEADER_FROM.match(line):  # the labels are short words
        return any(_HEADER_SENT.match(n) for n in following)
    return False


def _is_attribution(line: str, lines: list[str], after: int) -> bool:
    """LINE (read from LINES; the lines below it start at AFTER) introduces a quote."""
    if len(line) > 600 or not _ends_in_colon(line):
        return False
    dated = bool(_TIME.search(line) or _ADDRESS.search(line))
    wrote = _WROTE.search(line)
    if wrote and dated and _OPENING.match(line):  # "On 24 Nov 2026, Ann wrote:"
        return True
    # Else only with the quote below it: "The program wrote at 10:30:" may begin the
    # sender's own text. No verb: "пн, 24 нояб. 2026 г. в 10:00, Ann <ann@example.com>:".
    if wrote or (_TIME.search(line) and _ADDRESS.search(line)):
        return _quote_follows(lines, after)
    return False


def _ends_in_colon(line: str) -> bool:
    return line.rstrip().endswith((":", "："))


def _quote_follows(lines: list[str], start: int) -> bool:
    """The next non-blank line (within three) is quoted."""
    for line in lines[start:start + 3]:
        if line.strip():
            return line.lstrip().startswith(">")
    return False


def _is_signature(line: str) -> bool:
    return (line in ("-- ", "--") or line.rstrip() == "--"
            or (len(line) < 120 and bool(_MOBILE.match(line))))


def _tidy(lines: list[str]) -> str:
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n").rstrip()
