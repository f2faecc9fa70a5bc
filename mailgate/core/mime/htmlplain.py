"""The plain text of an HTML body, as a mail client's plain view shows it. Pure; never raises.

A request's text is read from this when a mail has no plain text: trim.py drops quoted
lines (">") and ends the text at an attribution or an Outlook header block, commands.py
reads commands from its leading lines. So the text shows what the sender's client showed,
the way Thunderbird's HTML-to-plain conversion writes it, and nothing the client hid:

- citations are marked ">" per level (">> " two deep, ">" alone on an empty line): a
  blockquote of type "cite" (Thunderbird, Apple Mail, Roundcube, Proton) or of a mail
  client's quote class (Gmail's gmail_quote). A blockquote without either is indentation
  (Thunderbird's Indent button), the sender's own text, and is not marked;
- not read: script, style, title, template, the head, and elements a client hides by their
  own attributes: `hidden`, an inline style display:none, visibility:hidden, opacity:0,
  a zero (max-)height with overflow:hidden, or mso-hide:all (Outlook's; preheaders carry
  it); a <details> not marked open shows its <summary> only. Text hidden by a
  stylesheet's class rules is read: there is no CSS engine here;
- lines as a browser breaks them: a line break at each block, a blank line around
  paragraphs, headings, top-level lists and <pre>; <br> ends a line; list items bulleted
  "* " or numbered "1. "; table cells separated by a tab, rows on lines of their own;
  Outlook's paragraphs (classes Mso...) and those styled without margins are lines;
  blanks collapsed except in <pre>; NBSP a space; links their text; images left out
  (alt text is what shows in place of a blocked image: logos, icons, "image001.png").

Elements close as HTML closes them where it matters for what is hidden or cited: an open
<p> is closed by a block, <li> by <li>, a cell by a cell or a row; an end tag closes the
nearest open element of its name and what is open inside it, and one with none open is
ignored. Per-name counts answer "is one open?" at once, and each element is pushed and
popped once, so the text is read in time linear in the input (htmltext.py tokenizes it
so too).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache

from mailgate.core.mime import htmltext
from mailgate.core.mime.htmltext import Token
from mailgate.core.mime.plainlines import PlainLines

MAX_QUOTE_DEPTH = 10  # ">" marks per line at most: 100,000 nested quotes stay small

# Breaks a block asks for at its start and end: 1 a line of its own, 2 a blank line around.
_BLANK_LINE_AROUND = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dl"})
_LINE_BREAK_AROUND = frozenset({
    "address", "article", "aside", "blockquote", "caption", "center", "details", "dialog",
    "dd", "dir", "div", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header",
    "hgroup", "hr", "legend", "li", "main", "menu", "nav", "ol", "search", "section",
    "summary", "table", "tbody", "tfoot", "thead", "tr", "ul"})
_LISTS = frozenset({"ul", "ol", "dir", "menu"})
_VOID = frozenset({"area", "base", "basefont", "bgsound", "br", "col", "embed", "hr", "img",
                   "input", "keygen", "link", "meta", "param", "source", "track", "wbr"})
_NEVER_SHOWN = frozenset({"script", "style", "title", "template"})
_QUOTE_CLASSES = frozenset({"gmail_quote", "protonmail_quote"})
# What a <head> holds (HTML's "in head" insertion mode). Anything else met there, text or
# another tag, ends the head unannounced and is the body's, as browsers show it: a <head>
# with no </head> hid the whole body, and text written in the head was lost.
_HEAD_TAGS = frozenset({"base", "basefont", "bgsound", "link", "meta", "title", "noscript",
                        "noframes", "style", "script", "template", "head"})
_HTML_BLANKS = " \t\n\r\f"

# Elements a start tag closes when one is open in scope (HTML's tree construction): the
# group of names it closes, and the elements that bound the search (a <p> inside a table
# cell is not closed by a <div> outside it).
_SCOPE = frozenset({"applet", "caption", "html", "table", "td", "th", "marquee", "object",
                    "template", "button"})
_GROUPS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "p": (frozenset({"p"}), _SCOPE),
    "item": (frozenset({"li"}), _SCOPE | {"ol", "ul"}),
    "term": (frozenset({"dd", "dt"}), _SCOPE | {"ol", "ul", "dl"}),
    "cell": (frozenset({"td", "th"}), frozenset({"html", "table", "template"})),
    "row": (frozenset({"tr"}), frozenset({"html", "table", "template"})),
}
_GROUP_NAMES = tuple(_GROUPS)
_CLOSES_P = frozenset({"address", "article", "aside", "blockquote", "center", "details",
                       "dialog", "dir", "div", "dl", "fieldset", "figcaption", "figure",
                       "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
                       "hgroup", "hr", "main", "menu", "nav", "ol", "p", "pre", "search",
                       "section", "summary", "ul", "li", "dd", "dt"})
_CLOSES: dict[str, tuple[int, ...]] = {  # by group index
    name: tuple(_GROUP_NAMES.index(group) for group in groups) for name, groups in {
        **dict.fromkeys(_CLOSES_P, ("p",)), "li": ("item", "p"), "dd": ("term", "p"),
        "dt": ("term", "p"), "td": ("cell",), "th": ("cell",), "tr": ("cell", "row"),
        **dict.fromkeys(("tbody", "thead", "tfoot"), ("cell", "row"))}.items()}


def html_to_text(html: str) -> str:
    """The text of an HTML body as a mail client's plain view shows it (module doc)."""
    reader = _Reader()
    for token in htmltext.tokens(html):
        reader.read(token)
    return reader.lines.text()


@dataclass(slots=True)
class _Open:
    """An open element and what it does to the text inside it."""
    name: str
    hides: bool = False
    folds: bool = False  # a <details> without "open"
    cites: bool = False
    number: int | None = None  # an ordered list's next item number
    breaks: int = 0  # at its start and end: 1 a line of its own, 2 a blank line around
    # Per _GROUPS: the stack index of the nearest open element of the group that a start
    # tag could close, -1 when none is open in scope.
    nearest: tuple[int, ...] = ()


class _Reader:
    """Walks the tokens keeping the open elements, and writes what shows into lines."""

    def __init__(self) -> None:
        self.lines = PlainLines()
        self.stack: list[_Open] = []
        self.open = Counter[str]()
        self.lists: list[_Open] = []
        self.hidden = 0  # open elements that hide what is inside them
        self.folded = 0  # open <details> not marked open: only their <summary> shows
        self.summaries = 0  # open <summary>
        self.quotes = 0  # open citations
        self.pre = 0  # open <pre>
        self.pre_started = False  # a newline right after <pre> is not content
        self.in_head = False

    @property
    def unseen(self) -> bool:
        """Inside an element that hides, or in a folded <details> but not its summary."""
        return bool(self.hidden) or self.folded > self.summaries

    @property
    def depth(self) -> int:
        return min(self.quotes, MAX_QUOTE_DEPTH)

    def read(self, token: Token) -> None:
        if self.in_head and not self.hidden and _ends_head(token):
            self.in_head = False
        if token.kind == "data":
            self._data(token.value)
        elif token.value == "head":
            self.in_head = token.kind == "start"
        elif token.kind == "start":
            self._start(token)
        else:
            self._end(token.value)

    def _data(self, text: str) -> None:
        if self.unseen or self.in_head:
            return
        if self.pre:
            if self.pre_started and text.startswith(("\r\n", "\n", "\r")):
                text = text[2:] if text.startswith("\r\n") else text[1:]
            self.pre_started = False
            self.lines.preformatted(text, self.depth)
        else:
            self.lines.words(text, self.depth)

    def _start(self, token: Token) -> None:
        name = token.value
        for group in _CLOSES.get(name, ()):
            self._close_nearest(group)
        if name == "br":
            if not self.unseen:
                self.lines.hard_break(self.depth)
            return
        breaks = _breaks(token, nested=bool(self.lists))
        if not self.unseen:
            self._layout_start(token, breaks)
        if name not in _VOID:
            self._push(token, breaks)

    def _layout_start(self, token: Token, breaks: int) -> None:
        name = token.value
        self.lines.block(breaks)
        if name == "li":
            self.lines.bullet(self._marker())
        elif name in ("td", "th"):
            self.lines.cell()
        elif name == "pre":
            self.pre_started = True

    def _marker(self) -> str:
        if not self.lists:
            return "* "
        indent = "  " * (len(self.lists) - 1)
        inner = self.lists[-1]
        if inner.number is None:
            return f"{indent}* "
        inner.number += 1
        return f"{indent}{inner.number - 1}. "

    def _push(self, token: Token, breaks: int) -> None:
        name = token.value
        parent = self.stack[-1].nearest if self.stack else _NONE_OPEN
        index = len(self.stack)
        roles = _roles(name)
        nearest = parent if roles is _INHERITS else tuple([
            index if role == "member" else -1 if role == "boundary" else inherited
            for role, inherited in zip(roles, parent, strict=True)])
        element = _Open(name, hides=_hides(token), cites=_cites(token), breaks=breaks,
                        nearest=nearest,
                        folds=name == "details" and token.attr("open") is None)
        if name == "ol":
            element.number = _start_number(token.attr("start"))
        self.stack.append(element)
        self.open[name] += 1
        self.hidden += element.hides
        self.folded += element.folds
        self.summaries += name == "summary"
        self.quotes += element.cites
        self.pre += name == "pre"
        if name in _LISTS:
            self.lists.append(element)

    def _end(self, name: str) -> None:
        if name == "br":  # </br> is read as <br>
            self._start(Token("start", "br"))
            return
        if name in ("html", "body"):
            return  # text after </body> is still the body's, inside what is open
        if self.open[name]:
            while self.stack and self._pop().name != name:
                pass
        elif not self.unseen:  # "</p>" alone: browsers end a line there all the same
            self.lines.block(_breaks(Token("start", name), nested=bool(self.lists)))

    def _close_nearest(self, group: int) -> None:
        if not self.stack:
            return
        index = self.stack[-1].nearest[group]
        if index >= 0:
            while len(self.stack) > index:
                self._pop()

    def _pop(self) -> _Open:
        element = self.stack.pop()
        self.open[element.name] -= 1
        self.hidden -= element.hides
        self.folded -= element.folds
        self.summaries -= element.name == "summary"
        self.quotes -= element.cites
        self.pre -= element.name == "pre"
        if self.lists and self.lists[-1] is element:
            self.lists.pop()
        if element.name == "li":
            self.lines.bullet("")  # an item with no text has no bullet
        if not self.unseen:  # the element's end, whether its end tag or what closed it
            self.lines.block(element.breaks)
        return element


_NONE_OPEN = (-1,) * len(_GROUPS)
_INHERITS = ("",) * len(_GROUPS)


@cache
def _roles(name: str) -> tuple[str, ...]:
    """What an element is to each group: a member, a boundary of its scope, or neither."""
    roles = tuple("member" if name in members else "boundary" if name in bounds else ""
                  for members, bounds in _GROUPS.values())
    return _INHERITS if roles == _INHERITS else roles


def _breaks(token: Token, nested: bool) -> int:
    """The breaks an element asks for around it: a blank line around paragraphs, headings
    and top-level lists, a line of its own for other blocks. Outlook's paragraphs (classes
    Mso...) and those styled margin 0 (Outlook on the web) are lines, as they show."""
    name = token.value
    if name == "p" and token.attrs and (_outlook_class(token)
                                        or _no_margins(token.attr("style") or "")):
        return 1
    if name in _BLANK_LINE_AROUND:
        return 2
    if name in _LISTS:
        return 1 if nested else 2
    return 1 if name in _LINE_BREAK_AROUND else 0


def _outlook_class(token: Token) -> bool:
    return any(c[:3].lower() == "mso" for c in _classes(token))


def _no_margins(style: str) -> bool:
    """No space above or below: margin 0 (shorthand: top [right [bottom]]), or
    margin-top and margin-bottom 0."""
    declared = _declarations(style)
    sides = declared.get("margin", "").split()
    top = sides[0] if sides else "1"
    bottom = sides[2] if len(sides) >= 3 else top
    return _is_zero(declared.get("margin-top", top)) and _is_zero(
        declared.get("margin-bottom", bottom))


def _cites(token: Token) -> bool:
    """A citation: a blockquote of type cite or of a mail client's quote class. Gmail's
    gmail_quote also names the <div> around the attribution; only the blockquote cites."""
    if token.value != "blockquote":
        return False
    if (token.attr("type") or "").strip(_HTML_BLANKS).lower() == "cite":
        return True
    return not _QUOTE_CLASSES.isdisjoint(_classes(token))


def _classes(token: Token) -> list[str]:
    return (token.attr("class") or "").split()


def _hides(token: Token) -> bool:
    if token.value in _NEVER_SHOWN:
        return True
    if not token.attrs:
        return False
    if token.attr("hidden") is not None:
        return True
    style = token.attr("style")
    return bool(style) and _style_hides(style)


def _style_hides(style: str) -> bool:
    """Whether an inline style hides the element and all inside it: display:none,
    visibility:hidden, opacity:0, mso-hide:all, or a zero height that overflow:hidden
    clips (what preheaders use)."""
    declared = _declarations(style)
    if (declared.get("display") == "none" or declared.get("mso-hide") == "all"
            or declared.get("visibility") in ("hidden", "collapse")
            or _is_zero(declared.get("opacity", "1"))):
        return True
    return declared.get("overflow") == "hidden" and any(
        _is_zero(declared.get(n, "1")) for n in ("max-height", "height"))


def _declarations(style: str) -> dict[str, str]:
    """An inline style's declarations, property -> value, lower case; the last wins."""
    declared: dict[str, str] = {}
    for declaration in style.split(";"):
        name, colon, value = declaration.partition(":")
        if colon:
            declared[name.strip().lower()] = _without_important(value.strip().lower())
    return declared


def _without_important(value: str) -> str:
    """"none !important" is "none" (split once, not searched: blanks are the sender's)."""
    head, bang, tail = value.rpartition("!")
    return head.strip() if bang and tail.strip() == "important" else value


def _is_zero(value: str) -> bool:
    """A CSS zero: "0", "0.0", "0px", ".0em"."""
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz%")
    return "0" in number and number.count(".") <= 1 and not number.strip("0.")


def _start_number(value: str | None) -> int:
    text = (value or "").strip(_HTML_BLANKS)
    return int(text) if text.lstrip("-").isdigit() and len(text) < 10 else 1


def _ends_head(token: Token) -> bool:
    if token.kind == "data":
        return bool(token.value.strip(_HTML_BLANKS))
    return token.kind == "start" and token.value not in _HEAD_TAGS
