"""Texts that are valid UTF-8 and clean under a legacy multibyte label at once, and what
they really are: the table behind charsets' choice between the two readings.

Two populations, each written out under every legacy multibyte label mail uses:
- text really in the legacy encoding (Simplified and Traditional Chinese, Japanese with
  kana, kanji and half-width katakana, Korean), alone and beside ASCII ("Re: ﾃｽﾄ");
- UTF-8 text sent under the label (a web form on an old site): European names and words,
  Cyrillic, Greek, Hebrew, Arabic, symbols, emoji, CJK.
Each population is every 1- and 2-character string over common characters of its script,
a seeded sample of 3- and 4-character ones, each also with ASCII around it, and real
subjects and sentences. `errors` counts the texts a reading rule gets wrong.

    python -m tests.charset_sweep   # the table: the old rule, charset-normalizer's mess
                                    # ratio and charsets.decode on the contested texts
"""
# ruff: noqa: RUF001  (text in other scripts, and their punctuation, is the point here)

from __future__ import annotations

import itertools
import random
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mailgate.core.mime import charsets

# label -> the codec a legacy mail client of that label writes with
LABELS = {"gb2312": "gbk", "big5": "cp950", "shift_jis": "cp932", "euc-jp": "euc_jp",
          "euc-kr": "cp949"}
SIMPLIFIED = ("的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得"
              "于着下自之年过发后作里用道行所然家种事成方多经么去法学如都同现当没动面起看定天"
              "分还进好小部其些主样理心她本前开但因只从想实议请问谢电脑打印机密码网络题件系统"
              "务器假申报销票急，。！？、：“”（）")
TRADITIONAL = ("的一是不了在人有我他這個們中來上大為和國地到以說時要就出會可也你對生能而子那得"
               "於著下自之年過發後作裡用道行所然家種事成方多經麼去法學如都同現當沒動面起看定天"
               "分還進好小部其些主樣理心她本前開但因只從想實議請問謝電腦印表機密碼網路題件系統"
               "務器假申報銷票急，。！？、：「」（）")
HIRAGANA = ("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりる"
            "れろわをんがぎぐげござじずぜぞだでどばびぶべぼぱっゃゅょ")
KATAKANA = ("アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリル"
            "レロワンガギグゲゴザジズゼゾダデドバビブベボパピプペポッャュョー")
KANJI = ("日一人年大十二本中長出三時行見月分後前生五間上東四今金九入学高円子外八六下来気小"
         "七山話女北午百書先名川千水半男西電校語土木聞食車何南万毎白天母火右読友左休父雨会"
         "議件送付請求見積株式社様疲願申確認、。「」！？・（）")
HALFWIDTH = bytes(range(0xA1, 0xE0)).decode("cp932")  # JIS X 0201 katakana, in Shift_JIS
HANGUL = ("이다에의는로하을가고지서한은기으년대사시를리도인스일회정요청문제확안녕세감합니드림"
          "부탁립메프린터장비밀번호계접속오류버네트워크휴신견적점검내급함잠김울께어떻게해야되나"
          "없습있")
HANZI_SIMPLIFIED = "".join(c for c in SIMPLIFIED if unicodedata.category(c) == "Lo")
HANZI_TRADITIONAL = "".join(c for c in TRADITIONAL if unicodedata.category(c) == "Lo")
KANJI_ONLY = "".join(c for c in KANJI if unicodedata.category(c) == "Lo")
# label -> the scripts of text really written in it, one pool each
LEGACY_POOLS = {"gb2312": {"hanzi": HANZI_SIMPLIFIED}, "big5": {"hanzi": HANZI_TRADITIONAL},
                "shift_jis": {"hiragana": HIRAGANA, "katakana": KATAKANA,
                              "kanji": KANJI_ONLY, "half-width katakana": HALFWIDTH},
                "euc-kr": {"hangul": HANGUL}}
LEGACY_POOLS["euc-jp"] = LEGACY_POOLS["shift_jis"]
# The letters European words carry beyond ASCII, and the ASCII around them.
ACCENTED = ("àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßÀÁÂÄÅÆÇÈÉÊÍÑÓÖØÚÜłŁśŚżŻźćńęąčČřŘšŠžŽěůőűğışŞİœ"
            "ățșđơưễ")
WORD_PARTS = ("", "a", "e", "n", "r", "M", "st", "er", "Gr", "ll", "ch")
SYMBOLS = "€£°±×–—“”‘’…•·©®™§¿¡«»✓★→😀👍🙏🎉❤"
CYRILLIC = "абвгдежзийклмнопрстуфхцчшщыьэюяАБВГДЕЖЗИКЛМНОПРСТУФХЦЧШЭЮЯёЁіїєґ"
GREEK = "αβγδεζηθικλμνξοπρστυφχψωάέήίόύώΑΒΓΔΕΘΛΠΣΦΩ"
HEBREW = "אבגדהוזחטיכלמנסעפצקרשת"
ARABIC = "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"
# script -> the characters UTF-8 text of that script is made of
UTF8_POOLS = {"cyrillic": CYRILLIC, "greek": GREEK, "hebrew": HEBREW, "arabic": ARABIC,
              "symbols": SYMBOLS, "hanzi": HANZI_SIMPLIFIED, "kana": HIRAGANA + KATAKANA,
              "hangul": HANGUL}
# The ASCII a short subject has around its text, and the letters glued to it where a
# script meets Latin inside words ("A社", "PCの", "Windows系统"; not "Aни").
AFFIXES = (("", ""), ("Re: ", ""), ("", " 2"), ("Fw: ", " ok"))
GLUED = (("A", ""), ("", "x"))
GLUED_SCRIPTS = ("hanzi", "hiragana", "katakana", "kanji", "hangul",
                 "kana")

LEGACY_SENTENCES = {
    "gb2312": ["你好，我的打印机坏了。请帮忙。", "会议通知", "关于明天的会议安排", "密码重置",
               "我无法登录邮箱", "请假申请", "发票", "报销单据已提交，请审批。", "回复：测试",
               "系统升级通知：本周六晚上十点至十二点", "谢谢！", "电脑开不了机", "网络很慢",
               "附件是合同草稿", "Windows系统更新失败", "VPN连接不上", "工资单", "您好", "急",
               "紧急：服务器宕机", "一", "要", "为什么", "Re: 会议", "打印机", "邮件", "测试"],
    "big5": ["會議", "您好，我的印表機壞了。", "會議通知", "密碼重設", "請假申請", "謝謝",
             "電腦無法開機", "網路很慢", "附件是合約草稿", "系統更新", "發票", "回覆：測試",
             "請協助處理", "帳號被鎖定", "急件", "台北辦公室", "香港", "報銷", "Re: 會議"],
    "shift_jis": ["件名 テスト", "テスト", "プリンターが壊れました。日本語", "会議の件",
                  "パスワードを忘れました", "お疲れ様です。", "よろしくお願いします", "Re: ﾃｽﾄ",
                  "ﾃｽﾄ", "ﾃｽ", "ｱﾝｹｰﾄ", "ﾊﾟｽﾜｰﾄﾞ", "見積書", "請求書の送付について", "東京",
                  "至急", "ネットワーク障害", "①会議室", "ありがとうございます", "株式会社",
                  "ｶﾀｶﾅ", "ﾃｽﾄ送信", "ｻｰﾊﾞｰ停止のお知らせ", "Re: ｱﾝｹｰﾄ", "ﾒｰﾙ"],
    "euc-kr": ["회의 일정", "안녕하세요, 프린터가 고장났습니다.", "비밀번호 변경", "감사합니다",
               "회의", "요청", "문의드립니다", "급함", "서버 점검 안내", "휴가 신청", "견적서",
               "확인 부탁드립니다", "네트워크 오류", "계정 잠김", "서울", "Re: 회의 일정", "회"],
}
# Katakana words Japanese mail writes in half-width forms too ("ﾊﾟｽﾜｰﾄﾞ").
KATAKANA_WORDS = ("テスト", "アンケート", "パスワード", "サーバー", "メール", "データ", "コピー",
                  "ファイル", "ログイン", "エラー", "センター", "プリンター", "ネットワーク",
                  "システム", "ユーザー", "メンテナンス", "スケジュール", "キャンセル", "オーダー",
                  "カード", "ソフト", "ウイルス", "セキュリティ", "アカウント", "ヘルプデスク")
_HALFWIDTH_OF = {unicodedata.normalize("NFKC", h): h for h in (
    *HALFWIDTH, *(h + mark for h in HALFWIDTH for mark in "ﾞﾟ"))
    if len(unicodedata.normalize("NFKC", h)) == 1}


def halfwidth(text: str) -> str:
    """Full-width katakana as JIS X 0201 half-width forms ("パス" -> "ﾊﾟｽ")."""
    return "".join(_HALFWIDTH_OF.get(c, c) for c in text)


LEGACY_SENTENCES["shift_jis"] += [w for word in KATAKANA_WORDS for w in (
    word, halfwidth(word), "Re: " + halfwidth(word), halfwidth(word) + "のお知らせ")]
LEGACY_SENTENCES["euc-jp"] = [s for s in LEGACY_SENTENCES["shift_jis"] if s != "①会議室"]
UTF8_SENTENCES = [
    "Café", "Müller", "José García", "François", "Zoë", "Łukasz Wróbel", "Ørsted", "Grüße",
    "naïve", "Ångström", "Škoda", "Dvořák", "Ťažký", "Björn", "İstanbul", "Ça va",
    "Señor Núñez", "résumé", "Crème brûlée", "São Paulo", "Kraków", "Gdańsk", "Malmö",
    "Reykjavík", "Þór", "Ægir", "Straße", "Nguyễn Văn Đức", "Tiếng Việt", "Ελλάδα", "Привет",
    "Москва", "Спасибо", "Київ", "שלום", "مرحبا", "Ευχαριστώ", "€100", "10 €", "“quoted”",
    "it’s", "—", "…", "© 2024", "™", "±5 °C", "×", "👍", "😀 Thanks", "🙏", "❤️", "✓ done",
    "★★★", "你好", "会议通知", "テスト", "회의 일정", "會議", "日本語", "한국어", "é", "ü", "ß",
    "ø", "Ö", "ç", "Re: Café", "Re: Grüße aus München", "Bonjour, ça marche très bien.",
    "Ich möchte mein Passwort ändern.", "Hola, ¿cómo estás?", "Drukarka nie działa.",
    "Принтер не работает, помогите.", "你好，我的打印机坏了。", "プリンターが壊れました。",
    "안녕하세요, 프린터가 고장났습니다.", "สวัสดี", "नमस्ते",
]


@dataclass(frozen=True, slots=True)
class Case:
    text: str  # what the writer wrote
    label: str  # the charset label the mail carries
    data: bytes
    written_in: str  # "legacy" (the label is true) or "utf-8" (a web form's UTF-8)
    kind: str  # "1 char", ..., "sentence"


def cases(seed: int = 1, sample: int = 3000, exhaustive: int = 2) -> Iterator[Case]:
    """Every case of the table: strings up to `exhaustive` characters all, longer ones
    (up to 4) `sample` per pool and length, drawn with `seed`."""
    rng = random.Random(seed)
    for label, pools in LEGACY_POOLS.items():
        for script, pool in pools.items():
            for length, text in _strings(pool, rng, sample, exhaustive):
                yield from _written(text, label, LABELS[label], "legacy", f"{script} {length}")
        for text in LEGACY_SENTENCES[label]:
            yield from _written(text, label, LABELS[label], "legacy", "sentence")
    utf8 = [(f"{script} {length}", text) for script, pool in UTF8_POOLS.items()
            for length, text in _strings(pool, rng, sample, exhaustive)]
    utf8 += [(f"latin {len(word)}", word) for word in _latin_words(rng, sample)]
    utf8 += [("sentence", text) for text in UTF8_SENTENCES]
    for kind, text in utf8:
        for label in LABELS:
            yield from _written(text, label, "utf-8", "utf-8", kind)


def _latin_words(rng: random.Random, sample: int) -> Iterator[str]:
    """Every accented letter inside ASCII word parts (a capital only where words have
    them: first, or after a capital), and a sample of words with two."""
    for accent in ACCENTED:
        starts = ("", "M") if accent.isupper() else WORD_PARTS
        for before, after in itertools.product(starts, WORD_PARTS):
            yield before + accent + after
    small = [a for a in ACCENTED if a.islower()]
    for _ in range(sample):
        first, second = rng.choice(ACCENTED), rng.choice(small)
        parts = [rng.choice(WORD_PARTS) for _ in range(3)]
        yield ("" if first.isupper() else parts[0]) + first + parts[1] + second + parts[2]


def _strings(pool: str, rng: random.Random, sample: int,
             exhaustive: int) -> Iterator[tuple[int, str]]:
    chars = sorted(set(pool))
    cased = any(c.islower() for c in chars)  # an alphabet: small letters, and capitalised
    chars = [c for c in chars if c.islower()] if cased else chars
    for length in range(1, 5):
        if length <= exhaustive:
            combos: Iterator[tuple[str, ...]] = itertools.product(chars, repeat=length)
        else:
            combos = (tuple(rng.choice(chars) for _ in range(length)) for _ in range(sample))
        for combo in combos:
            yield length, "".join(combo)
            if cased:
                yield length, "".join(combo).capitalize()


def _written(text: str, label: str, codec: str, written_in: str, kind: str) -> Iterator[Case]:
    affixes = AFFIXES + GLUED if kind.rsplit(" ", 1)[0] in GLUED_SCRIPTS else AFFIXES
    for before, after in affixes if kind != "sentence" else (("", ""),):
        whole = before + text + after
        try:
            data = whole.encode(codec)
        except UnicodeEncodeError:  # not in this legacy repertoire: no such mail
            continue
        yield Case(whole, label, data, written_in, kind)


def expected(case: Case) -> str:
    """The right reading: the label's for legacy text, else the UTF-8 text."""
    if case.written_in == "utf-8":
        return case.text
    return charsets.decode_as(case.data, charsets.encoding_for(case.label) or "").text


def old_rule(data: bytes, label: str) -> str:
    """The rule before plausibility: valid UTF-8 under a legacy multibyte label wins."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return charsets.decode(data, label)


def mess_rule(data: bytes, label: str) -> str:
    """charset-normalizer's mess detector as the judge: the label's clean reading when its
    mess ratio is lower than the UTF-8 reading's, else UTF-8 (the old rule on a tie)."""
    from charset_normalizer.md import mess_ratio

    utf8 = charsets._utf8(data)
    legacy = charsets.decode_as(data, charsets.encoding_for(label) or "")
    if utf8 is None or not legacy.clean:
        return old_rule(data, label)
    return legacy.text if mess_ratio(legacy.text, 1.0) < mess_ratio(utf8, 1.0) else utf8


def both_clean(case: Case) -> bool:
    """Whether the bytes are valid UTF-8 and clean under the label (the contested cases)."""
    name = charsets.encoding_for(case.label) or ""
    return (charsets._utf8(case.data) is not None
            and charsets.decode_as(case.data, name).clean)


def errors(rule: Callable[[bytes, str], str], table: list[Case]) -> Counter[tuple[str, str]]:
    """Wrong readings by (written_in, label)."""
    wrong: Counter[tuple[str, str]] = Counter()
    for case in table:
        if rule(case.data, case.label) != expected(case):
            wrong[case.written_in, case.label] += 1
    return wrong


def main() -> None:
    table = list(cases())
    contested = [c for c in table if both_clean(c)]
    print(f"{len(table)} cases, {len(contested)} valid UTF-8 and clean under the label")
    rules = {"old": old_rule, "mess": mess_rule, "new": charsets.decode}
    wrong = {name: errors(rule, contested) for name, rule in rules.items()}
    print(f"{'written in':10} {'label':10} {'cases':>7} {'contested':>9}"
          + "".join(f" {name:>6}" for name in rules))
    for written_in, label in sorted({(c.written_in, c.label) for c in table}):
        n = sum(1 for c in table if (c.written_in, c.label) == (written_in, label))
        k = sum(1 for c in contested if (c.written_in, c.label) == (written_in, label))
        print(f"{written_in:10} {label:10} {n:7} {k:9}"
              + "".join(f" {wrong[name][written_in, label]:6}" for name in rules))
    print(f"{'total':21} {len(table):7} {len(contested):9}"
          + "".join(f" {sum(wrong[name].values()):6}" for name in rules))


if __name__ == "__main__":
    main()
