"""Which of two clean readings of the same bytes a person more likely wrote.

charsets.py asks this when 8-bit text under a legacy multibyte label (GB2312/GBK, Big5,
Shift_JIS, EUC-JP, EUC-KR) is valid UTF-8 and also decodes cleanly under its label. Long
text settles itself: real legacy text stays valid UTF-8 only by chance, byte after byte, so
many UTF-8 continuation bytes are UTF-8 (charsets.LONG_UTF8). Short text does not:
Shift_JIS "ﾃｽ" is the bytes of UTF-8 "ý", GB2312 "要" those of "Ҫ", and UTF-8 "Café" is
Shift_JIS "Cafﾃｩ". There each reading is scored by its oddities and the reading with fewer
wins. On a tie the bytes' fit to UTF-8 decides: two or more continuation bytes are UTF-8,
and so is one where non-ASCII Latin stands as in European text (an accented letter inside
an ASCII word, "Café"; a sign beside a number, "© 2024"). One alone elsewhere (the "ﾃｽ"
or "ý" of a two-byte subject) is not evidence enough against the label, which is believed.

An oddity is a character the text's writer would hardly use, or a change of script inside
a word:

- the legacy reading is held to the label's own standard: the characters of its first
  level and symbol rows (GB2312's 3,755 most used Hanzi, Big5's 5,401 common Hanzi, JIS X
  0208's first-level Kanji with kana and NEC's circled digits, KS X 1001's 2,350 Hangul),
  half-width katakana for the Japanese labels, ASCII. A second-level or extension
  ideograph, or Hanja in Korean text, is odd;
- the UTF-8 reading may be any language: common are the letters and signs of the Windows
  code pages for Europe, the Middle East, Thailand and Vietnam (what that mail used before
  UTF-8), the union of the CJK sets above, general punctuation, symbols and emoji. Odd are
  Latin Extended-B, IPA and modifier letters, Armenian, Syriac, Thaana, a combining mark
  with no letter before it, controls, private use, unassigned code points;
- a change of script between two letters of one word is odd, but for Latin beside CJK,
  which is how Asian mail is written ("Windows系统", "PCの"): "Cafﾃｩ", "Windowsϵͳ" and
  "ȻͬЩ" change script, and so does CJK inside a Latin word ("Gr辰e" for "Gräe"); so is
  a non-ASCII capital after a small letter of the same word ("ýİ", Shift_JIS "ﾃｽﾄｰ").

Why not charset-normalizer's mess detector: its plugins ignore texts of fewer than about a
dozen characters (mess_ratio is 0.0 for "ȻͬЩ" and for "Cafﾃｩ"), and short subjects are
exactly where both readings are clean; as the judge it reads more texts wrong than the old
rule did. tests/charset_sweep.py measures this rule, the old one ("valid UTF-8 wins") and
the mess ratio on generated and real text (`python -m tests.charset_sweep`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import cache
from itertools import pairwise

# Script pairs that meet inside a word in real mail: "Windows系统", "PCの", "ABC사".
_COMPATIBLE = frozenset({("latin", "cjk"), ("cjk", "latin")})
_CJK_SCRIPTS = frozenset({"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HANGUL",
                          "IDEOGRAPHIC", "FULLWIDTH", "BOPOMOFO"})
_IN_WORD_MARKS = "ー々〆ｰﾞﾟ"  # CJK length and repeat marks, letters in all but category
_LONG_ASCII = re.compile(r"[\x00-\x7f]{5,}")
# A Latin-1 sign beside a number ("© 2024", "5 °C", "£20").
_SIGN_BY_NUMBER = re.compile(r"[¡-¿] ?[0-9]|[0-9] ?[¡-¿]")
_IMPOSSIBLE = frozenset({"Cc", "Co", "Cn", "Cs"})  # controls, private use, unassigned
# Punctuation, symbols and emoji blocks mail text uses under any label.
_SYMBOL_BLOCKS = ((0x2000, 0x2BFF), (0x3000, 0x303F), (0xFF01, 0xFF60), (0xFE00, 0xFE0F),
                  (0x1F000, 0x1FAFF))
# The symbol rows and first level of each national standard: (Python codec, lead bytes).
_EUC_TRAILS = range(0xA1, 0xFF)
_STANDARDS: dict[str, tuple[tuple[str, range, tuple[int, ...]], ...]] = {
    "GB2312": (("gb2312", range(0xA1, 0xAA), (*_EUC_TRAILS,)),
               ("gb2312", range(0xB0, 0xD8), (*_EUC_TRAILS,))),
    "Big5": (("big5", range(0xA1, 0xC7), (*range(0x40, 0x7F), *_EUC_TRAILS)),),  # to C67E
    "JIS X 0208": (("euc_jp", range(0xA1, 0xA9), (*_EUC_TRAILS,)),
                   ("euc_jp", range(0xB0, 0xD0), (*_EUC_TRAILS,)),
                   ("cp932", range(0x87, 0x88), (*range(0x40, 0x9D),))),  # NEC row 13: ①, ㈱
    "KS X 1001": (("euc_kr", range(0xA1, 0xAD), (*_EUC_TRAILS,)),
                  ("euc_kr", range(0xB0, 0xC9), (*_EUC_TRAILS,))),
}
_STANDARD_OF = {"GBK": "GB2312", "gb18030": "GB2312", "Big5": "Big5",
                "Shift_JIS": "JIS X 0208", "EUC-JP": "JIS X 0208", "EUC-KR": "KS X 1001"}


def utf8_is_likelier(utf8: str, legacy: str, encoding: str, continuation: int) -> bool:
    """Whether `utf8` (the bytes read as UTF-8, `continuation` of them continuation bytes)
    is a likelier text than `legacy` (the same bytes read under their legacy multibyte
    `encoding`); both readings are clean."""
    utf8, legacy = _around_non_ascii(utf8), _around_non_ascii(legacy)
    odd_utf8 = oddities(utf8, _utf8_common())
    odd_legacy = oddities(legacy, _legacy_common(encoding))
    if odd_utf8 != odd_legacy:
        return odd_utf8 < odd_legacy
    return continuation >= 2 or _european_in_place(utf8)


def _around_non_ascii(text: str) -> str:
    """`text` with each ASCII run cut to its first and last two characters: the same
    oddities (only a run's ends touch other characters, ASCII next to ASCII is never odd,
    and what follows a run depends on its last two), in time bounded by the non-ASCII
    characters, not by the length of a long mail with "Café" in it."""
    return _LONG_ASCII.sub(lambda run: run[0][:2] + run[0][-2:], text)


def _european_in_place(text: str) -> bool:
    """Whether non-ASCII Latin stands where it stands in European text: an accented letter
    touching an ASCII letter ("Café", "Müller"), a sign beside a number ("© 2024"). Legacy
    text read as UTF-8 puts it there only by a rare chance."""
    return _SIGN_BY_NUMBER.search(text) is not None or any(
        a.isascii() != b.isascii() and _script(a) == _script(b) == "latin"
        for a, b in pairwise(text))


def oddities(text: str, common: frozenset[str]) -> int:
    """Characters outside `common` (and the symbol blocks), plus script changes in words."""
    odd = 0
    previous: str | None = None  # the script of the letter before, None after a non-letter
    latin_before = False  # an ASCII letter came before the current run of CJK letters
    lower_before = False  # the character before is a small letter
    for char in text:
        script = _script(char)
        if char > "\x7f" and not _common(char, previous, common):
            odd += 1
        if script and previous and script != previous and (previous, script) not in _COMPATIBLE:
            odd += 1
        if script == "latin" and previous == "cjk" and latin_before:
            odd += 1  # CJK inside a Latin word: "r辰er"
        if script == previous and char > "\x7f" and char.isupper() and lower_before:
            odd += 1  # a capital after a small letter of its word: "ýİ"
        lower_before = char.islower() if script else False
        if script != "mark":
            latin_before = (latin_before and script == "cjk") or (
                script == "latin" and previous != "cjk")
            previous = script
    return odd


def _script(char: str) -> str | None:
    """The script of a letter ("latin", "greek", "cjk", "halfwidth", ...), "mark" for a
    combining mark, None for anything else (digits, spaces and punctuation end a word)."""
    if char < "\x80":
        return "latin" if char.isalpha() else None
    category = unicodedata.category(char)
    if category[0] == "M":
        return "mark"
    if category[0] != "L" and char not in _IN_WORD_MARKS:
        return None
    name = unicodedata.name(char, "")
    first = name.split(" ", 1)[0]
    if first == "HALFWIDTH":
        return "halfwidth"
    if first in _CJK_SCRIPTS:
        return "cjk"
    return first.lower() or None


def _common(char: str, previous: str | None, common: frozenset[str]) -> bool:
    category = unicodedata.category(char)
    if category in _IMPOSSIBLE:
        return False
    if category[0] == "M":  # a combining accent on a letter: decomposed "é"
        return previous is not None
    if char in common:
        return True
    code = ord(char)
    return any(low <= code <= high for low, high in _SYMBOL_BLOCKS)


@cache
def _legacy_common(encoding: str) -> frozenset[str]:
    """What text really written in `encoding` is made of (built on first use: only
    ambiguous text needs it)."""
    standard = _STANDARD_OF.get(encoding, "")
    chars = _first_level(standard)
    if standard == "JIS X 0208":  # and JIS X 0201's half-width katakana
        chars |= frozenset(bytes(range(0xA1, 0xE0)).decode("cp932"))
    return chars


@cache
def _utf8_common() -> frozenset[str]:
    """What UTF-8 mail is made of: the European code pages and every CJK first level."""
    high = bytes(range(0x80, 0x100))
    chars = {c for codec in ("cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255",
                             "cp1256", "cp1257", "cp1258", "cp874")
             for c in high.decode(codec, "ignore")}
    chars.update(*(_first_level(standard) for standard in _STANDARDS))
    return frozenset(c for c in chars if c > "\x7f")


@cache
def _first_level(standard: str) -> frozenset[str]:
    """The symbol rows and first-level characters of a CJK standard, read from Python's
    codecs; their Latin letters (pinyin, KS X 1001's ĳ and ŉ) are not what its mail writes."""
    chars = set().union(*(_decoded_pairs(codec, leads, trails)
                          for codec, leads, trails in _STANDARDS.get(standard, ())))
    return frozenset(c for c in chars
                     if c > "\x7f" and not unicodedata.name(c, "").startswith("LATIN"))


def _decoded_pairs(codec: str, leads: Iterable[int], trails: tuple[int, ...]) -> set[str]:
    """The characters of every two-byte code lead+trail that `codec` defines."""
    found: set[str] = set()
    for lead in leads:
        for trail in trails:
            try:
                found.add(bytes((lead, trail)).decode(codec))
            except UnicodeDecodeError:
                continue
    return found
