from __future__ import annotations

from pathlib import Path

import pytest

from hanna_sync.config import Config, load_config
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
    assert config.scan.concurrency == 4


def test_systemd_state_directory_is_the_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert load_config().database == tmp_path / "state" / "hanna-sync.db"


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
    for key, value in _SCHEMA.items():
        if isinstance(value, dict):
            assert f"[{key}]" in text
            for sub in value:
                assert f"{sub} =" in text, f"{key}.{sub} undocumented"
        else:
            assert f"{key} =" in text, f"{key} undocumented"


def test_values_and_relative_paths(tmp_path):
    path = write(tmp_path, """
database = "data/archive.db"
own_domains = ["Imone.LT", "žalgiris.lt"]
free_mail_domains = ["zebra.lt"]
[secrets]
key_file = "keys/k"
[scan]
concurrency = 8
max_letter_size_mb = 10
[network]
timeout = 5
""")
    config = load_config(path)
    assert config.database == tmp_path / "data" / "archive.db"
    assert config.own_domains == ("imone.lt", "xn--algiris-cxb.lt")
    assert config.free_mail_domains == ("zebra.lt",)
    assert config.secrets_key_file == tmp_path / "keys" / "k"
    assert config.scan.concurrency == 8
    assert config.max_letter_bytes == 10 * 1024 * 1024
    assert config.network.timeout == 5.0


@pytest.mark.parametrize("text, message", [
    ('databse = "x.db"', "unknown key 'databse' (did you mean 'database'?)"),
    ('[scan]\nconcurency = 2', "unknown key 'scan.concurency' (did you mean 'scan.concurrency'?)"),
    ('[scan]\nconcurrency = "4"', "'scan.concurrency' must be a whole number >= 1, not '4'"),
    ('[scan]\nconcurrency = true', "'scan.concurrency' must be a whole number >= 1, not True"),
    ('[scan]\nconcurrency = 0', "'scan.concurrency' must be >= 1, not 0"),
    ('[network]\ntimeout = -1', "'network.timeout' must be > 0"),
    ('own_domains = "acme.lt"', "'own_domains' must be a list of domain names"),
    ('own_domains = ["not a domain"]', "'own_domains' must be a list of domain names; 'not a domain' is not one"),
    ('log_level = "loud"', "'log_level' must be one of debug, info, warning, error"),
    ('[secrets]\nstore = "vault"', "'secrets.store' must be \"file\" or \"system\""),
    ('scan = 3', "'scan' must be a table"),
    ('database = ', "not valid TOML"),
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
