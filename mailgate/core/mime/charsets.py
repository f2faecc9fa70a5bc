"""Bytes to text the way browsers read charset labels (the WHATWG Encoding Standard).

Mail clients write labels that mean something other than their name: `gb2312` text that
uses GBK/GB18030 characters, `iso-8859-1` text with Windows quotes, `ks_c_5601-1987` for
Windows' Korean code page. Browsers (and the helpdesks people compare us with) read every
label through one table, whatwg_labels.LABELS; so do we, for headers and bodies alike.

What the table does not settle:

- a label the table does not know, or 8-bit text with no label at all, is read as UTF-8
  when it is valid UTF-8, else as what a detector (charset-normalizer, limited to the
  encodings of the table) finds, else as windows-1252; the caller records a defect;
- a byte-order mark wins over the label (as in browsers);
- `us-ascii` text that carries 8-bit bytes has broken its own promise: valid UTF-8 is read
  as UTF-8, anything else as windows-1252 (the table's reading of the label);
- 8-bit text under a legacy multibyte label (GB2312, Big5, Shift_JIS, EUC-JP, EUC-KR)
  that is valid UTF-8 may be UTF-8: web forms send UTF-8 under the site's old label, and
  GB18030 even decodes most UTF-8 Chinese "cleanly" into other characters. Text really in
  those encodings stays valid UTF-8 only by chance, byte after byte, so long valid UTF-8
  (LONG_UTF8 continuation bytes) is UTF-8, and so is text the label does not decode
  cleanly. Short text is valid UTF-8 by chance often enough (Shift_JIS "ﾃｽ" is UTF-8 "ý",
  GB2312 "要" is "Ҫ"; one Chinese character in six), and UTF-8 "Café" decodes cleanly
  as Shift_JIS "Cafﾃｩ": there the likelier of the two readings wins (plausibility.py).
  UTF-8 chosen over the label is a defect. The hint for undeclared 8-bit bytes is weighed
  the same way. Single-byte labels keep their reading: Latin-1 text can be valid UTF-8 by
  chance, and browsers and mail clients follow those labels;
- the WHATWG "replacement" encoding exists to stop browsers from running script hidden in
  ISO-2022-KR/HZ/ISO-2022-CN pages. Mail text is never code here and those labels were
  real Korean and Chinese mail, so the two Python can decode are decoded (MAIL_LABELS);
  ISO-2022-CN, which Python cannot decode, becomes one U+FFFD, as in browsers;
- ISO-2022-JP with the NEC and IBM characters (①, №, ㈱), which Python's codecs refuse,
  is read by the WHATWG decoder itself (iso2022jp.py);
- 8-bit text under the label of a 7-bit escape encoding (ISO-2022-JP/-KR, HZ) without a
  single escape sequence is in another charset (EUC-JP relabelled by a list server): it
  is read as undeclared text, with a defect.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from mailgate.core.mime import iso2022jp
from mailgate.core.mime.plausibility import utf8_is_likelier
from mailgate.core.mime.whatwg_labels import LABELS as WHATWG_LABELS

# WHATWG encoding name -> the Python codecs that implement it, tried in order (strictly),
# the first also with replacement characters when none decodes cleanly.
CODECS: dict[str, tuple[str, ...]] = {
    "UTF-8": ("utf-8",),
    "IBM866": ("cp866",),
    "ISO-8859-2": ("iso8859_2",),
    "ISO-8859-3": ("iso8859_3",),
    "ISO-8859-4": ("iso8859_4",),
    "ISO-8859-5": ("iso8859_5",),
    "ISO-8859-6": ("iso8859_6",),
    "ISO-8859-7": ("iso8859_7",),
    "ISO-8859-8": ("iso8859_8",),
    "ISO-8859-8-I": ("iso8859_8",),  # logical order: the same characters as visual
    "ISO-8859-10": ("iso8859_10",),
    "ISO-8859-13": ("iso8859_13",),
    "ISO-8859-14": ("iso8859_14",),
    "ISO-8859-15": ("iso8859_15",),
    "ISO-8859-16": ("iso8859_16",),
    "KOI8-R": ("koi8_r",),
    "KOI8-U": ("koi8_u",),  # WHATWG's is KOI8-RU (0xAE/0xBE: ў/Ў); Python has no KOI8-RU
    "macintosh": ("mac_roman",),
    "windows-874": ("cp874",),
    "windows-1250": ("cp1250",),
    "windows-1251": ("cp1251",),
    "windows-1252": ("cp1252",),
    "windows-1253": ("cp1253",),
    "windows-1254": ("cp1254",),
    "windows-1255": ("cp1255",),
    "windows-1256": ("cp1256",),
    "windows-1257": ("cp1257",),
    "windows-1258": ("cp1258",),
    "x-mac-cyrillic": ("mac_cyrillic",),
    "GBK": ("gb18030",),  # WHATWG decodes GBK labels with the GB18030 decoder
    "gb18030": ("gb18030",),
    "Big5": ("big5hkscs",),  # WHATWG's Big5 index includes the HKSCS extensions
    # JIS X 0212 in euc_jp; NEC/IBM extensions (circled digits) in JIS X 0213's codecs.
    "EUC-JP": ("euc_jp", "euc_jis_2004"),
    "ISO-2022-JP": ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2004"),
    "Shift_JIS": ("cp932",),  # windows-31J, with the NEC and IBM extensions
    "EUC-KR": ("cp949",),  # windows-949 (Unified Hangul Code)
    "replacement": (),  # one U+FFFD for all of it (see above)
    "UTF-16BE": ("utf-16-be",),
    "UTF-16LE": ("utf-16-le",),
    "x-user-defined": (),  # 0x80-0xFF -> U+F780-U+F7FF (_user_defined)
}
# Encodings mail uses that the WHATWG table has no name for.
EXTRA_CODECS: dict[str, tuple[str, ...]] = {
    "UTF-7": ("utf-7",),  # old Exchange and web mailers
    "UTF-32": ("utf-32",),
    "UTF-32LE": ("utf-32-le",),
    "UTF-32BE": ("utf-32-be",),
    "ISO-2022-KR": ("iso2022_kr",),
    "HZ-GB-2312": ("hz",),
    "ISO-2022-JP-2": ("iso2022_jp_2",),
    "JOHAB": ("johab",),  # Korean, KS X 1001 annex 3: old Korean mail
}
# Single-byte code pages of DOS, old Macs and Central Asia, under their IANA names.
OLD_CODE_PAGES: dict[str, str] = {
    "IBM437": "cp437", "IBM737": "cp737", "IBM775": "cp775", "IBM850": "cp850",
    "IBM852": "cp852", "IBM855": "cp855", "IBM857": "cp857", "IBM00858": "cp858",
    "IBM860": "cp860", "IBM861": "cp861", "IBM862": "cp862", "IBM863": "cp863",
    "IBM864": "cp864", "IBM865": "cp865", "IBM869": "cp869", "CP1125": "cp1125",
    "x-mac-ce": "mac_latin2", "x-mac-greek": "mac_greek", "x-mac-turkish": "mac_turkish",
    "x-mac-icelandic": "mac_iceland", "KOI8-T": "koi8_t", "KZ-1048": "kz1048",
    "PTCP154": "ptcp154",
}
EXTRA_CODECS.update({name: (codec,) for name, codec in OLD_CODE_PAGES.items()})
# Labels seen in mail that WHATWG lacks (or maps to "replacement", see above).
MAIL_LABELS: dict[str, str] = {
    "utf-7": "UTF-7", "unicode-1-1-utf-7": "UTF-7", "csunicode11utf7": "UTF-7",
    "utf-32": "UTF-32", "utf-32le": "UTF-32LE", "utf-32be": "UTF-32BE",
    "iso-2022-kr": "ISO-2022-KR", "csiso2022kr": "ISO-2022-KR", "hz-gb-2312": "HZ-GB-2312",
    "iso-2022-jp-1": "ISO-2022-JP", "iso-2022-jp-2": "ISO-2022-JP-2",
    "cp932": "Shift_JIS", "windows-932": "Shift_JIS", "x-ms-cp932": "Shift_JIS",
    "cp936": "GBK", "ms936": "GBK", "windows-936": "GBK", "euc-cn": "GBK", "x-euc-cn": "GBK",
    "cp949": "EUC-KR", "uhc": "EUC-KR", "ks_c_5601": "EUC-KR",
    "cp950": "Big5", "ms950": "Big5", "windows-950": "Big5", "big5hkscs": "Big5",
    "tis620": "windows-874", "cp874": "windows-874",
    "johab": "JOHAB", "x-johab": "JOHAB", "cp1361": "JOHAB", "ms1361": "JOHAB",
    "x-mac-centraleurroman": "x-mac-ce", "maccentraleurope": "x-mac-ce",
    "x-mac-latin2": "x-mac-ce", "macgreek": "x-mac-greek", "macturkish": "x-mac-turkish",
    "maciceland": "x-mac-icelandic", "x-mac-iceland": "x-mac-icelandic",
    "koi8-t": "KOI8-T", "kz-1048": "KZ-1048", "strk1048-2002": "KZ-1048",
    "pt154": "PTCP154", "ptcp154": "PTCP154", "cp154": "PTCP154",
    "cyrillic-asian": "PTCP154", "cp1125": "CP1125", "ibm1125": "CP1125",
    "cp858": "IBM00858", "ibm00858": "IBM00858", "ibm858": "IBM00858",
}


def _code_page_labels() -> dict[str, str]:
    """Each old code page's own name, and for IBM's the ways mail writes them: cp850,
    ibm850, 850, csibm850, cspc850, ibm-850."""
    labels = {name.lower(): name for name in OLD_CODE_PAGES}
    for name in OLD_CODE_PAGES:
        if name.startswith("IBM"):
            number = name[3:].lstrip("0")
            labels.update(dict.fromkeys((f"cp{number}", f"ibm{number}", number,
                                         f"csibm{number}", f"cspc{number}",
                                         f"ibm-{number}"), name))
    return {**labels, "cspc8codepage437": "IBM437"}


MAIL_LABELS = {**_code_page_labels(), **MAIL_LABELS}  # the explicit labels above win
TABLE: dict[str, str] = {**WHATWG_LABELS, **MAIL_LABELS}
ALL_CODECS: dict[str, tuple[str, ...]] = {**CODECS, **EXTRA_CODECS}
SINGLE_BYTE = frozenset({"IBM866", "KOI8-R", "KOI8-U", "macintosh", "x-mac-cyrillic"}
                        | set(OLD_CODE_PAGES)
                        | {n for n in CODECS if n.startswith(("ISO-8859-", "windows-"))})
# Encodings whose ASCII bytes are not ASCII text: never take the all-ASCII shortcut.
NOT_ASCII_COMPATIBLE = frozenset({"UTF-16BE", "UTF-16LE", "UTF-32", "UTF-32LE", "UTF-32BE",
                                  "UTF-7", "ISO-2022-JP", "ISO-2022-JP-2", "ISO-2022-KR",
                                  "HZ-GB-2312", "replacement"})
# 7-bit encodings that switch character sets by escape (shift) sequences: text under
# their label with 8-bit bytes and no escape at all is in another charset.
ESCAPE_ENCODINGS = {"ISO-2022-JP": re.compile(rb"\x1b"), "ISO-2022-JP-2": re.compile(rb"\x1b"),
                    "ISO-2022-KR": re.compile(rb"\x1b"), "HZ-GB-2312": re.compile(rb"~\{")}
# Multibyte legacy encodings whose 8-bit text is practically never valid UTF-8 (above).
LEGACY_MULTIBYTE = frozenset({"GBK", "gb18030", "Big5", "EUC-JP", "Shift_JIS", "EUC-KR"})
ASCII_LABELS = frozenset(k for k in ("us-ascii", "ascii", "ansi_x3.4-1968") if k in TABLE)
# Labels that say "I do not know": read as undeclared text, without an unknown-label defect.
UNDECLARED_LABELS = frozenset({"unknown-8bit", "x-unknown", "unknown", "8bit", "default",
                               "x-user-unknown"})
# UTF-32's marks before UTF-16's: FF FE 00 00 would be UTF-16LE text starting with NUL.
BOMS = ((b"\xef\xbb\xbf", "UTF-8"), (b"\x00\x00\xfe\xff", "UTF-32BE"),
        (b"\xff\xfe\x00\x00", "UTF-32LE"), (b"\xfe\xff", "UTF-16BE"),
        (b"\xff\xfe", "UTF-16LE"))
# Continuation bytes (all but the first byte of each UTF-8 character) that make valid UTF-8
# under a legacy multibyte label UTF-8 without weighing its readings: real legacy text
# meets UTF-8's pattern only by chance, byte after byte (tests/charset_sweep.py: no real
# legacy text in the sweep stayed valid UTF-8 beyond 4).
LONG_UTF8 = 12
DETECT_SAMPLE = 64 * 1024  # bytes the detector looks at: enough to tell, cheap to run
_LOOSE_SEPARATORS = re.compile(r"[\s_\-]+")
_LABEL_END = re.compile(r"[\s;,*'\"]")


def _loose(label: str) -> str:
    return _LOOSE_SEPARATORS.sub("", label)


_LOOSE_TABLE: dict[str, str] = {}
for _label, _name in TABLE.items():
    _LOOSE_TABLE.setdefault(_loose(_label), _name)


def _c1_controls(error: UnicodeError) -> tuple[str, int]:
    """WHATWG's single-byte indexes map the bytes a Windows code page leaves undefined in
    0x80-0x9F to the C1 controls of the same number; anything else undefined is U+FFFD."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start:error.end]
    return "".join(chr(b) if 0x80 <= b <= 0x9F else "\ufffd" for b in bad), error.end


codecs.register_error("mailgate-whatwg", _c1_controls)


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    encoding: str  # the encoding name that was used
    clean: bool  # False when bytes had to be replaced


def encoding_for(label: str | None) -> str | None:
    """The encoding name a charset label stands for, or None when it names none we know."""
    key = clean_label(label)
    if not key:
        return None
    return TABLE.get(key) or _LOOSE_TABLE.get(_loose(key))


def clean_label(label: str | None) -> str:
    """`"UTF-8"`, ` utf-8 `, `utf-8*en` (RFC 2231 language) -> `utf-8`."""
    if not label:
        return ""
    label = label.strip().strip("'\"").strip().lower()
    end = _LABEL_END.search(label)
    return label[: end.start()] if end else label


def decode(data: bytes, label: str | None, defects: list[str] | None = None, *,
           what: str = "text", hint: str | None = None) -> str:
    """Text of `data` written in the charset `label` says; never raises.

    `what` names the text in defects ("body", "subject header"); `hint` is a charset to
    try for undeclared 8-bit bytes before guessing (the message's own body charset)."""
    found = _decode(data, label, defects if defects is not None else [], what, hint)
    return found.text


def _decode(data: bytes, label: str | None, defects: list[str], what: str,
            hint: str | None) -> Decoded:
    if not data:
        return Decoded("", "UTF-8", True)
    for bom, name in BOMS:
        if data.startswith(bom):
            return decode_as(data[len(bom):], name)
    key = clean_label(label)
    name = encoding_for(key)
    if name is None:
        if key and key not in UNDECLARED_LABELS:
            defects.append(f"unknown charset {key[:40]!r} in {what}")
        return undeclared(data, defects, what=what, hint=hint)
    if name not in NOT_ASCII_COMPATIBLE and data.isascii():
        return Decoded(data.decode("ascii"), name, True)
    text = _utf8(data) if key in ASCII_LABELS else None
    if text is not None:
        defects.append(f"8-bit {what} labelled us-ascii read as UTF-8")
        return Decoded(text, "UTF-8", True)
    text = _utf8(data) if name in LEGACY_MULTIBYTE else None
    if text is not None:
        return _utf8_or_label(data, text, name, defects, what)
    found = decode_as(data, name)
    if found.clean:
        return found
    if name in ESCAPE_ENCODINGS and not ESCAPE_ENCODINGS[name].search(data):
        # 8-bit bytes and not one shift sequence: a 7-bit encoding's promise broken, the
        # label is wrong (EUC-JP text relabelled ISO-2022-JP by a list server).
        guess = undeclared(data, [], what=what, hint=hint)
        defects.append(f"8-bit {what} labelled {name} has none of its escapes; read as "
                       f"{guess.encoding}")
        return guess
    if name == "UTF-8":  # not UTF-8 at all, most likely: a mislabelled legacy text
        guess = undeclared(data, [], what=what, hint=hint, utf8=False)
        defects.append(f"{what} is not valid UTF-8; read as {guess.encoding}")
        return guess
    defects.append(f"{what} is not valid {name}; bad bytes replaced")
    return found


def _utf8_or_label(data: bytes, text: str, name: str, defects: list[str],
                   what: str) -> Decoded:
    """Valid UTF-8 `text` of `data` under a legacy multibyte label `name`: the label's
    reading when it is clean and the likelier text of the two (plausibility.py), else
    UTF-8 with a defect that says why."""
    if len(data) - len(text) >= LONG_UTF8:
        why = "is valid UTF-8"
    else:
        found = decode_as(data, name)
        if found.clean and not _utf8_likelier(data, text, found):
            return found
        why = ("is valid UTF-8, likelier text than its reading as " + name if found.clean
               else "is valid UTF-8, not valid " + name)
    defects.append(f"{what} labelled {name} {why}; read as UTF-8")
    return Decoded(text, "UTF-8", True)


def _utf8_likelier(data: bytes, utf8: str, legacy: Decoded) -> bool:
    continuation = len(data) - len(utf8)  # the bytes beyond the first of each character
    return utf8_is_likelier(utf8, legacy.text, legacy.encoding, continuation)


def _hinted_legacy(data: bytes, text: str, hint: str | None) -> Decoded | None:
    """The reading of undeclared valid UTF-8 `data` in the message's legacy multibyte
    charset `hint`, when that reading is clean and the likelier text; else None."""
    name = encoding_for(hint)
    if name not in LEGACY_MULTIBYTE or len(data) - len(text) >= LONG_UTF8:
        return None
    found = decode_as(data, name)
    return found if found.clean and not _utf8_likelier(data, text, found) else None


def decode_as(data: bytes, name: str) -> Decoded:
    """Decode with one encoding of CODECS/EXTRA_CODECS; bad bytes become U+FFFD."""
    if name == "replacement":
        return Decoded("\ufffd" if data else "", name, not data)
    if name == "x-user-defined":
        return Decoded(_user_defined(data), name, True)
    candidates = ALL_CODECS[name]
    if name in SINGLE_BYTE:
        text = data.decode(candidates[0], "mailgate-whatwg")
        return Decoded(text, name, "\ufffd" not in text)
    for codec in candidates:
        try:
            return Decoded(data.decode(codec), name, True)
        except UnicodeDecodeError:
            continue
    if name == "ISO-2022-JP":  # NEC and IBM characters, which the WHATWG decoder reads
        text = iso2022jp.decode(data)
        return Decoded(text, name, "\ufffd" not in text)
    return Decoded(data.decode(candidates[0], "replace"), name, False)


def undeclared(data: bytes, defects: list[str], *, what: str = "text",
               hint: str | None = None, utf8: bool = True) -> Decoded:
    """8-bit text whose charset nobody named: UTF-8 if it is valid UTF-8 (no defect: RFC
    6532 allows raw UTF-8 in headers) unless the hint is a legacy multibyte charset whose
    reading is likelier (as under such a label), else the hint, else a detector, else
    windows-1252."""
    if data.isascii():
        if b"\x1b$" in data:  # RFC 1468: undeclared Japanese mail is ISO-2022-JP
            found = decode_as(data, "ISO-2022-JP")
            if found.clean:
                defects.append(f"undeclared {what} read as ISO-2022-JP")
                return found
        return Decoded(data.decode("ascii"), "UTF-8", True)
    if utf8:
        text = _utf8(data)
        hinted = _hinted_legacy(data, text, hint) if text is not None else None
        if hinted is not None:  # a short "ﾃｽ" in a Shift_JIS mail, not UTF-8 "ý"
            defects.append(f"undeclared 8-bit {what} read as {hinted.encoding} "
                           "(the message's charset)")
            return hinted
        if text is not None:
            return Decoded(text, "UTF-8", True)
        mostly = _mostly_utf8(data)  # e.g. a name cut to a byte count inside a character
        if mostly is not None:
            defects.append(f"{what} is UTF-8 with some invalid bytes (replaced)")
            return Decoded(mostly, "UTF-8", False)
    hinted = encoding_for(hint)
    if hinted and hinted not in ("UTF-8", *NOT_ASCII_COMPATIBLE):
        found = decode_as(data, hinted)
        if found.clean:
            defects.append(f"undeclared 8-bit {what} read as {hinted} (the message's charset)")
            return found
    found = _detect(data) or decode_as(data, "windows-1252")
    defects.append(f"undeclared 8-bit {what} read as {found.encoding}")
    return found


def _utf8(data: bytes) -> str | None:
    """The text, when `data` is valid UTF-8 (decoded once, not checked and decoded again)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _mostly_utf8(data: bytes) -> str | None:
    """The text, when it is UTF-8 but for a few bad bytes: legacy 8-bit text almost never
    forms valid multibyte UTF-8 sequences, so many of them and few errors settle it."""
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    good = sum(1 for c in text if c > "\x7f") - bad
    return text if good >= 4 and bad * 10 <= good else None


def _user_defined(data: bytes) -> str:
    return "".join(chr(b) if b < 0x80 else chr(0xF780 + b - 0x80) for b in data)


# What the detector may answer, most common in mail first: its near-ties (Latin texts
# often decode to the same characters in ten code pages) are settled by this order, and
# its other candidates (cp1006, cp1125, ...) are never what a mail client wrote
# unlabelled.
DETECTABLE: tuple[str, ...] = (
    "utf_8", "cp1252", "iso8859_15", "cp1250", "iso8859_2", "cp1251", "koi8_r", "iso8859_5",
    "cp1253", "iso8859_7", "cp1254", "cp1255", "iso8859_8", "cp1256", "iso8859_6", "cp1257",
    "iso8859_13", "cp874", "gb18030", "big5hkscs", "cp932", "euc_jp", "iso2022_jp", "cp949",
    "cp866", "koi8_u", "cp1258", "iso8859_3", "iso8859_4", "iso8859_10", "iso8859_14",
    "iso8859_16",
)  # no Mac code pages: Mac mailers label their text, and mac_roman wins German ties
_CODEC_NAMES = {codec_list[0].replace("-", "_"): name for name, codec_list in CODECS.items()
                if codec_list and name not in ("ISO-8859-8-I", "GBK")}
_NEAR_CHAOS, _NEAR_COHERENCE = 0.5, 5.0  # percentage points that still count as a tie


def _detect(data: bytes) -> Decoded | None:
    """The detector's reading among the table's encodings, or None.

    Why charset-normalizer: maintained (releases through 2026; it is the detector requests
    uses), MIT, pure Python with optional compiled speed-ups, and it can be limited to a
    list of encodings. Imported lazily: only undeclared 8-bit text pays for it."""
    try:
        from charset_normalizer import from_bytes
        matches = list(from_bytes(data[:DETECT_SAMPLE], cp_isolation=list(DETECTABLE)))
    except Exception:  # a detector failure must not lose the mail
        return None
    if not matches:
        return None
    best = matches[0]
    tied = {name.replace("-", "_") for m in matches
            if m.percent_chaos <= best.percent_chaos + _NEAR_CHAOS
            and m.percent_coherence >= best.percent_coherence - _NEAR_COHERENCE
            for name in (m.encoding, *m.could_be_from_charset)}
    choice = next((c for c in DETECTABLE if c in tied), None)
    name = _CODEC_NAMES.get(choice or "")
    return decode_as(data, name) if name else None
