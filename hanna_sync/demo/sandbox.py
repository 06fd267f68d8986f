"""A throwaway, real Dovecot IMAP server on 127.0.0.1 for the tests, the demo and the benchmark.

Why a real server and not a mock: the hard parts of archiving IMAP mail (UIDVALIDITY changes,
modified UTF-7 folder names, STARTTLS, servers going away mid-pass) are what mocks get wrong.

Everything Dovecot needs (config, CA and certificates, passwd-files, mail, sockets, state, log)
lives in one ``tempfile.mkdtemp()`` directory under /tmp, never under the repository: a CI checkout
may sit under /root (mode 0700), which Dovecot's unprivileged processes could not traverse. Mail is
written straight into Maildir++ folders (no process per letter), so the benchmark can deliver tens
of thousands of letters quickly.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import grp
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from imapclient import imap_utf7

from hanna_sync.mail.addresses import is_ip_address

DOVECOT_BIN = "/usr/sbin/dovecot"
DOVEADM_BIN = "/usr/bin/doveadm"
MAILDIR_FLAGS = frozenset("DFPRST")  # Draft, Flagged, Passed, Replied, Seen, Trashed (\Deleted)


class SandboxError(RuntimeError):
    """Dovecot failed to start or doveadm failed; the message says why (log tail, stderr)."""


@dataclass(frozen=True)
class SandboxUser:
    """A mailbox account on a sandbox Dovecot: what a test needs to log in and to deliver mail."""

    login: str
    password: str
    dovecot: Dovecot = field(repr=False)


class Dovecot:
    """A Dovecot 2.3 instance listening on 127.0.0.1 only, on free ports, with its own CA.

    ``with Dovecot() as dc:`` starts it and removes every trace on exit; ``stop()``, ``start()``
    and ``restart()`` may be called mid-test and keep the same ports, so clients can reconnect.
    Users and mail may be added before ``start()`` as well as while it runs.
    """

    host = "127.0.0.1"

    def __init__(self, courier: bool = False) -> None:
        """``courier``: folders named as Courier-IMAP names them, under "INBOX." ("INBOX.Sent"), as many
        hosting servers still do (Dovecot's ``namespace inbox { separator = . prefix = INBOX. }``)."""
        self.courier = courier
        self.root = Path(tempfile.mkdtemp(prefix="hanna-dovecot-", dir="/tmp"))
        self.root.chmod(0o755)  # Dovecot's unprivileged processes must traverse it
        atexit.register(self.close)  # a crashed test run must not leave a daemon behind
        if os.getuid() == 0:
            self.uid, self.gid = pwd.getpwnam("mail").pw_uid, grp.getgrnam("mail").gr_gid
        else:  # a developer without root: Dovecot runs entirely as the current user
            self.uid, self.gid = os.getuid(), os.getgid()
        self.conf_path = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self.passwd_dir = self.root / "passwd.d"
        self.passwd_dir.mkdir()
        (self.root / "certs").mkdir()
        (self.root / "state").mkdir()
        self._mkdirs(self.root / "home")
        self.imap_port = 0
        self.imaps_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_usec = 0
        self.ca = CertificateAuthority(self.root / "certs")
        self.ca_file = self.ca.ca_file
        # Public on purpose: assign make_cert() results and restart() to serve another certificate.
        self.cert_file, self.key_file = self.make_cert(["localhost", "127.0.0.1"])

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Dovecot:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """True while the Dovecot master process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start ``dovecot -F`` and return once both ports answer with a greeting.

        Ports are chosen on the first start and kept afterwards, so clients survive a restart().
        """
        if self.running:
            raise SandboxError("dovecot is already running")
        if not self.imap_port:
            self.imap_port, self.imaps_port = _free_ports(2)
        self.conf_path.write_text(self._config())
        with open(self.log_path, "ab") as log:  # early fatal errors go to stderr, not to log_path
            self._proc = subprocess.Popen(
                [DOVECOT_BIN, "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group, so stop() can kill leftovers
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self._wait_ready(timeout)

    def stop(self, grace: float = 0.3) -> None:
        """Shut Dovecot down and make sure none of its processes is left.

        SIGTERM goes to the whole process group, and every Dovecot process exits on it within
        milliseconds. The master signalled alone would instead wait for its children and then sleep
        a fixed second (so a restarted master finds its ports free); it still does when it catches
        a child not yet reaped. After ``grace`` seconds, SIGKILL ends that wait and any leftover.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same ports (connected clients are dropped)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop Dovecot and delete the temp dir with all mail, certificates and logs."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.close)

    def log_text(self) -> str:
        """Dovecot's log (and the master's stderr), for debugging failed tests."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- users and mail ------------------------------------------------------------------------

    def add_user(self, login: str, password: str) -> SandboxUser:
        """Add an account, usable at once even while Dovecot runs.

        Each user gets a passwd-file of their own (``passwd.d/<login>``): Dovecot looks at a known
        passwd-file at most once per second, so a user appended to one shared file would be unknown
        for up to a second, while a file it has never opened is read on the first login.
        """
        if not login or any(c in login for c in ":/\n") or any(c in password for c in ":\n"):
            raise ValueError(f"login/password unusable in a passwd-file: {login!r}")
        (self.passwd_dir / login).write_text(f"{login}:{{PLAIN}}{password}\n")
        self._mkdirs(self.home(login))
        return SandboxUser(login, password, self)

    def home(self, user: str) -> Path:
        """The user's home directory; mail lives in ``<home>/Maildir``."""
        return self.root / "home" / user

    def folder_path(self, user: str, folder: str) -> Path:
        """Where an IMAP folder ("INBOX", "Sent", "Archive/2024", "Išsiųsti") lives on disk.

        Maildir++ keeps every folder as ``Maildir/.<name>``, with "." as hierarchy separator and
        names in modified UTF-7 (RFC 3501): "Archive/2024" is ``.Archive.2024``, "Išsiųsti" is
        ``.I&AWE-si&AXM-sti``. A "." inside a name would read back as a level, hence refused.
        """
        maildir = self.home(user) / "Maildir"
        if folder.upper() == "INBOX":
            return maildir
        if self.courier:  # "INBOX.Sent" is Maildir/.Sent there
            if not folder.upper().startswith("INBOX."):
                raise ValueError(f"a Courier-style folder name starts with 'INBOX.': {folder!r}")
            folder = folder[len("INBOX."):].replace(".", "/")
        if any(not part or "." in part for part in folder.split("/")):
            raise ValueError(f"folder name not representable in Maildir++: {folder!r}")
        return maildir / ("." + imap_utf7.encode(folder).decode("ascii").replace("/", "."))

    def create_folder(self, user: str, folder: str) -> Path:
        """Create an empty folder; Dovecot LISTs folders whether subscribed or not."""
        box = self.folder_path(user, folder)
        if not (box / "tmp").is_dir():
            for sub in ("cur", "new", "tmp"):
                self._mkdirs(box / sub)
        return box

    def deliver(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: str = "",
        *, internaldate: datetime | float | None = None,
    ) -> Path:
        """Drop a letter straight into a Maildir folder (created if missing) and return its file.

        ``flags`` are Maildir letters: S seen, F flagged, R answered, D draft, P forwarded,
        T deleted. Letters with flags go to cur/ with a ``:2,<flags>`` suffix, others to new/.
        ``internaldate`` (datetime or epoch seconds) becomes the file's mtime, which Dovecot
        reports as INTERNALDATE. Names sort in delivery order, so UIDs follow that order, and
        carry the sizes (S=, W=) so Dovecot need not read 20,000 files to answer RFC822.SIZE.
        IMAP serves letters with CRLF line ends: a letter given with bare LFs comes back longer.
        """
        if bad := set(flags) - MAILDIR_FLAGS:
            raise ValueError(f"unknown Maildir flags {''.join(sorted(bad))!r}")
        box = self.create_folder(user, folder)
        self._last_usec = max(time.time_ns() // 1000, self._last_usec + 1)
        sec, usec = divmod(self._last_usec, 1_000_000)
        crlf_size = len(raw) + raw.count(b"\n") - raw.count(b"\r\n")  # what IMAP reports
        name = f"{sec}.M{usec}P{os.getpid()}.hanna-sandbox,S={len(raw)},W={crlf_size}"
        tmp = box / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, raw)
            os.fchown(fd, self.uid, self.gid)
        finally:
            os.close(fd)
        if internaldate is not None:
            ts = internaldate.timestamp() if isinstance(internaldate, datetime) else internaldate
            os.utime(tmp, (ts, ts))
        final = box / "cur" / f"{name}:2,{''.join(sorted(set(flags)))}" if flags else box / "new" / name
        tmp.rename(final)  # atomic: a running Dovecot never sees a half-written letter
        return final

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm -c <this config> ARGS`` against the running instance; return stdout.

        The server's own admin tool changes mail the way IMAP would: sessions that have the folder
        open are told (or dropped) instead of working on stale indexes, and names are plain UTF-8.
        """
        result = subprocess.run(
            [DOVEADM_BIN, "-c", str(self.conf_path), *args], capture_output=True, text=True
        )
        if result.returncode:
            raise SandboxError(f"doveadm {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def rename_folder(self, user: str, old: str, new: str) -> None:
        """IMAP RENAME (subfolders move along, UIDVALIDITY is kept); Dovecot must be running."""
        self.doveadm("mailbox", "rename", "-u", user, old, new)

    def delete_folder(self, user: str, folder: str) -> None:
        """IMAP DELETE (letters go; subfolders stay); Dovecot must be running."""
        self.doveadm("mailbox", "delete", "-u", user, folder)

    def reset_uidvalidity(self, user: str, folder: str) -> int:
        """Give the folder a new UIDVALIDITY (as after a server restore) and return it.

        Uses ``doveadm mailbox update``, so Dovecot must be running; letters and their UIDs stay.
        Deleting the folder's ``dovecot-uidlist`` and ``dovecot.index*`` files is not enough: if
        an imap process had the folder open, Dovecot brought the old UIDVALIDITY back. doveadm
        instead drops the sessions that have the folder selected, as a real server would.
        """
        status = self.doveadm("mailbox", "status", "-u", user, "uidvalidity", folder)
        value = int(status.rsplit("=", 1)[1]) + 1
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)
        return value

    # -- certificates --------------------------------------------------------------------------

    def make_cert(self, hostnames: Sequence[str]) -> tuple[Path, Path]:
        """Issue a server certificate signed by the sandbox CA for DNS names and/or IP addresses.

        Returns ``(cert_path, key_path)``; e.g. to serve a certificate for another host name.
        """
        return self.ca.issue(hostnames)

    # -- internals -----------------------------------------------------------------------------

    def _config(self) -> str:
        """dovecot.conf: nothing from /etc/dovecot, everything inside the temp dir."""
        unprivileged = ""
        no_chroot = ""
        if os.getuid() != 0:  # chroot and switching users need root
            me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
            unprivileged = (
                f"default_internal_user = {me}\ndefault_internal_group = {group}\n"
                f"default_login_user = {me}\n"
            )
            no_chroot = "  chroot =\n"
        return f"""\
# Written by hanna_sync.demo.sandbox for one throwaway instance.
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.log_path}
listen = 127.0.0.1
protocols = imap
ssl = yes
ssl_cert = <{self.cert_file}
ssl_key = <{self.key_file}
auth_mechanisms = plain login
auth_verbose = yes
# Fail wrong passwords fast, and no anvil auth penalty: it would delay every later login from
# 127.0.0.1 by 2-15 s (without the anvil-auth-penalty socket, auth silently skips it).
auth_failure_delay = 0
# Exact logins: passwd-file entries and home dirs match what add_user() was given.
auth_username_format = %u
# The "mail" user (uid 8) is below Dovecot's default first_valid_uid of 500.
first_valid_uid = {self.uid}
mail_location = maildir:~/Maildir
mail_fsync = never
{unprivileged}
namespace inbox {{
  inbox = yes
  separator = {"." if self.courier else "/"}
{"  prefix = INBOX." if self.courier else ""}
}}
passdb {{
  driver = passwd-file
  args = {self.passwd_dir}/%u
}}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={self.root}/home/%u
}}
# COMPRESS=DEFLATE (RFC 4978), as Gmail and most hosted Dovecots offer it.
protocol imap {{
  mail_plugins = $mail_plugins imap_zlib
}}
service imap-login {{
{no_chroot}  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
  }}
}}
service anvil {{
{no_chroot}  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def _wait_ready(self, timeout: float) -> None:
        """Poll both ports until each sends an IMAP greeting (imaps after a verified handshake)."""
        tls = ssl.create_default_context(cafile=self.ca_file)
        tls.check_hostname = False  # the served cert may be for another host name on purpose
        pending: dict[int, ssl.SSLContext | None] = {self.imap_port: None, self.imaps_port: tls}
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while pending:
            assert self._proc is not None
            if (rc := self._proc.poll()) is not None:
                self.stop()
                raise SandboxError(f"dovecot exited ({rc}); log tail:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SandboxError(
                    f"dovecot did not greet on {self.host} ports {sorted(pending)} in {timeout}s "
                    f"(last error: {last_error!r}); log tail:\n{self._log_tail()}"
                )
            for port, context in list(pending.items()):
                try:
                    if _greeting(self.host, port, context).startswith(b"* OK"):
                        del pending[port]
                except OSError as e:
                    last_error = e
            time.sleep(0.02 if pending else 0)

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _mkdirs(self, path: Path) -> None:
        """mkdir -p where every created directory belongs to the mail user, as Dovecot expects."""
        if path.is_dir():
            return
        self._mkdirs(path.parent)
        path.mkdir(mode=0o700 if path.parent != self.root else 0o755)
        os.chown(path, self.uid, self.gid)


class CertificateAuthority:
    """A throwaway CA (in `directory`, as ca.pem) and the server certificates it issues: what lets the tests'
    servers (Dovecot, and the fakes of other services) speak verified TLS on 127.0.0.1."""

    def __init__(self, directory: Path, name: str = "hanna-sync sandbox CA") -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "ca.pem"
        self._issued = 0
        self._key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._cert = (
            _cert_builder(ca_name, self._key.public_key(), ca_name)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, hostnames: Sequence[str]) -> tuple[Path, Path]:
        """A server certificate for DNS names and/or IP addresses: ``(cert_path, key_path)``."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = [
            x509.IPAddress(ipaddress.ip_address(h)) if is_ip_address(h) else x509.DNSName(h)
            for h in hostnames
        ]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
        cert = (
            _cert_builder(subject, key.public_key(), self._cert.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        self._issued += 1
        cert_path = self.directory / f"server{self._issued}.pem"
        key_path = cert_path.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def _greeting(host: str, port: int, context: ssl.SSLContext | None) -> bytes:
    with socket.create_connection((host, port), timeout=2) as sock:
        if context is None:
            return sock.recv(4096)
        with context.wrap_socket(sock, server_hostname=host) as tls_sock:
            return tls_sock.recv(4096)


def _free_ports(count: int) -> list[int]:
    """Ports the kernel considers free right now (all bound at once, so they are distinct)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # all gone already
        os.killpg(pgid, sig)


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM Dovecot if the test process dies without atexit.

    (Linux prctl PR_SET_PDEATHSIG; it fires when the *thread* that started Dovecot exits.)
    """
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)



def _cert_builder(
    subject: x509.Name, public_key: ec.EllipticCurvePublicKey, issuer: x509.Name
) -> x509.CertificateBuilder:
    """The parts shared by CA and server certificates (SKI keeps strict X.509 verifiers happy)."""
    now = datetime.now(timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, key_cert_sign: bool = False, digital_signature: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
