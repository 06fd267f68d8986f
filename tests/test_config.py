from __future__ import annotations

from pathlib import Path

import pytest

from hanna_sync import config as config_module
from hanna_sync.config import Config, load_config, other_databases
from hanna_sync.errors import ConfigError, ExitCode

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch, tmp_path):
    """Keep the developer's own config files out of these tests."""
    monkeypatch.delenv("HANNA_SYNC_CONFIG", raising=False)
    monkeypatch.delenv("CONFIGURATION_DIRECTORY", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG_DIR", tmp_path / "no-etc")  # not the host's /etc


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_at_all_gives_defaults_under_the_data_dir(tmp_path):
    config = load_config()
    assert config.source is None
    assert config.database == tmp_path / "xdg-data" / "hanna-sync" / "hanna-sync.db"
    assert config.secrets.store == "file"
    assert config.secrets_key_file == config.database.parent / "secrets.key"
    assert config.scan.concurrency == 32 and config.scan.max_connections_per_host == 32


def test_a_units_state_directory_does_not_move_the_database(monkeypatch, tmp_path):
    """A unit's $STATE_DIRECTORY (or $CONFIGURATION_DIRECTORY) is an environment the admin's shell lacks:
    the database must not depend on it, or the timer scans a new, empty database (issue 14, item 1)."""
    shell = load_config().database
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "xdg-state" / "hanna-sync"))
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(tmp_path / "xdg-config" / "hanna-sync"))
    assert load_config().database == shell == tmp_path / "xdg-data" / "hanna-sync" / "hanna-sync.db"


def test_the_system_config_puts_the_database_in_var_lib_for_root_and_the_service_alike(monkeypatch, tmp_path):
    """/etc/hanna-sync/config.toml with no `database` key: root's shell (which finds it on the search
    path), the service user and the system unit (which names it with --config) share one database."""
    etc, var_lib = tmp_path / "etc" / "hanna-sync", tmp_path / "var" / "lib" / "hanna-sync"
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG_DIR", etc)
    monkeypatch.setattr(config_module, "SYSTEM_STATE_DIR", var_lib)
    etc.mkdir(parents=True)
    (etc / "config.toml").write_text("log_level = 'info'\n")
    found = load_config()  # a shell: the search path ends at the system config
    named = load_config(etc / "config.toml")  # the unit: ExecStart=... --config /etc/hanna-sync/config.toml
    assert found.source == named.source == (etc / "config.toml").resolve()
    assert found.database == named.database == var_lib / "hanna-sync.db"
    assert found.secrets_key_file == var_lib / "secrets.key"
    # Any other file keeps the user's own database; a `database` key still wins everywhere.
    assert load_config(write(tmp_path, "log_level = 'info'")).database == tmp_path / "xdg-data" / "hanna-sync" / "hanna-sync.db"
    (etc / "config.toml").write_text('database = "/srv/archive.db"\n')
    assert load_config().database == Path("/srv/archive.db")


def test_other_databases_lists_the_known_places_that_hold_one(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setattr(config_module, "SYSTEM_STATE_DIR", tmp_path / "var-lib")
    current = tmp_path / "xdg-data" / "hanna-sync" / "hanna-sync.db"
    assert other_databases(current) == []
    old_unit = tmp_path / "xdg-state" / "hanna-sync" / "hanna-sync.db"  # where the old user unit put it
    old_unit.parent.mkdir(parents=True)
    old_unit.write_bytes(b"SQLite format 3\0")
    (tmp_path / "var-lib").mkdir()
    (tmp_path / "var-lib" / "hanna-sync.db").write_bytes(b"")  # empty: holds nothing
    assert other_databases(current) == [str(old_unit)]
    assert other_databases(old_unit) == []  # never the database in use itself


def test_example_config_is_valid_and_documents_the_defaults():
    config = load_config(ROOT / "config.example.toml")
    defaults = Config()
    assert config.log_level == defaults.log_level
    assert config.secrets == defaults.secrets
    assert config.scan == defaults.scan
    assert config.network == defaults.network


def test_example_config_mentions_every_key():
    from hanna_sync.config import _SCHEMA

    text = (ROOT / "config.example.toml").read_text()

    def documented(schema: dict, table: str) -> None:
        for key, value in schema.items():
            if isinstance(value, dict):
                assert f"[{table}{key}]" in text, f"[{table}{key}] undocumented"
                documented(value, f"{table}{key}.")
            else:
                assert f"{key} =" in text, f"{table}{key} undocumented"

    documented(_SCHEMA, "")


def test_values_and_relative_paths(tmp_path):
    path = write(tmp_path, """
database = "data/archive.db"
own_domains = ["Imone.LT", "žalgiris.lt"]
free_mail_domains = ["zebra.lt"]
[secrets]
key_file = "keys/k"
[scan]
concurrency = 8
max_connections_per_host = 3
max_letter_size_mb = 10
[network]
timeout = 5
""")
    config = load_config(path)
    assert config.database == tmp_path / "data" / "archive.db"
    assert config.own_domains == ("imone.lt", "xn--algiris-cxb.lt")
    assert config.free_mail_domains == ("zebra.lt",)
    assert config.secrets_key_file == tmp_path / "keys" / "k"
    assert config.scan.concurrency == 8 and config.scan.max_connections_per_host == 3
    assert config.max_letter_bytes == 10 * 1024 * 1024
    assert config.network.timeout == 5.0


@pytest.mark.parametrize("text, message", [
    ('databse = "x.db"', "unknown key 'databse' (did you mean 'database'?)"),
    ('[scan]\nconcurency = 2', "unknown key 'scan.concurency' (did you mean 'scan.concurrency'?)"),
    ('[scan]\nconcurrency = "4"', "'scan.concurrency' must be a whole number >= 1, not '4'"),
    ('[scan]\nconcurrency = true', "'scan.concurrency' must be a whole number >= 1, not True"),
    ('[scan]\nconcurrency = 0', "'scan.concurrency' must be >= 1, not 0"),
    ('[scan]\nmax_connections_per_host = 0', "'scan.max_connections_per_host' must be >= 1, not 0"),
    ('[network]\ntimeout = -1', "'network.timeout' must be > 0"),
    ('own_domains = "acme.lt"', "'own_domains' must be a list of domain names"),
    ('own_domains = ["not a domain"]', "'own_domains' must be a list of domain names; 'not a domain' is not one"),
    ('log_level = "loud"', "'log_level' must be one of debug, info, warning, error"),
    ('[secrets]\nstore = "vault"', "'secrets.store' must be \"file\" or \"system\""),
    ('scan = 3', "'scan' must be a table"),
    ('database = ', "not valid TOML"),
    ('[linking]\nblocked = ["ok@x.lt", "no spaces@x.lt"]', "'linking.blocked' must be a list of address or domain globs"),
    ('[directory]\nmax_removed_percent = 150', "'directory.max_removed_percent' must be a percentage from 0 to 100"),
    ('[directory]\nrefresh_minutes = 0', "'directory.refresh_minutes' must be > 0"),
    ('[directory.columns]\nmail = "E-mail"', "unknown key 'directory.columns.mail' (did you mean 'directory.columns.email'?)"),
])
def test_errors_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE


def test_named_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_environment_variable_names_the_file(monkeypatch, tmp_path):
    path = write(tmp_path, "log_level = 'debug'")
    monkeypatch.setenv("HANNA_SYNC_CONFIG", str(path))
    assert load_config().log_level == "debug"


def test_search_path_finds_the_user_config(tmp_path):
    user_config = tmp_path / "xdg-config" / "hanna-sync" / "config.toml"
    user_config.parent.mkdir(parents=True)
    user_config.write_text("log_level = 'error'")
    assert load_config().source == user_config.resolve()


def test_the_package_ships_the_example_config_and_setup_guide_prints_it():
    """A pip install has no checkout: the errors point at `setup-guide config`, which prints the copy
    inside the package; the repository's config.example.toml is that same file, byte for byte."""
    from hanna_sync.admin.setup_guide import example_config

    assert example_config() == (ROOT / "config.example.toml").read_text(encoding="utf-8")
    assert example_config() == (ROOT / "hanna_sync" / "config.example.toml").read_text(encoding="utf-8")
    assert "config.example.toml" in _package_data()


def _package_data() -> str:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["hanna_sync"])


def test_the_directory_sources_and_the_blocklist(tmp_path):
    path = write(tmp_path, """
[linking]
blocked = ["NoReply@*", "*@notifications.example", "vendor.lt"]
[directory]
customers = "cmd:cat customers.csv"
leads = "https://crm.example.lt/leads.csv"
refresh_minutes = 15
max_removed_percent = 25
[directory.columns]
email = "E-mail address"
""")
    config = load_config(path)
    assert config.linking.blocked == ("noreply@*", "*@notifications.example", "*@vendor.lt")
    assert (config.directory.customers, config.directory.leads) == ("cmd:cat customers.csv",
                                                                    "https://crm.example.lt/leads.csv")
    assert (config.directory.refresh_minutes, config.directory.max_removed_percent) == (15.0, 25.0)
    assert config.directory.columns == {"email": "E-mail address"}


def test_a_relative_directory_source_path_is_beside_the_config(tmp_path):
    path = write(tmp_path, '[directory]\ncustomers = "crm/customers.csv"\nleads = "/srv/crm/leads.csv"\n')
    config = load_config(path)
    assert config.directory.customers == str(tmp_path / "crm" / "customers.csv")
    assert config.directory.leads == "/srv/crm/leads.csv"


@pytest.mark.parametrize("value, message", [
    ("https://crm.example:99999/x.csv", "'directory.customers' is not a URL as written (Port out of range"),
    ("https://[::1/x.csv", "'directory.customers' is not a URL as written (Invalid IPv6 URL)"),
    ("https://crm.example:abc/x.csv?key=K3Y", "'directory.customers' is not a URL as written (Port could not be cast"),
    ("https://u:pw@:443/x.csv", "'directory.customers' is not a URL as written (no host): https://:443/x.csv"),
    ("-", "'directory.customers' must be a path, an https:// URL or cmd:COMMAND, not '-'"),
])
def test_a_directory_source_that_cannot_be_read_as_written_is_a_config_error(tmp_path, value, message):
    path = write(tmp_path, f'[directory]\ncustomers = "{value}"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert message in str(exc.value) and str(path) in str(exc.value)
    assert "K3Y" not in str(exc.value) and "pw" not in str(exc.value)


def test_a_url_source_is_kept_as_written_whatever_the_case_of_its_scheme(tmp_path):
    path = write(tmp_path, '[directory]\ncustomers = "HTTPS://crm.example.lt/c.csv"\nleads = "ftp://crm.example.lt/l"\n')
    config = load_config(path)
    assert (config.directory.customers, config.directory.leads) == ("HTTPS://crm.example.lt/c.csv",
                                                                    "ftp://crm.example.lt/l")


def _as_nobody(func) -> str:
    """`func()` in a forked child that has become `nobody` (root reads everything, so a permission can only be
    tried as another user); what it raised or returned, as text."""
    import os
    import pwd

    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            outcome = f"returned {func()!r}"
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            outcome = f"{type(exc).__name__}: {exc}"
        os.write(write_end, outcome.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    return text


def test_a_system_config_this_user_may_not_read_is_a_one_line_error_not_a_traceback(tmp_path, monkeypatch):
    """The package makes /etc/hanna-sync 0750 root:hanna-sync; any other user without a config of their own
    must learn why, not get an unexpected PermissionError (or defaults: another, empty database)."""
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    etc = tmp_path / "etc-hanna-sync"
    etc.mkdir(mode=0o750)
    etc.chmod(0o750)
    (etc / "config.toml").write_text('database = "/var/lib/hanna-sync/hanna-sync.db"\n')
    tmp_path.chmod(0o755)
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG_DIR", etc)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent.invalid")  # no config of nobody's own
    said = _as_nobody(load_config)
    assert said.startswith(f"ConfigError: cannot read config {etc / 'config.toml'}: "), said
    assert "permission denied" in said and "sudo -u hanna-sync" in said and "--config" in said
