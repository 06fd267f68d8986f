"""Configuration: one TOML file, optional, validated strictly.

A sysadmin's typo must not silently fall back to a default (a misspelt `own_domains` would link the
company's own mail to customers), so an unknown key or a value of the wrong type is an error that names
the key. Everything has a default, so the tool also runs with no file at all.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from hanna_sync.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")
SECRET_STORES = ("file", "system")
O365_AUTH_MODES = ("delegated", "app")
GOOGLE_AUTH_MODES = ("service-account", "user")


SYSTEM_CONFIG_DIR = Path("/etc/hanna-sync")
SYSTEM_STATE_DIR = Path("/var/lib/hanna-sync")
DATABASE_NAME = "hanna-sync.db"


def user_data_dir() -> Path:
    """The per-user home of the database: $XDG_DATA_HOME/hanna-sync, else ~/.local/share/hanna-sync."""
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "hanna-sync"


def is_system_config(config_file: Path | None) -> bool:
    """Whether a config file is the system-wide one (in /etc/hanna-sync), which puts state in /var/lib."""
    if config_file is None:
        return False
    try:
        return config_file.resolve().parent == SYSTEM_CONFIG_DIR.resolve()
    except OSError:
        return False


def default_database(config_file: Path | None) -> Path:
    """The database when the config does not name one: the one rule every command and unit follows.

    It depends only on which config file is in use, never on variables a unit sets and a shell lacks
    (a unit's $STATE_DIRECTORY once sent the timer to a new, empty database while `add-mailbox` at a
    shell had written another): /etc/hanna-sync/config.toml means the system-wide database in
    /var/lib/hanna-sync, any other file or none the user's own in $XDG_DATA_HOME.
    """
    return (SYSTEM_STATE_DIR if is_system_config(config_file) else user_data_dir()) / DATABASE_NAME


def database_candidates() -> list[Path]:
    """Every place a hanna-sync database is commonly found, including where older versions put it
    (a systemd StateDirectory= under ~/.local/state): checked when the database in use is empty."""
    xdg_state = os.environ.get("XDG_STATE_HOME")
    places = [user_data_dir(), (Path(xdg_state) if xdg_state else Path.home() / ".local" / "state") / "hanna-sync",
              SYSTEM_STATE_DIR]
    places += [Path(p) for p in os.environ.get("STATE_DIRECTORY", "").split(":") if p]
    return [p / DATABASE_NAME for p in places]


def other_databases(database: Path) -> list[str]:
    """Known places other than `database` that hold a database, each described (unreadable ones too:
    /var/lib/hanna-sync is the service user's alone, and a user's shell cannot tell what it holds)."""
    found: list[str] = []
    seen = {database.resolve()}
    for candidate in database_candidates():
        if candidate.resolve() in seen:
            continue
        seen.add(candidate.resolve())
        try:
            st = candidate.stat()
        except PermissionError:
            found.append(f"{candidate} (not readable by this user: run as the user the timer runs as)")
            continue
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            found.append(str(candidate))
    return found


def config_search_path() -> list[Path]:
    """Files tried in order when neither --config nor $HANNA_SYNC_CONFIG names one."""
    paths = []
    if os.environ.get("CONFIGURATION_DIRECTORY"):
        paths.append(Path(os.environ["CONFIGURATION_DIRECTORY"].split(":")[0]) / "config.toml")
    xdg = os.environ.get("XDG_CONFIG_HOME")
    paths.append((Path(xdg) if xdg else Path.home() / ".config") / "hanna-sync" / "config.toml")
    paths.append(SYSTEM_CONFIG_DIR / "config.toml")
    return paths


@dataclass(frozen=True)
class SecretsConfig:
    store: str = "file"
    file: Path | None = None  # default: secrets.enc beside the database
    key_file: Path | None = None  # default: secrets.key beside the database
    timeout: float = 10.0


@dataclass(frozen=True)
class ScanConfig:
    concurrency: int = 32  # mailboxes at once: a pass waits on round trips, not on the CPU (issue #20)
    max_connections_per_host: int = 32  # of those on one server; halved when it answers "busy"
    batch_size: int = 200
    max_letter_size_mb: float = 25.0
    time_budget_minutes: float = 8.0
    gap_check_hours: float = 24.0
    auth_backoff_minutes: float = 30.0


@dataclass(frozen=True)
class LinkingConfig:
    """Links beyond the five address rules, and letters kept out of them."""

    thread_replies: bool = True  # a reply in a conversation linked to a customer is linked too (rule "thread")
    automatic: bool = False  # link auto-replies, bulk and mailing-list letters (Auto-Submitted, Precedence, List-Id)
    blocked: tuple[str, ...] = ()  # address or domain globs (lower case) that never cause a link or an archive


DIRECTORY_COLUMNS = ("id", "name", "email", "domain", "contacts")


@dataclass(frozen=True)
class DirectoryConfig:
    """Where the CRM's customers and leads come from, so the directory follows the CRM by itself."""

    customers: str | None = None  # a SOURCE: a path, an https:// URL, or cmd:COMMAND; None: imports by hand
    leads: str | None = None
    refresh_minutes: float = 60.0  # `run` refreshes a source older than this, as a snapshot
    max_removed_percent: float = 10.0  # a snapshot removing more of the entities than this is refused
    columns: dict[str, str] = field(default_factory=dict)  # our column -> the CRM's column name


@dataclass(frozen=True)
class NetworkConfig:
    timeout: float = 30.0


@dataclass(frozen=True)
class RetentionConfig:
    """How long letters are kept. None keeps them forever: deleting mail is a decision for the admin."""

    years: float | None = None  # letters dated more than this long ago are deleted by the next pass


@dataclass(frozen=True)
class O365Config:
    """The admin's own app registration for Office 365 mailboxes (hanna-sync ships no client id: borrowed
    ones get disabled). The client secret, when used, is in the secrets store, never here."""

    tenant_id: str | None = None
    client_id: str | None = None
    auth: str = "delegated"  # "delegated" (each mailbox signs in) or "app" (client credentials, admin consent)
    certificate_file: Path | None = None  # app-only with a certificate: PEM with the private key
    certificate_thumbprint: str | None = None  # SHA-1 thumbprint of that certificate, as the portal shows it
    authority: str = "https://login.microsoftonline.com"  # another cloud, or a test's fake identity platform
    graph_url: str = "https://graph.microsoft.com/v1.0"


@dataclass(frozen=True)
class GoogleConfig:
    """Google sign-in for the Google kinds (google-scan, google-client): a Workspace service account with
    domain-wide delegation, or the admin's own OAuth client (hanna-sync ships no client id). The client
    secret, when used, is in the secrets store; a service account's key is in its own 0600 file or a
    systemd credential, never here."""

    auth: str | None = None  # "service-account" or "user"; None: no [google] section, Google kinds refused
    service_account_file: Path | None = None  # the key (JSON); None: $CREDENTIALS_DIRECTORY/hanna-sync-google
    client_id: str | None = None  # auth = "user": the OAuth client's id (Desktop app)
    token_uri: str = "https://oauth2.googleapis.com/token"  # overridable for a test's fake
    auth_uri: str = "https://accounts.google.com/o/oauth2/v2/auth"
    gmail_url: str = "https://gmail.googleapis.com/gmail/v1"  # google-scan's Gmail API


@dataclass(frozen=True)
class Config:
    database: Path = field(default_factory=lambda: default_database(None))
    log_level: str = "info"
    own_domains: tuple[str, ...] = ()
    free_mail_domains: tuple[str, ...] = ()
    secrets: SecretsConfig = field(default_factory=SecretsConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    linking: LinkingConfig = field(default_factory=LinkingConfig)
    o365: O365Config = field(default_factory=O365Config)
    google: GoogleConfig = field(default_factory=GoogleConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
    source: Path | None = None  # the file it came from, None for built-in defaults

    @property
    def secrets_file(self) -> Path:
        return self.secrets.file or self.database.parent / "secrets.enc"

    @property
    def secrets_key_file(self) -> Path:
        return self.secrets.key_file or self.database.parent / "secrets.key"

    @property
    def max_letter_bytes(self) -> int:
        return int(self.scan.max_letter_size_mb * 1024 * 1024)


# key -> (accepted types, description of the expected type) for every key a file may set.
_SCHEMA: dict[str, Any] = {
    "database": (str, "a path"),
    "log_level": (str, "one of " + ", ".join(LOG_LEVELS)),
    "own_domains": (list, "a list of domain names"),
    "free_mail_domains": (list, "a list of domain names"),
    "secrets": {
        "store": (str, "one of " + ", ".join(f'"{s}"' for s in SECRET_STORES)),
        "file": (str, "a path"),
        "key_file": (str, "a path"),
        "timeout": ((int, float), "a number of seconds"),
    },
    "scan": {
        "concurrency": (int, "a whole number >= 1"),
        "max_connections_per_host": (int, "a whole number >= 1"),
        "batch_size": (int, "a whole number >= 1"),
        "max_letter_size_mb": ((int, float), "a number of megabytes > 0"),
        "time_budget_minutes": ((int, float), "a number of minutes > 0"),
        "gap_check_hours": ((int, float), "a number of hours >= 0"),
        "auth_backoff_minutes": ((int, float), "a number of minutes >= 0"),
    },
    "network": {
        "timeout": ((int, float), "a number of seconds > 0"),
    },
    "linking": {
        "thread_replies": (bool, "true or false"),
        "automatic": (bool, "true or false"),
        "blocked": (list, "a list of address or domain globs, e.g. \"noreply@*\", \"*@notifications.example\""),
    },
    "directory": {
        "customers": (str, "a SOURCE: a path, an https:// URL or cmd:COMMAND"),
        "leads": (str, "a SOURCE: a path, an https:// URL or cmd:COMMAND"),
        "refresh_minutes": ((int, float), "a number of minutes > 0"),
        "max_removed_percent": ((int, float), "a percentage from 0 to 100"),
        "columns": {name: (str, "the CRM's name of this column") for name in DIRECTORY_COLUMNS},
    },
    "o365": {
        "tenant_id": (str, "the directory (tenant) ID or domain of the Microsoft 365 organisation"),
        "client_id": (str, "the application (client) ID of your app registration"),
        "auth": (str, "one of " + ", ".join(f'"{m}"' for m in O365_AUTH_MODES)),
        "certificate_file": (str, "a path"),
        "certificate_thumbprint": (str, "the certificate's thumbprint (hex)"),
        "authority": (str, "an https:// URL"),
        "graph_url": (str, "an https:// URL"),
    },
    "google": {
        "auth": (str, "one of " + ", ".join(f'"{m}"' for m in GOOGLE_AUTH_MODES)),
        "service_account_file": (str, "a path to the service account's key (JSON)"),
        "client_id": (str, "the OAuth client ID (…apps.googleusercontent.com) of your Desktop app client"),
        "token_uri": (str, "an https:// URL"),
        "auth_uri": (str, "an https:// URL"),
        "gmail_url": (str, "an https:// URL"),
    },
    "retention": {
        "years": ((int, float), "a number of years > 0"),
    },
}


def _check(data: dict[str, Any], schema: dict[str, Any], where: Path, prefix: str = "") -> None:
    for key, value in data.items():
        name = prefix + key
        if key not in schema:
            hint = difflib.get_close_matches(key, list(schema), n=1)
            maybe = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{where}: unknown key '{name}'{maybe}; 'hanna-sync setup-guide config' shows every key")
        expected = schema[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{name}' must be a table ([{name}])")
            _check(value, expected, where, name + ".")
            continue
        types, description = expected
        # bool is an int in Python; a `concurrency = true` is still a mistake.
        if isinstance(value, bool) != (types is bool) or not isinstance(value, types):
            raise ConfigError(f"{where}: '{name}' must be {description}, not {value!r}")


def _domains(values: list[Any], name: str, where: Path) -> tuple[str, ...]:
    from hanna_sync.mail.addresses import (
        normalise_domain,  # local import keeps start-up light
    )

    out = []
    for value in values:
        domain = normalise_domain(value) if isinstance(value, str) else None
        if not domain:
            raise ConfigError(f"{where}: '{name}' must be a list of domain names; {value!r} is not one")
        out.append(domain)
    return tuple(out)


def _globs(values: list[Any], name: str, where: Path) -> list[str]:
    """Address or domain globs as `fnmatch` reads them, lower case: "noreply@*", "*@notifications.example",
    "billing@vendor.lt"; a bare domain ("vendor.lt") means every address at it."""
    out = []
    for value in values:
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
            raise ConfigError(f"{where}: '{name}' must be a list of address or domain globs; {value!r} is not one")
        glob = value.strip().lower()
        out.append(glob if "@" in glob else f"*@{glob}")
    return out


def _source(value: str | None, name: str, where: Path) -> str | None:
    """A [directory] SOURCE; a relative path is the config file's neighbour, as every path in it is
    (the timer's working directory is not the admin's). A URL is kept as written (any scheme: the read
    refuses all but https://), once it is one: a host, a port from 1 to 65535; standard input ("-") is
    no source for a pass that runs unattended."""
    if value is None or value.startswith("cmd:"):
        return value
    if value.strip() in ("-", ""):
        raise ConfigError(f"{where}: 'directory.{name}' must be a path, an https:// URL or cmd:COMMAND, not"
                          f" {value!r} (standard input is for 'hanna-sync import {name} -')")
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value) or value.lower().startswith("http:"):
        shown = re.split(r"[?#]", value, maxsplit=1)[0]
        shown = re.sub(r"://[^/@]*@", "://", shown)  # no password in a message
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"{where}: 'directory.{name}' is not a URL as written ({exc}): {shown}") from None
        if not parts.hostname or port == 0:
            raise ConfigError(f"{where}: 'directory.{name}' is not a URL as written"
                              f" ({'port 0' if parts.hostname else 'no host'}): {shown}")
        return value
    return str(where.parent / Path(value).expanduser())


def _positive(value: float, name: str, where: Path, minimum: float = 0, *, strict: bool = True) -> None:
    if value < minimum or (strict and value == minimum):
        raise ConfigError(f"{where}: '{name}' must be {'>' if strict else '>='} {minimum}, not {value!r}")


def _google(google: dict[str, Any] | None, where: Path) -> GoogleConfig:
    """[google], every bad combination refused in one line: a section means Google mailboxes are meant."""
    if google is None:
        return GoogleConfig()
    auth = google.get("auth")
    if auth not in GOOGLE_AUTH_MODES:
        raise ConfigError(f"{where}: 'google.auth' must be \"service-account\" (Workspace domain-wide delegation)"
                          f" or \"user\" (your own OAuth client), not {auth!r}")
    for name in ("token_uri", "auth_uri", "gmail_url"):
        if name in google and not google[name].startswith("https://"):
            raise ConfigError(f"{where}: 'google.{name}' must be an https:// URL, not {google[name]!r}")
    if auth == "service-account" and "client_id" in google:
        raise ConfigError(f"{where}: 'google.client_id' is for auth = \"user\": a service account's id comes from"
                          " its key (service_account_file)")
    if auth == "user" and "service_account_file" in google:
        raise ConfigError(f"{where}: 'google.service_account_file' is for auth = \"service-account\": with"
                          " auth = \"user\" give client_id")
    if auth == "user" and not google.get("client_id", "").strip():
        raise ConfigError(f"{where}: google.auth = \"user\" needs client_id, the OAuth client ID of your own"
                          " Desktop app client ('hanna-sync setup-guide google' shows how to make one)")
    client_id = google.get("client_id")
    if client_id is not None and not client_id.strip().endswith(".apps.googleusercontent.com"):
        raise ConfigError(f"{where}: 'google.client_id' must be an OAuth client ID ending in"
                          f" .apps.googleusercontent.com, not {client_id!r}")
    return GoogleConfig(auth=auth, client_id=client_id.strip() if client_id else None,
                        token_uri=google.get("token_uri", GoogleConfig.token_uri),
                        auth_uri=google.get("auth_uri", GoogleConfig.auth_uri),
                        gmail_url=google.get("gmail_url", GoogleConfig.gmail_url).rstrip("/"))


def parse_config(data: dict[str, Any], where: Path) -> Config:
    """Build a Config from parsed TOML, relative paths taken from the file's directory."""
    if isinstance(data.get("google"), dict) and "client_secret" in data["google"]:
        raise ConfigError(f"{where}: 'google.client_secret' does not belong in the config: store it in the secrets"
                          " store with 'hanna-sync login --google-client-secret'")
    _check(data, _SCHEMA, where)
    base = where.parent

    def path(value: str | None) -> Path | None:
        return None if value is None else (base / Path(value).expanduser())

    if data.get("log_level", "info") not in LOG_LEVELS:
        raise ConfigError(f"{where}: 'log_level' must be one of {', '.join(LOG_LEVELS)}, not {data['log_level']!r}")
    secrets = data.get("secrets", {})
    if secrets.get("store", "file") not in SECRET_STORES:
        raise ConfigError(f"{where}: 'secrets.store' must be \"file\" or \"system\", not {secrets['store']!r}")
    scan = data.get("scan", {})
    network = data.get("network", {})
    linking = data.get("linking", {})
    o365 = data.get("o365", {})
    retention = data.get("retention", {})
    directory = data.get("directory", {})
    blocked = tuple(_globs(linking.get("blocked", []), "linking.blocked", where))
    if o365.get("auth", "delegated") not in O365_AUTH_MODES:
        raise ConfigError(f"{where}: 'o365.auth' must be \"delegated\" or \"app\", not {o365['auth']!r}")
    for name in ("authority", "graph_url"):
        if name in o365 and not o365[name].startswith("https://"):
            raise ConfigError(f"{where}: 'o365.{name}' must be an https:// URL, not {o365[name]!r}")
    if ("certificate_file" in o365) != ("certificate_thumbprint" in o365):
        raise ConfigError(f"{where}: 'o365.certificate_file' and 'o365.certificate_thumbprint' go together")
    thumbprint = o365.get("certificate_thumbprint")
    if thumbprint is not None and not re.fullmatch(r"[0-9A-Fa-f]{40}", thumbprint.replace(":", "").replace(" ", "")):
        raise ConfigError(f"{where}: 'o365.certificate_thumbprint' must be the certificate's SHA-1 thumbprint,"
                          f" 40 hex digits as the portal's Certificates & secrets page shows it, not {thumbprint!r}")
    google = _google(data.get("google"), where)
    for name, value in (
        ("secrets.timeout", secrets.get("timeout", 1)),
        ("scan.max_letter_size_mb", scan.get("max_letter_size_mb", 1)),
        ("network.timeout", network.get("timeout", 1)),
        ("retention.years", retention.get("years", 1)),
        ("directory.refresh_minutes", directory.get("refresh_minutes", 1)),
    ):
        _positive(value, name, where)
    if not 0 <= directory.get("max_removed_percent", 0) <= 100:
        raise ConfigError(f"{where}: 'directory.max_removed_percent' must be a percentage from 0 to 100,"
                          f" not {directory['max_removed_percent']!r}")
    _positive(scan.get("time_budget_minutes", 1), "scan.time_budget_minutes", where)
    for key in ("concurrency", "max_connections_per_host", "batch_size"):
        _positive(scan.get(key, 1), f"scan.{key}", where, minimum=1, strict=False)
    for name in ("gap_check_hours", "auth_backoff_minutes"):
        _positive(scan.get(name, 0), f"scan.{name}", where, strict=False)

    return Config(
        database=path(data.get("database")) or default_database(where),
        log_level=data.get("log_level", "info"),
        own_domains=_domains(data.get("own_domains", []), "own_domains", where),
        free_mail_domains=_domains(data.get("free_mail_domains", []), "free_mail_domains", where),
        secrets=SecretsConfig(
            store=secrets.get("store", "file"),
            file=path(secrets.get("file")),
            key_file=path(secrets.get("key_file")),
            timeout=float(secrets.get("timeout", SecretsConfig.timeout)),
        ),
        scan=ScanConfig(
            concurrency=scan.get("concurrency", ScanConfig.concurrency),
            max_connections_per_host=scan.get("max_connections_per_host", ScanConfig.max_connections_per_host),
            batch_size=scan.get("batch_size", ScanConfig.batch_size),
            max_letter_size_mb=float(scan.get("max_letter_size_mb", ScanConfig.max_letter_size_mb)),
            time_budget_minutes=float(scan.get("time_budget_minutes", ScanConfig.time_budget_minutes)),
            gap_check_hours=float(scan.get("gap_check_hours", ScanConfig.gap_check_hours)),
            auth_backoff_minutes=float(scan.get("auth_backoff_minutes", ScanConfig.auth_backoff_minutes)),
        ),
        network=NetworkConfig(timeout=float(network.get("timeout", NetworkConfig.timeout))),
        linking=LinkingConfig(
            thread_replies=linking.get("thread_replies", LinkingConfig.thread_replies),
            automatic=linking.get("automatic", LinkingConfig.automatic),
            blocked=blocked,
        ),
        o365=O365Config(
            tenant_id=o365.get("tenant_id"),
            client_id=o365.get("client_id"),
            auth=o365.get("auth", O365Config.auth),
            certificate_file=path(o365.get("certificate_file")),
            certificate_thumbprint=thumbprint.replace(":", "").replace(" ", "") if thumbprint else None,
            authority=o365.get("authority", O365Config.authority).rstrip("/"),
            graph_url=o365.get("graph_url", O365Config.graph_url).rstrip("/"),
        ),
        google=replace(google, service_account_file=path(data.get("google", {}).get("service_account_file"))),
        retention=RetentionConfig(years=float(retention["years"]) if "years" in retention else None),
        directory=DirectoryConfig(
            customers=_source(directory.get("customers"), "customers", where),
            leads=_source(directory.get("leads"), "leads", where),
            refresh_minutes=float(directory.get("refresh_minutes", DirectoryConfig.refresh_minutes)),
            max_removed_percent=float(directory.get("max_removed_percent", DirectoryConfig.max_removed_percent)),
            columns=dict(directory.get("columns", {})),
        ),
        source=where,
    )


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Load the config named by --config, else $HANNA_SYNC_CONFIG, else the first file found.

    A file named explicitly must exist; the search path may find nothing, which means defaults.
    """
    named = explicit or os.environ.get("HANNA_SYNC_CONFIG")
    if named:
        candidate = Path(named).expanduser()
        if not candidate.is_file():
            what = "is a directory, not a file" if candidate.is_dir() else "does not exist"
            raise ConfigError(f"config file {candidate} {what} (given by --config or $HANNA_SYNC_CONFIG)")
    else:
        found = next((p for p in config_search_path() if _present(p)), None)
        if found is None:
            return Config()
        candidate = found
    try:
        with open(candidate, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{candidate}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # tomllib reads bytes, and TOML is UTF-8 only
        raise ConfigError(f"{candidate}: not UTF-8 (byte {exc.start}); save it as UTF-8") from None
    except PermissionError:
        raise ConfigError(
            f"cannot read config {candidate}: permission denied; it belongs to the user the service runs as:"
            f" run the command as that user (e.g. sudo -u hanna-sync hanna-sync ...), or name a config of your"
            f" own with --config (or ~/.config/hanna-sync/config.toml)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {candidate}: {exc.strerror}") from None
    return parse_config(data, candidate.resolve())


def _present(path: Path) -> bool:
    """A config file on the search path, also one in a directory this user may not enter (/etc/hanna-sync
    is 0750 root:hanna-sync): found, so that reading it says why it cannot be, instead of a traceback or a
    silent fallback to another database."""
    try:
        return path.is_file()
    except PermissionError:
        return True
