"""Charset labels read as browsers read them (WHATWG Encoding Standard), for headers and
bodies; unknown labels and undeclared 8-bit text as UTF-8, else detected, with a defect."""
# ruff: noqa: RUF001  (text in other scripts, and their punctuation, is the point here)

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from mailgate.core.mime import charsets, whatwg_labels
from mailgate.core.mime.charsets import decode, encoding_for
from tests.data.make_whatwg_labels import SOURCE, render

UPSTREAM = json.loads(SOURCE.read_text())
WHATWG = {label: enc["name"] for group in UPSTREAM for enc in group["encodings"]
          for label in enc["labels"]}


def test_the_generated_table_is_the_upstream_json() -> None:
    generated = Path(whatwg_labels.__file__).read_text()
    assert generated == render(UPSTREAM), "run tests/data/make_whatwg_labels.py"
    assert whatwg_labels.LABELS == WHATWG and len(WHATWG) == 228


@pytest.mark.parametrize("label", sorted(WHATWG))
def test_every_whatwg_label_resolves_to_a_codec_that_exists(label: str) -> None:
    name = encoding_for(label)
    assert name is not None
    if label not in charsets.MAIL_LABELS:
        assert name == WHATWG[label]
    for codec in charsets.ALL_CODECS[name]:
        assert codecs.lookup(codec)._is_text_encoding  # a text codec, not base64 or rot13
    assert isinstance(decode(b"plain ascii", label), str)
    assert encoding_for(label.upper()) == name and encoding_for(f' "{label}" ') == name


def test_every_encoding_of_the_standard_has_an_implementation() -> None:
    assert set(WHATWG.values()) == set(charsets.CODECS)
    assert set(charsets.TABLE.values()) <= set(charsets.ALL_CODECS)
    for name, candidates in charsets.ALL_CODECS.items():
        for codec in candidates:
            codecs.lookup(codec)
        assert candidates or name in ("replacement", "x-user-defined")


def test_mail_labels_only_add_labels_or_replace_the_replacement_encoding() -> None:
    for label, name in charsets.MAIL_LABELS.items():
        assert label not in WHATWG or WHATWG[label] == "replacement", label
        assert name in charsets.ALL_CODECS


@pytest.mark.parametrize(("label", "text", "encoded_as"), [
    ("gb2312", "朱镕基 𠀀", "gb18030"),  # 镕 is GBK, 𠀀 only GB18030: browsers read both
    ("gbk", "朱镕基", "gb18030"),
    ("iso-8859-8-i", "שלום", "iso8859_8"),
    ("ks_c_5601-1987", "똠방각하", "cp949"),  # 똠 is in Unified Hangul Code, not in EUC-KR
    ("latin1", "€ “quoted” …", "cp1252"),
    ("iso-8859-1", "Grüße – Ann", "cp1252"),
    ("us-ascii", "don’t", "cp1252"),
    ("shift_jis", "①株式会社", "cp932"),  # NEC extension characters
    ("tis-620", "€ สวัสดี", "cp874"),
    ("big5", "臺灣", "big5hkscs"),
    ("euc-jp", "日本語", "euc_jp"),
    ("iso-2022-jp", "日本語ｶﾀｶﾅ", "iso2022_jp_ext"),
    ("koi8-r", "Привет", "koi8_r"),
    ("windows-1251", "Привет", "cp1251"),
    ("utf-7", "Grüße", "utf-7"),
    ("iso-2022-kr", "한국어", "iso2022_kr"),
    # Labels WHATWG lacks that old mail uses: DOS, Mac and Central Asian code pages, Johab.
    ("johab", "똠방각하", "johab"),
    ("ibm737", "Ελλάδα", "cp737"),
    ("csIBM865", "Blåbærsyltetøy", "cp865"),
    ("862", "עברית", "cp862"),
    ("ibm00858", "€uro", "cp858"),
    ("cp1125", "Привіт", "cp1125"),
    ("x-mac-ce", "Łódź", "mac_latin2"),
    ("x-mac-greek", "Ελλάδα", "mac_greek"),
    ("x-mac-turkish", "Türkçe ğ", "mac_turkish"),
    ("x-mac-icelandic", "Þór", "mac_iceland"),
    ("koi8-t", "Тоҷикӣ", "koi8_t"),
    ("kz-1048", "Қазақ", "kz1048"),
    ("pt154", "Қазақ", "ptcp154"),
])
def test_labels_mean_what_browsers_read(label: str, text: str, encoded_as: str) -> None:
    defects: list[str] = []
    assert decode(text.encode(encoded_as), label, defects) == text
    assert defects == []


def test_windows_code_pages_keep_undefined_bytes_as_c1_controls() -> None:
    assert decode(b"a\x81b", "windows-1252") == "a\x81b"  # WHATWG index, not an error


def test_byte_order_mark_wins_over_the_label() -> None:
    assert decode("ü".encode("utf-16-le").join([b"\xff\xfe", b""]), "iso-8859-1") == "ü"
    assert decode(b"\xef\xbb\xbfGr\xc3\xbc\xc3\x9fe", "windows-1252") == "Grüße"
    # UTF-32's marks are not UTF-16's followed by a NUL (encoded words too).
    assert decode("Hi ü".encode("utf-32"), "utf-32") == "Hi ü"
    assert decode("Hi ü".encode("utf-32"), None) == "Hi ü"
    assert decode(b"\x00\x00\xfe\xff" + "Hi".encode("utf-32-be"), "utf-16") == "Hi"


def test_replacement_and_user_defined() -> None:
    assert decode(b"\x1b$)A\x0e", "iso-2022-cn") == "\ufffd"
    assert decode(b"a\x80\xff", "x-user-defined") == "a\uf780\uf7ff"


def test_unknown_label_is_utf8_if_valid_else_detected_with_a_defect() -> None:
    defects: list[str] = []
    assert decode("Grüße".encode(), "x-klingon", defects) == "Grüße"
    assert defects == ["unknown charset 'x-klingon' in text"]
    russian = "Привет, как дела? Это тестовое сообщение о проблеме с принтером."
    defects = []
    assert decode(russian.encode("koi8-r"), "x-klingon", defects) == russian
    assert defects[-1] == "undeclared 8-bit text read as KOI8-R"


def test_undeclared_8bit_text() -> None:
    defects: list[str] = []
    assert decode("Grüße".encode(), None, defects) == "Grüße" and defects == []
    assert decode(b"Gr\xfc\xdfe aus M\xfcnchen", None, defects) == "Grüße aus München"
    assert defects == ["undeclared 8-bit text read as windows-1252"]
    french = "Bonjour, je n'arrive plus à me connecter à l'intranet depuis ce matin."
    assert decode(french.encode("cp1252"), None) == french
    chinese = "这是一个测试邮件，请查收附件。谢谢！"
    assert decode(chinese.encode("gb18030"), None) == chinese
    assert decode("日本語".encode("iso2022_jp"), None) == "日本語"  # RFC 1468


def test_declared_utf8_that_is_not_utf8_is_detected() -> None:
    defects: list[str] = []
    assert decode(b"Det h\xe4r \xe4r ett meddelande", "utf-8", defects) == \
        "Det här är ett meddelande"
    assert defects == ["text is not valid UTF-8; read as windows-1252"]


def test_us_ascii_label_with_utf8_bytes_is_utf8() -> None:
    defects: list[str] = []
    assert decode("Grüße".encode(), "us-ascii", defects) == "Grüße"
    assert defects == ["8-bit text labelled us-ascii read as UTF-8"]


def test_a_few_bad_bytes_in_utf8_are_replaced_not_guessed() -> None:
    cut = "Картинка с очень длинным именем".encode()[:-1]
    assert decode(cut, None).startswith("Картинка с очень длинным имене")


def test_hint_comes_before_the_detector() -> None:
    defects: list[str] = []
    assert charsets.undeclared(b"Fr\xf6sche", defects, hint="iso-8859-1").text == "Frösche"
    assert "the message's charset" in defects[0]
