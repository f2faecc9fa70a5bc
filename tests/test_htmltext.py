"""The tokens of HTML bodies (core/mime/htmltext.py): what Python's html.parser reads from
ordinary HTML, in time linear in the input, which html.parser (CPython 3.11) is not on
markup that never ends. What the text made of them looks like is test_htmlplain.py's."""

from __future__ import annotations

import time
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.core.mime import htmltext
from mailgate.core.mime.htmlplain import html_to_text
from mailgate.core.mime.parse import parse

Event = tuple[str, str, tuple[tuple[str, str], ...], bool]


class HtmlParserEvents(HTMLParser):
    """What html.parser reports, as htmltext's tokens: the reference for ordinary HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[Event] = []

    def handle_starttag(self, tag: str, attrs: list, closed: bool = False) -> None:
        self.events.append(("start", tag, tuple((k, v or "") for k, v in attrs), closed))

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.handle_starttag(tag, attrs, closed=True)

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag, (), False))

    def handle_data(self, data: str) -> None:
        self.events.append(("data", data, (), False))


def merged(events: list[Event]) -> list[Event]:
    """Adjacent text as one (either reader may cut text in two)."""
    out: list[Event] = []
    for event in events:
        if event[0] == "data" and out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + event[1], (), False)
        else:
            out.append(event)
    return out


def html_parser_events(html: str) -> list[Event]:
    reader = HtmlParserEvents()
    reader.feed(html)
    reader.close()
    return merged(reader.events)


def token_events(html: str) -> list[Event]:
    return merged([(t.kind, t.value, t.attrs, t.self_closing) for t in htmltext.tokens(html)])


TAGS = ["p", "div", "br", "span", "a", "b", "table", "tr", "td", "li", "ul", "h1", "head",
        "title", "img", "font", "o:p", "P", "BR", "Div"]
ATTRIBUTES = st.sampled_from(['', ' class="x"', " href='a>b'", ' style="color: red"',
                              " width=3", ' alt="a &amp; b"', " data-x=\"'\"", " nowrap",
                              " href=a/b", ' src="x/"', " x = y", " b=''",
                              " hidden", ' TYPE="cite" class="gmail_quote x"',
                              " title='a b' style=display:none", ' a="1" A="2"'])
TEXT = st.sampled_from(["hello", " ", "\n", "\r\n", "&amp;", "&lt;b&gt;", "&#233;", "&#x41;",
                        "&nbsp;", "&copy", "R&D", "a & b", "x < 3", "5 > 4", "tab\there",
                        "caf\u00e9", ";", "#", "&", "&#", "ünïcode"])
START = st.builds(lambda t, a, close: f"<{t}{a}{close}>", st.sampled_from(TAGS), ATTRIBUTES,
                  st.sampled_from(["", "/", " /"]))
END = st.builds(lambda t, s: f"</{t}{s}>", st.sampled_from(TAGS), st.sampled_from(["", " "]))
OTHER = st.sampled_from(["<!-- a comment -->", "<!--[if mso]><b>x</b><![endif]-->",
                         "<!DOCTYPE html>", '<?xml version="1.0"?>', "<![if !supportLists]>",
                         "<![endif]>", "<![CDATA[x]]>", "<script>if (a < b) { x('<p>') }</script>",
                         "<style>p > b { color: red }</style>", "<SCRIPT type=x>a</SCRIPT >",
                         "<!---->", "</>"])
DOCUMENT = st.lists(st.one_of(TEXT, START, END, OTHER), max_size=30).map("".join)


@settings(max_examples=3000, deadline=None)
@given(DOCUMENT)
def test_ordinary_html_reads_as_html_parser_read_it(html: str) -> None:
    assert token_events(html) == html_parser_events(html)


def test_known_documents_read_alike() -> None:
    for html in ["<html><head><title>T</title></head><body><p>Hello&nbsp;there</p>"
                 "<div>second<br>line</div></body></html>",
                 "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>",
                 '<p class="MsoNormal">x<o:p></o:p></p><!--[if gte mso 9]><xml></xml>'
                 "<![endif]-->", "<ul><li>one<li>two</ul>", "a < b and c > d", "",
                 "<p>unclosed", "text &amp; more &unknown; &#99999999;"]:
        assert token_events(html) == html_parser_events(html), html


def test_tokens_say_what_the_markup_is() -> None:
    found = list(htmltext.tokens('<P class="a>b">x &amp; y<br/></p><!-- c -->z'))
    assert [(t.kind, t.value) for t in found] == [
        ("start", "p"), ("data", "x & y"), ("start", "br"), ("end", "p"), ("data", "z")]
    assert found[0].attr("class") == "a>b" and found[2].self_closing


def test_attributes_are_read_by_their_grammar_not_searched_for() -> None:
    """Each attribute is a name, then "=" and a quoted or unquoted value, or no value:
    a word inside another attribute's value is no attribute of its own."""
    [tag] = htmltext.tokens("""<DIV title='hidden style=display:none' Hidden class=a\tb="x"
        data-x = "1" style=color:red;display:none STYLE="second" =odd href=a/b/>""")
    assert tag.attrs == (("title", "hidden style=display:none"), ("hidden", ""),
                         ("class", "a"), ("b", "x"), ("data-x", "1"),
                         ("style", "color:red;display:none"), ("style", "second"),
                         ("=odd", ""), ("href", "a/b/"))
    assert tag.attr("style") == "color:red;display:none"  # the first of duplicates
    assert tag.attr("id") is None and not tag.self_closing
    [plain] = htmltext.tokens("<p title='x hidden'>")
    assert plain.attr("hidden") is None
    [value] = htmltext.tokens('<a href="?a=1&amp;b=2" x=&lt;y>')
    assert value.attrs == (("href", "?a=1&b=2"), ("x", "<y"))


def test_markup_that_never_ends_is_text() -> None:
    assert html_to_text("<p>before</p><a href='x") == "before\n\n<a href='x"
    assert html_to_text("a <!-- never closed") == "a <!-- never closed"


def test_an_html_body_of_unterminated_tags_is_read_in_seconds() -> None:
    """40,000 `<a ` that never end (120 kB). html.parser retries each at the end of the
    input, scanning the rest every time: 20,000 took 108 s on the bench machine (4.8 x per
    doubling), these 393 s; read linearly, milliseconds. The bound only tells the two
    apart."""
    raw = (b"From: a@example.com\r\nSubject: html\r\nContent-Type: text/html\r\n\r\n"
           b"<p>hello</p>" + b"<a " * 40_000)
    started = time.monotonic()
    msg = parse(raw)
    assert time.monotonic() - started < 60
    assert msg.body.startswith("hello\n\n<a <a ")
