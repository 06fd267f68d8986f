"""A real headless Chromium for the web tests, and the recorders that prove what it did not do.

Chromium (Debian's /usr/bin/chromium, driven by /usr/bin/chromedriver; Selenium Manager never runs, so
nothing is downloaded) starts with a throw-away profile, background traffic off, every non-loopback request
sent to a RECORDING proxy on 127.0.0.1 (which answers 502 and forwards nothing) and every host name but
127.0.0.1 resolving to nothing. A BEACON, a recording HTTP server on 127.0.0.1, is what the hostile letters'
scripts call: a request there means a script ran. The DevTools performance log lists every URL a page asked for.
"""

from __future__ import annotations

import base64
import json
import os
import socketserver
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parent.parent / ".screenshots"
# Chromium's own chatter, off: none of it may reach the recording proxy and blur what a page asked for.
QUIET_FLAGS = [
    "--disable-background-networking", "--disable-component-update", "--no-first-run",
    "--no-default-browser-check", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--metrics-recording-only",
    "--safebrowsing-disable-auto-update", "--disable-breakpad", "--no-pings", "--password-store=basic",
    "--no-service-autorun", "--disable-component-extensions-with-background-pages", "--disable-search-engine-choice-screen",
    "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,"
    "InterestFeedContentSuggestions,NetworkTimeServiceQuerying,IsolateSandboxedIframes",
    # A sandboxed frame (the letter's body) then shares the page's process, so its requests are in the
    # page's DevTools log too; the sandbox itself (no scripts, opaque origin) is unchanged.
    "--disable-site-isolation-trials",
]


@dataclass
class Recorder:
    """What a recording server was asked, thread-safe; `seen()` returns a copy."""

    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def seen(self) -> list[str]:
        with self.lock:
            return list(self.lines)

    def clear(self) -> None:
        with self.lock:
            self.lines.clear()


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 that records each request's line (`GET http://host/...`, `CONNECT host:443`)
    and answers 502: a page's remote request shows up here and goes nowhere."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        recorder = self.recorder

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(65536).decode("latin-1").strip()
                if line:
                    recorder.add(line)
                while self.rfile.readline(65536).strip():  # the headers: read, not kept
                    pass
                self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def seen(self) -> list[str]:
        return self.recorder.seen()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PageServer:
    """A small HTTP server on 127.0.0.1 that records every request's path and answers from `pages`
    (path -> (status, headers, body)), 204 for anything else: the beacon, and the harness tests' own pages."""

    def __init__(self, pages: dict[str, tuple[int, dict[str, str], bytes]] | None = None) -> None:
        self.recorder = Recorder()
        self.pages = pages or {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                outer.recorder.add(f"{self.command} {self.path}")
                status, headers, body = outer.pages.get(self.path, (204, {}, b""))
                self.send_response(status)
                for name, value in {"Access-Control-Allow-Origin": "*", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_OPTIONS = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def seen(self) -> list[str]:
        return self.recorder.seen()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def chromium_missing() -> str | None:
    """Why no browser test can run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.path.exists(path):
            return f"{path} not found (apt-get install {package}, or: bash scripts/setup.sh test)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def require_chromium() -> None:
    """Skip where Chromium is not installed; CI installs it, so there a missing browser fails."""
    reason = chromium_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


class Browser:
    """A headless Chromium behind the recording proxy, with a download folder of its own."""

    def __init__(self, tmp: Path, proxy: RecordingProxy, *, proxy_loopback: bool = False) -> None:
        os.environ["SE_OFFLINE"] = "true"  # belt and braces: the driver's path is given, so Selenium Manager is skipped
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.downloads = tmp / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900",
                     f"--user-data-dir={tmp / 'profile'}", f"--proxy-server=http://127.0.0.1:{proxy.port}",
                     # Loopback goes direct (Chromium's implicit bypass), everything else to the proxy;
                     # `<-loopback>` sends loopback to the proxy too (the harness test that shows the difference).
                     *(["--proxy-bypass-list=<-loopback>"] if proxy_loopback else []),
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", *QUIET_FLAGS]:
            options.add_argument(flag)
        options.add_experimental_option("prefs", {
            "download.default_directory": str(self.downloads), "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
            "net.network_prediction_options": 2, "search.suggest_enabled": False})
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER,
                                                                        log_output=str(tmp / "chromedriver.log")))
        self.driver.set_page_load_timeout(20)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
            "behavior": "allow", "downloadPath": str(self.downloads), "eventsEnabled": True})
        self.events: list[dict[str, Any]] = []
        self.get("about:blank")  # past the start tab, whose chrome:// loads are not a page of ours
        self.forget()

    def forget(self) -> None:
        """Start the network log afresh: `requested()` then lists what the next pages asked for."""
        self.network()
        self.events.clear()

    def get(self, url: str) -> None:
        self.driver.get(url)

    def network(self) -> list[dict[str, Any]]:
        """The DevTools Network events since the last `forget()` (the driver hands each event out once)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"].startswith("Network."):
                self.events.append(message)
        return self.events

    def requested(self) -> list[str]:
        """Every URL a page of this browser asked for, in order."""
        return [e["params"]["request"]["url"] for e in self.network() if e["method"] == "Network.requestWillBeSent"]

    def status_of(self, url: str) -> int | None:
        """The HTTP status of the last response for `url` since `forget()`, None before it came (a page's own
        status is not in the DOM)."""
        statuses = [e["params"]["response"]["status"] for e in self.network()
                    if e["method"] == "Network.responseReceived" and e["params"]["response"]["url"] == url]
        return statuses[-1] if statuses else None

    def downloaded(self, name: str | None = None, timeout: float = 10) -> Path:
        """The finished download (the one named `name`, or the only one), waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            files = [p for p in self.downloads.iterdir() if not p.name.endswith(".crdownload")]
            partial = [p for p in self.downloads.iterdir() if p.name.endswith(".crdownload")]
            found = [p for p in files if name is None or p.name == name]
            if found and not partial:
                assert len(found) == 1, f"more than one download: {files}"
                return found[0]
            assert time.monotonic() < deadline, f"no download {name or ''} in {self.downloads}: {files + partial}"
            time.sleep(0.1)

    def screenshot(self, name: str) -> Path:
        """The whole page (not only the window) as .screenshots/NAME.png, for a developer to look at."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        print(f"screenshot: {path}")
        return path

    def quit(self) -> None:
        self.driver.quit()


def only_local(urls: list[str], base: str) -> list[str]:
    """The URLs that are neither `base`'s (http://127.0.0.1:PORT) nor data:/about: — what must stay empty."""
    return [u for u in urls if not (u.startswith(base + "/") or u == base or u.startswith(("data:", "about:")))]

