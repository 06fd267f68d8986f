"""How one protocol's stages run: each timed and recorded in the report; the first failure stops the protocol."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from hanna_sync.diagnose.report import FAMILIES, LABELS, Options, Report, Stage
from hanna_sync.errors import ExitCode
from hanna_sync.models import Mailbox
from hanna_sync.remote import imap
from hanna_sync.remote.providers import IMAP_PORTS, SMTP_PORTS


class StageFailed(Exception):
    """A stage's failure: its cause, the fix, and the exit code family when not the stage's own."""

    def __init__(self, detail: str, hint: str | None = None, exit_code: ExitCode | None = None) -> None:
        super().__init__(detail)
        self.detail, self.hint, self.exit_code = detail, hint, exit_code


@dataclass(frozen=True)
class Passed:
    """A stage's success, with what the next stages need."""

    detail: str
    value: Any = None  # what the next stages need (a socket, a session, the folder names)
    hint: str | None = None
    failed: bool = False  # --insecure only: the stage failed and the run goes on anyway


@dataclass(frozen=True)
class Server:
    """The server one protocol is tested against, and how to name it and its options in a hint."""

    protocol: str
    host: str
    port: int
    security: str  # ssl, starttls or none
    ca_file: str | None
    timeout: float

    @property
    def label(self) -> str:
        return LABELS[self.protocol]

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def option(self) -> str:
        return f"--{self.protocol}"

    def usual_port(self, security: str) -> int:
        return (IMAP_PORTS if self.protocol == "imap" else SMTP_PORTS)[security]

    @property
    def usual_ports(self) -> str:
        if self.protocol == "imap":
            return "IMAP uses 993 with ssl, 143 with starttls"
        return "SMTP uses 465 with ssl, 587 with starttls; 25 is for mail between servers"


class Run:
    """One protocol's stages against one server, in order, each timed and recorded in the report."""

    protocol = ""

    def __init__(self, mailbox: Mailbox, password: str, options: Options, report: Report) -> None:
        self.mailbox, self.password, self.options, self.report = mailbox, password, options, report
        host = getattr(mailbox, f"{self.protocol}_host")
        security = getattr(mailbox, f"{self.protocol}_security") or "ssl"
        usual = (IMAP_PORTS if self.protocol == "imap" else SMTP_PORTS)[security]
        port = int(getattr(mailbox, f"{self.protocol}_port") or usual)
        self.server = Server(self.protocol, host, port, security, mailbox.ca_file, options.timeout) if host else None
        self.addresses: list[tuple[int, Any]] = []
        self.address: tuple[int, Any] | None = None  # the (family, sockaddr) that answered
        self.resources = ExitStack()  # every socket and session opened, closed when the run ends

    def run(self) -> None:
        if self.server is None:
            self.skip("host", f"not configured: the mailbox has no {LABELS[self.protocol]} server"
                      + (" (--no-smtp: it is only read); --smtp-host adds one" if self.protocol == "smtp" else ""))
            return
        try:
            with self.resources:
                self.stages()
        except StageFailed:
            pass  # recorded; the protocol stops here

    def stages(self) -> None:
        raise NotImplementedError

    # -- recording ----------------------------------------------------------------------------

    def stage(self, name: str, step: Callable[[], Passed]) -> Any:
        started = time.perf_counter()
        try:
            result = step()
        except StageFailed as failure:
            self._record(name, started, ok=False, detail=failure.detail, hint=failure.hint, exit_code=failure.exit_code)
            raise
        except (OSError, IMAPClientError, smtplib.SMTPException) as exc:  # the connection broke mid-stage
            detail, hint = self._broken(exc)
            self._record(name, started, ok=False, detail=detail, hint=hint)
            raise StageFailed(detail) from None
        self._record(name, started, ok=not result.failed, detail=result.detail, hint=result.hint)
        return result.value

    def skip(self, name: str, detail: str) -> None:
        self._add(Stage(self.protocol, name, True, 0.0, detail, skipped=True))

    def _record(self, name: str, started: float, *, ok: bool, detail: str, hint: str | None,
                exit_code: ExitCode | None = None) -> None:
        family = ExitCode.OK if ok else (exit_code or FAMILIES[name])
        self._add(Stage(self.protocol, name, ok, time.perf_counter() - started, detail, hint, exit_code=family))

    def _add(self, stage: Stage) -> None:
        self.report.stages.append(stage)
        if self.options.on_stage:
            self.options.on_stage(stage)

    def said(self, reply: str | bytes) -> str:
        """A server's words for a detail: decoded, on one line, and without the password, were it echoed."""
        text = " ".join((reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply).split())
        return text.replace(self.password, "***") if self.password else text

    def trace(self, direction: str, text: str) -> None:
        """The transports mask what they send; this last guard also covers what comes back."""
        if self.options.trace:
            masked = text.replace(self.password, "***") if self.password else text
            self.options.trace(f"{LABELS[self.protocol]} {direction}: {masked}")

    def _broken(self, exc: BaseException) -> tuple[str, str]:
        assert self.server is not None
        if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):  # smtplib wraps timeouts
            return (f"{self.server.where} stopped answering: nothing within {self.server.timeout:g} s",
                    "an overloaded server or network, or a firewall cutting the connection; try again, with a"
                    " longer --timeout")
        reason = self.said(imap.server_text(exc) if isinstance(exc, IMAPClientError)
                           else getattr(exc, "strerror", None) or str(exc))
        return (f"the connection to {self.server.where} broke ({reason})",
                "the server closed it; its log says why (too many connections or a blocked address are common)")


def close_quietly(thing: Any) -> None:
    """Release a socket, IMAP or SMTP session however far it got (it may be gone already)."""
    with suppress(Exception):
        thing.shutdown() if isinstance(thing, IMAPClient) else thing.close()


