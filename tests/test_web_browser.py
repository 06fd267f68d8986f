"""The web view in a REAL headless Chromium against a REAL `hanna-sync serve` over an archive a real pass filled
from the sandbox Dovecot: staff's flows (log in, card, letter, search, downloads, log out, a revoked token, the
rate limit) and hostile letters, shown without one script running or one request leaving 127.0.0.1.

The harness proves itself first, on pages of its own: the recording proxy does see a page's remote requests,
the beacon and the checks do catch a script that runs, downloads land where a test reads them.
"""

from __future__ import annotations

import html
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import xss
from tests.browser import Browser, PageServer, RecordingProxy, only_local, require_chromium
from tests.helpers import Env, deliver_sample
from tests.web_server import Server, cli_run, new_token

SAMPLE_PDF = b"%PDF-1.4 sample"  # the sample's one attachment, sąskaita.pdf


def by(kind: str) -> str:
    from selenium.webdriver.common.by import By
    return {"id": By.ID, "css": By.CSS_SELECTOR, "tag": By.TAG_NAME}[kind]


def wait_until(browser: Browser, condition, what: str, timeout: float = 10) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: condition(), message=what)


@pytest.fixture(scope="module")
def proxy() -> Iterator[RecordingProxy]:
    p = RecordingProxy()
    yield p
    p.close()


@pytest.fixture(scope="module")
def beacon() -> Iterator[PageServer]:
    b = PageServer()
    yield b
    b.close()


@pytest.fixture
def browser(tmp_path: Path, proxy: RecordingProxy) -> Iterator[Browser]:
    require_chromium()
    b = Browser(tmp_path, proxy)
    yield b
    b.quit()


# ---- the harness, proved on pages of its own ---------------------------------------------------------------

def _page(text: str) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "text/html; charset=utf-8"}, text.encode()


def test_remote_requests_reach_the_recording_proxy_and_loopback_goes_direct(browser, proxy, tmp_path):
    """Without this, "the proxy saw nothing" could mean "the proxy was never asked"."""
    site = PageServer({"/": _page('<title>own</title><img src="http://pixel.tracker.invalid/a.gif">'
                                  '<img src="http://203.0.113.7/b.gif"><iframe sandbox src="/frame"></iframe>'),
                       "/frame": _page('<img src="http://inframe.tracker.invalid/c.gif">')})
    try:
        proxy.recorder.clear()
        browser.get(site.base + "/")
        wait_until(browser, lambda: len(_remote(proxy.seen())) == 3, "the three remote images at the proxy")
        assert sorted(_remote(proxy.seen())) == ["GET http://203.0.113.7/b.gif HTTP/1.1",
                                                 "GET http://inframe.tracker.invalid/c.gif HTTP/1.1",
                                                 "GET http://pixel.tracker.invalid/a.gif HTTP/1.1"]
        assert not [line for line in proxy.seen() if "127.0.0.1" in line]  # loopback went direct
        assert site.seen()[:2] == ["GET /", "GET /frame"]
        # The DevTools log has the sandboxed frame's requests too (it shares the page's process).
        assert sorted(only_local(browser.requested(), site.base)) == [
            "http://203.0.113.7/b.gif", "http://inframe.tracker.invalid/c.gif", "http://pixel.tracker.invalid/a.gif"]
        # And with loopback sent to the proxy (`<-loopback>`), the proxy sees it: the bypass is Chromium's, not luck.
        other = Browser(tmp_path / "loopback", proxy, proxy_loopback=True)
        try:
            proxy.recorder.clear()
            other.get(site.base + "/frame")
            assert f"GET {site.base}/frame HTTP/1.1" in proxy.seen()
        finally:
            other.quit()
    finally:
        site.close()


def test_the_checks_catch_a_script_that_runs(browser, beacon, proxy):
    """A page whose script runs trips all three marks; the same page in a sandboxed frame trips none."""
    js = xss.script(beacon.base, "harness")
    site = PageServer({"/open": _page(f"<title>own</title><script>{js}</script>"),
                       "/framed": _page('<title>own</title><iframe id="body" sandbox src="/inner"></iframe>'),
                       "/inner": _page(f"<title>inner</title><script>{js}</script><p>tekstas</p>")})
    try:
        beacon.recorder.clear()
        browser.get(site.base + "/open")
        wait_until(browser, lambda: beacon.seen(), "the beacon called")
        assert browser.driver.execute_script("return window.__pwned") == 1
        assert browser.driver.title == "pwned"
        with pytest.raises(AssertionError):
            assert_inert(browser, beacon, proxy, base=site.base, title="own")

        beacon.recorder.clear()
        browser.forget()
        browser.get(site.base + "/framed")
        assert_inert(browser, beacon, proxy, base=site.base, title="own")
        assert frame_text(browser) == "tekstas"
    finally:
        site.close()


def test_downloads_land_in_the_browsers_folder(browser):
    site = PageServer({"/": _page('<a id="get" href="/file">get</a>'),
                       "/file": (200, {"Content-Type": "application/octet-stream",
                                       "Content-Disposition": "attachment; filename*=UTF-8''s%C4%85skaita.pdf"},
                                 SAMPLE_PDF)})
    try:
        browser.get(site.base + "/")
        browser.driver.find_element(by("id"), "get").click()
        assert browser.downloaded("sąskaita.pdf").read_bytes() == SAMPLE_PDF
        assert browser.driver.current_url == site.base + "/"  # a download, the page stayed
    finally:
        site.close()


def test_the_login_cookie_as_the_contract_sets_it_is_kept_on_plain_http_loopback(browser):
    """Secure + SameSite=Lax + HttpOnly over http://127.0.0.1 (a secure context): Chromium keeps it and
    sends it after the 303, as `hanna-sync serve` without a proxy needs."""
    site = PageServer({"/login": (303, {"Location": "/", "Set-Cookie":
                                        "hanna_sync_token=abc; HttpOnly; SameSite=Lax; Path=/; Secure"}, b""),
                       "/": _page("<title>home</title>")})
    try:
        browser.get(site.base + "/login")
        assert browser.driver.title == "home"
        cookie = browser.driver.get_cookie("hanna_sync_token")
        assert cookie and (cookie["value"], cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (
            "abc", True, True, "Lax")
    finally:
        site.close()


def test_without_chromium_the_browser_tests_skip_but_fail_in_ci(monkeypatch):
    from tests import browser as harness
    monkeypatch.setattr(harness, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"/nonexistent/chromium not found \(apt-get install chromium"):
        harness.require_chromium()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="/nonexistent/chromium not found"):
        harness.require_chromium()


# ---- the archive, the server, the checks -----------------------------------------------------------------

@dataclass
class Site:
    """The module's archive: the sample mailbox plus the hostile letters, one pass, a staff token."""

    env: Env
    token: str
    xss: dict[str, int]  # hostile letter's name -> letter id

    def server(self, folder: Path) -> Server:
        """A server process of its own (the failed-authentication limit is per process), logging to `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        return Server(SimpleNamespace(tmp=folder, config_file=self.env.config_file))


@pytest.fixture(scope="module")
def site(dovecot, beacon, tmp_path_factory) -> Site:
    if not dovecot.running:
        dovecot.start()
    user = dovecot.add_user(f"browser-{secrets.token_hex(4)}@example.test", secrets.token_urlsafe(12))
    env = Env(tmp_path_factory.mktemp("site"))
    deliver_sample(user)
    names = xss.deliver(user, beacon.base)
    env.add(user)
    assert env.run().ok
    ids = {row["subject"]: row["id"] for row in env.store.letters(customer=xss.CUSTOMER)}
    by_name = {name: next(i for s, i in ids.items() if s.startswith(f"{xss.SUBJECT_PREFIX}{name}")) for name in names}
    return Site(env=env, token=new_token(env, "staff"), xss=by_name)


@pytest.fixture
def server(site, tmp_path) -> Iterator[Server]:
    s = site.server(tmp_path / "serve")
    yield s
    s.stop()


def _remote(lines: list[str]) -> list[str]:
    """The recorded requests for the hostile letters' hosts (not Chromium's own chatter)."""
    return [line for line in lines if any(host in line for host in xss.REMOTE_HOSTS)]


def frame_text(browser: Browser) -> str:
    """The body frame's text, read from inside it (WebDriver can, the page's own scripts could not)."""
    driver = browser.driver
    driver.switch_to.frame(driver.find_element(by("id"), "body"))
    try:
        return driver.execute_script("return document.body ? document.body.innerText.trim() : ''")
    finally:
        driver.switch_to.default_content()


def assert_inert(browser: Browser, beacon: PageServer, proxy: RecordingProxy, *, base: str, title: str) -> None:
    """No script ran and nothing left 127.0.0.1 on the page shown: no __pwned (page or body frame), the
    beacon silent, the page's own title, no request for the hostile hosts, only `base` and data:/about: asked for."""
    time.sleep(0.5)  # a meta refresh of 0 s, late images and frames
    driver = browser.driver
    assert driver.execute_script("return window.__pwned") is None
    assert " ".join(driver.title.split()) == " ".join(title.split())
    frames = driver.find_elements(by("id"), "body")
    if frames:
        driver.switch_to.frame(frames[0])
        try:
            assert driver.execute_script("return [window.__pwned, document.title]")[0] is None
            assert "pwned" not in driver.execute_script("return document.title")
        finally:
            driver.switch_to.default_content()
    assert beacon.seen() == []
    assert _remote(proxy.seen()) == []
    assert only_local(browser.requested(), base) == []


def served_title(server: Server, path: str, token: str) -> str:
    """The <title> the server sent for `path`, as a browser shows it."""
    _, _, body = server.get(path, token)
    found = re.search(r"<title>(.*?)</title>", body.decode(), re.S)
    return html.unescape(found[1]) if found else ""


def export(site: Site, letter_id: int, tmp: Path) -> bytes:
    out = tmp / f"export-{letter_id}.eml"
    assert cli_run(site.env, "export", str(letter_id), "-o", str(out)).exit_code == 0
    return out.read_bytes()


def with_bearer(browser: Browser, token: str) -> None:
    """Every request of this browser carries the token in the Authorization header (the API's way)."""
    browser.driver.execute_cdp_cmd("Network.enable", {})
    browser.driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {token}"}})


# ---- what already exists: the JSON API and the raw download in the browser -----------------------------------

def test_the_hostile_letters_are_archived_and_linked_to_the_customer(site, server):
    listed = server.json(f"/api/customers/{xss.CUSTOMER}/letters", site.token)
    hostile = {row["id"]: row for row in listed if row["subject"].startswith(xss.SUBJECT_PREFIX)}
    assert sorted(hostile) == sorted(site.xss.values())
    assert all([(link["entity_type"], link["entity_id"], link["address"]) for link in row["links"]] == [
        ("customer", xss.CUSTOMER, "sviesa@inbox.lt")] for row in hostile.values())
    for name in ("html_attachment", "svg_attachment"):
        shown = server.json(f"/api/letters/{site.xss[name]}", site.token)
        assert [a["content_type"] for a in shown["attachments"]] == [
            {"html_attachment": "text/html", "svg_attachment": "image/svg+xml"}[name]]


def test_the_browser_downloads_the_original_over_the_api(site, server, browser, beacon, proxy, tmp_path):
    with_bearer(browser, site.token)
    letter_id = site.xss["script"]
    browser.get(f"{server.base}/api/letters/{letter_id}/raw")
    assert browser.downloaded().read_bytes() == export(site, letter_id, tmp_path)
    beacon.recorder.clear()
    browser.get(f"{server.base}/api/letters/{letter_id}")  # the JSON, shown as text: the script in it is text
    assert f'"id": {letter_id}' in browser.driver.find_element(by("tag"), "body").text
    assert_inert(browser, beacon, proxy, base=server.base, title="")


# ---- the pages (these wait for the pages of issue #17) -------------------------------------------------------

def log_in(browser: Browser, server: Server, token: str, path: str = "/") -> None:
    """Through the form: the page asked for answers 401 with the login form, the token is typed, `path` follows."""
    browser.get(server.base + path)
    assert browser.status_of(server.base + path) == 401
    browser.driver.find_element(by("id"), "token").send_keys(token)
    browser.driver.find_element(by("id"), "login").click()
    # The login form was served at `path` itself: wait for the page that replaces it, not just the address.
    wait_until(browser, lambda: browser.driver.current_url == server.base + path
               and not browser.driver.find_elements(by("id"), "token"), f"back at {path} after logging in")


def click(browser: Browser, selector: str) -> None:
    before = browser.driver.current_url
    browser.driver.find_element(by("css"), selector).click()
    wait_until(browser, lambda: browser.driver.current_url != before, f"a new page after clicking {selector}")


def test_staff_read_the_archive_in_the_browser(site, server, browser, beacon, proxy, tmp_path):
    driver, base, t = browser.driver, server.base, site.token
    beacon.recorder.clear()
    proxy.recorder.clear()
    log_in(browser, server, t)
    cookie = driver.get_cookie("hanna_sync_token")
    assert cookie and (cookie["value"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (t, True, "Lax", "/")
    assert driver.find_element(by("css"), 'form[action="/search"] #q')
    assert driver.find_element(by("css"), 'a[href="/leads/L-2001"]')

    # The card: the customer's letters newest first, as the API lists them, each with its rule.
    click(browser, 'a[href="/customers/C-1001"]')
    assert driver.find_element(by("tag"), "h1").text == "UAB Ąžuolas"
    assert "ruta@azuolas.lt" in driver.find_element(by("id"), "contacts").text
    expected = server.json("/api/customers/C-1001/letters", t)
    rows = driver.find_elements(by("css"), "#letters tr.letter")
    assert [r.find_element(by("css"), "a").get_attribute("href") for r in rows] == [
        f"{base}/letters/{letter['id']}" for letter in expected]
    assert [r.find_element(by("css"), "a").text for r in rows] == [letter["subject"] for letter in expected]
    assert all(r.find_element(by("css"), "td.rule").text.strip() for r in rows)
    browser.screenshot("card-C-1001")

    # A letter: headers, the body in its sandboxed frame, the attachment, the original, where it was seen.
    invoice = next(letter for letter in expected if letter["subject"] == "Sąskaita faktūra 2025-03")
    click(browser, f'#letters a[href="/letters/{invoice["id"]}"]')
    assert driver.find_element(by("tag"), "h1").text == "Sąskaita faktūra 2025-03"
    headers = driver.find_element(by("id"), "headers").text
    assert "info@azuolas.lt" in headers and "jonas@imone.lt" in headers and "2025" in headers
    sandbox = driver.find_element(by("id"), "body").get_attribute("sandbox")
    assert sandbox is not None and not {"allow-scripts", "allow-same-origin"} & set(sandbox.split())
    assert frame_text(browser) == "Sąskaita prisegta."
    assert "INBOX" in driver.find_element(by("id"), "locations").text
    assert "C-1001" in driver.find_element(by("id"), "links").text
    browser.screenshot("letter-invoice")
    letter_url = driver.current_url

    driver.find_element(by("id"), "original").click()
    original = browser.downloaded()
    assert original.read_bytes() == export(site, invoice["id"], tmp_path)
    original.unlink()
    attachment = driver.find_element(by("css"), "#attachments a.attachment")
    assert attachment.get_attribute("href") == f"{base}/api/letters/{invoice['id']}/attachments/1"
    attachment.click()
    assert browser.downloaded("sąskaita.pdf").read_bytes() == SAMPLE_PDF
    assert driver.current_url == letter_url  # Content-Disposition made it a download, not a page

    # The thread of the order: the letter and the reply.
    order = next(letter for letter in expected if letter["subject"] == "Užsakymas Nr. 17: ąžuolinės lentos")
    browser.get(f"{base}/letters/{order['id']}")
    thread = [a.get_attribute("href") for a in driver.find_elements(by("css"), "#thread a")]
    assert thread and all(href.startswith(f"{base}/letters/") for href in thread)
    assert {int(h.rsplit("/", 1)[1]) for h in thread} | {order["id"]} == {
        row["id"] for row in server.json(f"/api/threads/{order['id']}", t)}

    # Search, through the home page's form: the same hits as the API's.
    browser.get(base + "/")
    driver.find_element(by("id"), "q").send_keys("sąskaita\n")
    wait_until(browser, lambda: "/search?" in driver.current_url, "the search results")
    hits = [a.get_attribute("href") for a in driver.find_elements(by("css"), "#results li a")]
    assert hits == [f"{base}/letters/{hit['id']}" for hit in server.json("/api/search?q=s%C4%85skaita", t)] and hits

    assert_inert(browser, beacon, proxy, base=base, title=served_title(server, "/search?q=s%C4%85skaita", t))

    # Log out: the cookie is gone and a page asks for the token again.
    click(browser, 'form[action="/logout"] [type="submit"]')
    assert driver.current_url == f"{base}/login"
    assert driver.get_cookie("hanna_sync_token") is None
    browser.get(base + "/customers/C-1001")
    assert browser.status_of(base + "/customers/C-1001") == 401 and driver.find_element(by("id"), "token")


def test_a_revoked_token_is_sent_back_to_the_login_form(site, server, browser):
    name = f"revoked-{secrets.token_hex(3)}"
    log_in(browser, server, new_token(site.env, name), "/customers/C-1001")
    assert browser.driver.find_element(by("tag"), "h1").text == "UAB Ąžuolas"
    assert cli_run(site.env, "token", "revoke", name).exit_code == 0
    browser.forget()
    browser.driver.refresh()
    assert browser.status_of(server.base + "/customers/C-1001") == 401
    assert browser.driver.find_element(by("id"), "token") and "UAB Ąžuolas" not in browser.driver.page_source


def test_ten_wrong_tokens_then_429(site, server, browser):
    browser.get(server.base + "/login")
    for n in range(10):
        browser.driver.find_element(by("id"), "token").send_keys(f"wrong-{n}")
        browser.driver.find_element(by("id"), "login").click()
        wait_until(browser, lambda: browser.status_of(server.base + "/login") == 401, "401 for a wrong token")
        assert browser.driver.find_element(by("css"), "p.error").text
        browser.forget()
    browser.driver.find_element(by("id"), "token").send_keys(site.token)  # even the right one waits now
    browser.driver.find_element(by("id"), "login").click()
    wait_until(browser, lambda: browser.status_of(server.base + "/login") is not None, "an answer")
    assert browser.status_of(server.base + "/login") == 429
    assert browser.driver.get_cookie("hanna_sync_token") is None


HTML_LETTERS = [name for name, _ in xss.letters("http://127.0.0.1:1") if not name.endswith("_attachment")]


def test_hostile_letters_run_no_script_and_fetch_nothing(site, server, browser, beacon, proxy):
    log_in(browser, server, site.token, f"/customers/{xss.CUSTOMER}")
    driver, base = browser.driver, server.base
    assert driver.find_element(by("tag"), "h1").text == "Šviesa, MB"
    # What the senders wrote shows as text (escaped), not as markup the CSP then has to stop.
    subjects = {row["id"]: row["subject"] for row in server.json(f"/api/customers/{xss.CUSTOMER}/letters", site.token)}
    assert [a.text for a in driver.find_elements(by("css"), "#letters tr.letter a")] == list(subjects.values())
    assert_inert(browser, beacon, proxy, base=base, title=served_title(server, f"/customers/{xss.CUSTOMER}", site.token))
    failures = {}  # every letter is tried, and each one that got through is named
    for name in HTML_LETTERS:
        beacon.recorder.clear()
        proxy.recorder.clear()
        browser.forget()
        path = f"/letters/{site.xss[name]}"
        try:
            browser.get(base + path)
            assert driver.find_element(by("tag"), "h1").text == subjects[site.xss[name]]
            if name == "headers":
                assert "<img src=x onerror=" in driver.find_element(by("id"), "headers").text  # the From name, as text
            if name in ("javascript_link", "form_action"):  # clicked, in the frame: still nothing
                driver.switch_to.frame(driver.find_element(by("id"), "body"))
                for element in driver.find_elements(by("css"), "a, button"):
                    element.click()
                driver.switch_to.default_content()
            if name == "script":
                browser.screenshot("letter-xss-script")
            assert_inert(browser, beacon, proxy, base=base, title=served_title(server, path, site.token))
            browser.get(f"{base}{path}/body")  # the body alone, as a page of its own
            assert_inert(browser, beacon, proxy, base=base, title=served_title(server, f"{path}/body", site.token))
        except AssertionError as exc:
            failures[name] = str(exc).splitlines()[0]
            driver.switch_to.default_content()
    assert not failures, "\n".join(f"{name}: {why}" for name, why in failures.items())

def test_html_and_svg_attachments_are_downloaded_not_rendered(site, server, browser, beacon, proxy):
    log_in(browser, server, site.token)
    driver, base = browser.driver, server.base
    for name, filename in (("html_attachment", "sąskaita.html"), ("svg_attachment", "logotipas.svg")):
        beacon.recorder.clear()
        for path in browser.downloads.iterdir():
            path.unlink()
        letter_path = f"/letters/{site.xss[name]}"
        browser.get(base + letter_path)
        link = driver.find_element(by("css"), "#attachments a.attachment")
        assert link.get_attribute("href") == f"{base}/api/letters/{site.xss[name]}/attachments/1"
        link.click()
        assert browser.downloaded(filename).read_bytes().startswith(b"<")
        assert driver.current_url == base + letter_path
        browser.get(f"{base}/api/letters/{site.xss[name]}/attachments/1")  # typed into the address bar: the same
        time.sleep(0.5)
        assert driver.current_url == base + letter_path
        assert_inert(browser, beacon, proxy, base=base, title=served_title(server, letter_path, site.token))
