"""What `hanna-sync test` reports: a stage per line, the exit code its first failure decides, the JSON shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hanna_sync.errors import AuthError, ConnectError, ExitCode, HannaError, InputError
from hanna_sync.models import Mailbox

# The exit code of a failed stage, unless the failure names another family (e.g. a greeting that never
# comes because the port waits for a TLS handshake is a TLS setting, 12).
FAMILIES: dict[str, ExitCode] = {
    "charset": ExitCode.CHARSET,
    "token": ExitCode.AUTH,  # Office 365: no token for the mailbox (sign-in gone, consent missing, app disabled)
    "claims": ExitCode.AUTH,  # Office 365: a token for the wrong audience, user or without the permission
    "dns": ExitCode.CONNECT,
    "tcp": ExitCode.CONNECT,
    "tls": ExitCode.TLS,
    "greeting": ExitCode.SERVER,
    "capabilities": ExitCode.SERVER,
    "ehlo": ExitCode.SERVER,
    "auth": ExitCode.AUTH,
    "folders": ExitCode.FOLDER,
    "labels": ExitCode.FOLDER,  # google-scan: the Gmail API's labels are its folders
    "folder": ExitCode.FOLDER,
    "send": ExitCode.SEND,
}

LABELS = {"graph": "Graph", "gmail": "Gmail API", "imap": "IMAP", "smtp": "SMTP"}


@dataclass
class Stage:
    """One line of the report: what was tried, how long it took, what came of it and, on failure, the fix.

    A passed stage may carry a hint too: advice rather than a failure (no TLS, no Sent folder found).
    """

    protocol: str  # imap or smtp
    stage: str  # charset, dns, tcp, tls, greeting, capabilities, ehlo, auth, folders, folder, send, host
    ok: bool
    seconds: float
    detail: str
    hint: str | None = None
    skipped: bool = False
    exit_code: int = ExitCode.OK  # the failure's family (see FAMILIES); 0 when it passed

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol, "stage": self.stage, "ok": self.ok, "skipped": self.skipped,
            "seconds": round(self.seconds, 3), "detail": self.detail, "hint": self.hint,
        }

    def error(self) -> HannaError:
        """This failure as the one-line error add-mailbox shows: the cause, then the fix."""
        message = f"{self.detail}; {self.hint}" if self.hint else self.detail
        if self.stage == "charset":
            return InputError(message)
        if self.exit_code == ExitCode.AUTH:
            return AuthError(message)
        return ConnectError(message)


@dataclass
class Report:
    mailbox: Mailbox
    stages: list[Stage] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # the IMAP folders examined, defaults filled in

    @property
    def failure(self) -> Stage | None:
        """The first failed stage: it decides the exit code."""
        return next((s for s in self.stages if not s.ok), None)

    @property
    def exit_code(self) -> int:
        failure = self.failure
        return failure.exit_code if failure else ExitCode.OK

    def summary(self) -> str:
        parts = []
        for protocol, label in LABELS.items():
            stages = [s for s in self.stages if s.protocol == protocol]
            failed = [s.stage for s in stages if not s.ok]
            if failed:
                parts.append(f"{label} failed at {failed[0]}")
            elif [s.stage for s in stages] == ["host"]:
                parts.append(f"{label} not configured")
            elif stages and all(s.skipped for s in stages):
                parts.append(f"{label} not tested")
            elif stages:
                parts.append(f"{label} passed")
        code = self.exit_code
        return "; ".join(parts) + (f" (exit code {code})." if code else ".")

    def as_dict(self) -> dict[str, Any]:
        m = self.mailbox

        def server(protocol: str) -> str | None:
            host = getattr(m, f"{protocol}_host")
            if not host:
                return None
            return f"{host}:{getattr(m, f'{protocol}_port')} {getattr(m, f'{protocol}_security')}"

        return {
            "ok": self.exit_code == ExitCode.OK,
            "exit_code": int(self.exit_code),
            "mailbox": {"id": m.id, "email": m.email, "kind": m.kind, "login": m.login_name, "imap": server("imap"),
                        "smtp": server("smtp")},
            "stages": [s.as_dict() for s in self.stages],
        }


@dataclass(frozen=True)
class Options:
    timeout: float = 30.0  # seconds before a silent server is given up on, per step
    insecure: bool = False  # go on past an untrusted certificate (the TLS stage still fails)
    send_to: str | None = None  # send a real test message there
    trace: Callable[[str], None] | None = None  # gets "IMAP C: ..." lines, secrets masked
    on_stage: Callable[[Stage], None] | None = None  # gets each stage as it completes
