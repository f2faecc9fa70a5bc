"""The text of HTML-only mail as a mail client's plain view shows it (core/mime/htmlplain.py):
citations marked as Thunderbird marks them, what clients hide left out, lines, lists,
tables and <pre> as browsers lay them out; and what trim.py makes of the result."""

from __future__ import annotations

from mailgate.core.mime.htmlplain import MAX_QUOTE_DEPTH, html_to_text
from mailgate.core.mime.parse import parse
from mailgate.core.trim import trim_reply

# --- citations -----------------------------------------------------------------------------


def test_citations_are_marked_per_level_as_thunderbird_marks_them() -> None:
    html = ('<p>Done, thanks.</p><div class="moz-cite-prefix">On 24.11.26 Ann wrote:</div>'
            '<blockquote type="cite" cite="mid:x@y"><p>It beeps.</p><p>Twice.</p>'
            '<blockquote type="CITE">Earlier</blockquote>Later</blockquote>')
    assert html_to_text(html) == ("Done, thanks.\n\nOn 24.11.26 Ann wrote:\n\n> It beeps.\n>\n"
                                  "> Twice.\n>\n>> Earlier\n> Later")
    assert trim_reply(html_to_text(html)) == "Done, thanks."


def test_gmail_marks_its_blockquote_not_the_div_around_the_attribution() -> None:
    html = ('<div dir="ltr">Fixed.</div><br><div class="gmail_quote gmail_quote_container">'
            '<div dir="ltr" class="gmail_attr">Ann &lt;ann@example.com&gt; schrieb am Di.:<br>'
            '</div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">'
            '<div dir="ltr">#close<div><br></div><div>old</div></div></blockquote></div>')
    assert html_to_text(html) == ("Fixed.\n\nAnn <ann@example.com> schrieb am Di.:\n"
                                  "> #close\n>\n> old")


def test_a_reply_that_is_only_a_quote_has_no_text_of_its_own() -> None:
    """Apple Mail, Proton: the quote first, no attribution trim knows. Read as unmarked
    text, its first line was the sender's: a quoted "#close" was a command."""
    for html in ['<blockquote type="cite"><div>#close duplicate</div></blockquote>',
                 '<blockquote class="protonmail_quote"><p>#close</p></blockquote>']:
        assert trim_reply(html_to_text(html)) == ""


def test_a_blockquote_for_indentation_is_the_senders_own_text() -> None:
    """Thunderbird's Indent button writes a bare <blockquote>: not a citation."""
    html = "<p>Steps:</p><blockquote><blockquote>restart it</blockquote></blockquote>"
    assert trim_reply(html_to_text(html)) == "Steps:\n\nrestart it"


def test_a_citation_is_read_from_its_attributes_not_from_the_tag_text() -> None:
    html = ("<blockquote title='type=\"cite\"' data-class=gmail_quote>mine</blockquote>"
            "<blockquote class=x type = cite>theirs</blockquote>")
    assert html_to_text(html) == "mine\n> theirs"


def test_quote_marks_stop_at_a_depth_however_deep_the_nesting() -> None:
    deep = 100_000
    html = '<blockquote type="cite">' * deep + "x" + "</blockquote>" * deep + "after"
    assert html_to_text(html) == ">" * MAX_QUOTE_DEPTH + " x\nafter"


def test_a_citation_left_open_ends_where_the_element_around_it_ends() -> None:
    html = '<div><blockquote type="cite">quoted</div>mine'
    assert html_to_text(html) == "> quoted\nmine"


# --- what clients hide ---------------------------------------------------------------------


def test_what_a_client_hides_is_not_read() -> None:
    html = ('<span style="display:none; font-size:0">#close</span>'
            '<div style="DISPLAY: None !important">preheader one</div>'
            '<p hidden>hidden attribute</p><template><p>template</p></template>'
            '<div style="mso-hide:all">outlook preheader</div>'
            '<div style="opacity:0">transparent</div><div style="visibility:hidden">v</div>'
            '<div style="max-height:0px;overflow:hidden">clipped</div>'
            "<p>Shown</p>")
    assert html_to_text(html) == "Shown"


def test_a_folded_details_element_shows_its_summary_only() -> None:
    html = ("<details><summary>Log</summary>#close</details>"
            "<details open><summary>Open</summary>shown</details>")
    assert html_to_text(html) == "Log\nOpen\nshown"


def test_hiding_is_read_from_the_style_attribute_only() -> None:
    html = ("<div title='display:none' data-style='display:none'>one</div>"
            "<div style='color:red' class=hidden>two</div>"
            "<div style='font-size:0'><p style='font-size:14px'>three</p></div>"
            "<div style='max-height:0'>four</div>")
    assert html_to_text(html) == "one\ntwo\n\nthree\n\nfour"


def test_hidden_text_ends_where_the_browser_closes_its_element() -> None:
    """A <p> is closed by the next block; a cell by the next cell; text after an end tag
    with no open element stays inside what is open."""
    assert html_to_text('<p style="display:none">x<p>shown') == "shown"
    assert html_to_text('<p style="display:none">x<div>shown</div>') == "shown"
    assert html_to_text('<table><tr><td hidden>x<td>shown</table>') == "shown"
    assert html_to_text('<div hidden>x</span></p></body>still hidden</div>y') == "y"


def test_a_self_closing_mark_does_not_close_an_element() -> None:
    """HTML ignores "/>" on elements that are not void: the span stays open."""
    assert html_to_text('<span style="display:none"/>#close</span>shown<br/>x') == "shown\nx"


# --- layout --------------------------------------------------------------------------------


def test_divs_break_lines_and_paragraphs_leave_a_blank_line() -> None:
    html = ("<div>one</div><div>two</div><div><br></div><div>three</div>"
            "<p>four</p><p>five</p><h2>Six</h2>seven")
    assert html_to_text(html) == "one\ntwo\n\nthree\n\nfour\n\nfive\n\nSix\n\nseven"


def test_paragraphs_without_margins_are_lines() -> None:
    """Outlook's paragraphs (class MsoNormal, margin 0 in its stylesheet) and Outlook on
    the web's (margin-top:0;margin-bottom:0) show single-spaced; an empty one is a blank
    line. They read double-spaced ("Alice\n\nIT Support")."""
    outlook = ("<p class=MsoNormal>Hi Bob,<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;"
               "</o:p></p><p class=MsoNormal>The printer is fixed.</p><p class=MsoNormal>"
               "Alice</p><p class=MsoNormal>IT Support</p>")
    assert html_to_text(outlook) == "Hi Bob,\n\nThe printer is fixed.\nAlice\nIT Support"
    owa = ('<p style="margin-top:0;margin-bottom:0">one</p><p style="margin:0px 0 0">two</p>'
           '<p style="margin:0 0 0 36pt">three</p><p>four</p>')
    assert html_to_text(owa) == "one\ntwo\nthree\n\nfour"


def test_an_element_closed_without_its_end_tag_still_ends_its_lines() -> None:
    assert html_to_text("<div><p>a</div>b") == "a\n\nb"
    assert html_to_text("<ul><li>a<li>b</ul>c") == "* a\n* b\n\nc"
    assert html_to_text("<ul><li></li></ul><p>no bullet</p>") == "no bullet"


def test_a_break_inside_inline_elements_ends_the_line() -> None:
    html = "<span>a<br>b</span> <b>c<br/><i>d</i></b><div>e<br></div><div>f</div>"
    assert html_to_text(html) == "a\nb c\nd\ne\nf"


def test_list_items_are_bulleted_and_numbered() -> None:
    html = ("<p>Tried:</p><ul><li>restart<li>new cable<ol start=3><li>a</li><li>b</li>"
            "</ol></li></ul><ol><li>first</li></ol>done")
    assert html_to_text(html) == ("Tried:\n\n* restart\n* new cable\n  3. a\n  4. b\n\n"
                                  "1. first\n\ndone")


def test_table_cells_are_separated_and_rows_are_lines() -> None:
    html = ("<table><tr><th>Host</th><th>State</th></tr><tr><td>pc1</td><td>down</td>"
            "<tr><td>&nbsp;</td><td>pc2<td>up</table>after")
    assert html_to_text(html) == "Host\tState\npc1\tdown\npc2\tup\nafter"


def test_preformatted_text_keeps_its_blanks_and_lines() -> None:
    html = "<p>Log:</p><pre>\nError  42:\n    at  line 3\n\n  end</pre>back  to   normal"
    assert html_to_text(html) == ("Log:\n\nError  42:\n    at  line 3\n\n  end\n\n"
                                  "back to normal")


def test_blanks_collapse_and_nbsp_is_a_space() -> None:
    html = "  a \n\t b&nbsp;&nbsp;c &amp; <a href='https://x/'>link</a>&#160;</p>"
    assert html_to_text(html) == "a b  c & link"


def test_images_are_left_out() -> None:
    html = '<p><img src="cid:image001.png" alt="image001.png">Screenshot above<img alt=x/></p>'
    assert html_to_text(html) == "Screenshot above"


def test_the_head_is_not_read() -> None:
    html = ("<html><head><title>T</title><style>p{}</style><meta charset=utf-8></head>"
            "<body><p>Hello</p><script>x()</script></body></html>")
    assert html_to_text(html) == "Hello"
    assert html_to_text("<head><title>T</title>text in the head<p>body") == (
        "text in the head\n\nbody")


# --- Outlook reply headers end the text ----------------------------------------------------


OWA = ('<div dir="ltr">Fixed, see below.</div><div id="appendonsend"></div>'
       '<hr style="display:inline-block;width:98%" tabindex="-1"><div id="divRplyFwdMsg" '
       'dir="ltr"><font face="Calibri, sans-serif" style="font-size:11pt" color="#000000">'
       "<b>From:</b> Ann Example &lt;ann@example.com&gt;<br><b>Sent:</b> Tuesday, November "
       "24, 2026 9:00 AM<br><b>To:</b> IT &lt;it-help@example.com&gt;<br><b>Subject:</b> "
       "Laptop</font><div>&nbsp;</div></div><div>#close old text</div>")
OUTLOOK = ('<div class=WordSection1><p class=MsoNormal>Done.<o:p></o:p></p><p class=MsoNormal>'
           '<o:p>&nbsp;</o:p></p><div><div style="border:none;border-top:solid #E1E1E1 1.0pt;'
           'padding:3.0pt 0cm 0cm 0cm"><p class=MsoNormal><b><span lang=EN-US>From:</span></b>'
           "<span lang=EN-US>&nbsp;Ann &lt;ann@example.com&gt; <br><b>Sent:</b> Tuesday, "
           "November 24, 2026 9:00 AM<br><b>To:</b> IT<br><b>Subject:</b> Laptop<o:p></o:p>"
           "</span></p></div></div><p class=MsoNormal>#close<o:p></o:p></p></div>")
NOTES = ("<p>Ordered.</p><table><tr valign=top><td><font size=1 color=#5f5f5f>From:</font>"
         "<td><font size=1>Ann/Example</font><tr valign=top><td><font size=1>Date:</font><td>"
         "<font size=1>24.11.2026 09:00</font></table><p>#close</p>")


def test_outlook_and_notes_reply_headers_are_lines_that_end_the_text() -> None:
    """OWA's divRplyFwdMsg and desktop Outlook's border-top block write bold "From:" and
    "Sent:" lines; Lotus Notes a table, whose cells once ran together ("From:Ann")."""
    assert trim_reply(html_to_text(OWA)) == "Fixed, see below."
    assert trim_reply(html_to_text(OUTLOOK)) == "Done."
    assert trim_reply(html_to_text(NOTES)) == "Ordered."


def test_an_html_only_mail_reads_through_parse() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           b'<div>Mine</div><blockquote type="cite">theirs</blockquote>')
    assert parse(raw).body == "Mine\n> theirs"
