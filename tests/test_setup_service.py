"""`hanna-sync setup-service [--user]` against a temp tree, as root, with a real throwaway system user.

The system mode runs whole: useradd makes the user for real, the files get their real owners and modes,
the service user lists the mailboxes through runuser, and systemd-analyze verifies the written units. Only
systemctl is a recording script (systemd does not run here), and only the paths are the temp tree's: the
real /etc/hanna-sync, /var/lib/hanna-sync and /etc/systemd/system belong to the package's test.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from hanna_sync.admin import service
from hanna_sync.admin.service import SystemLayout, UserLayout, setup_system, setup_user
from hanna_sync.admin.setup_guide import example_config, systemd_unit
from hanna_sync.cli import cli
from hanna_sync.config import load_config
from hanna_sync.credentials.keyfile import existing_key

UNITS = service.UNIT_FILES
FAKE_SYSTEMCTL = """\
#!/bin/sh
# systemctl as far as setup-service uses it: records its argv; is-enabled answers from a state file.
echo "$*" >> "{log}"
[ "$1" = --user ] && shift
case "$1" in
  is-enabled) if [ -e "{state}" ]; then cat "{state}"; grep -qx enabled "{state}" || exit 1
              else echo disabled; exit 1; fi ;;
  enable) echo enabled > "{state}" ;;
esac
"""


def need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("setup-service's tests need root (useradd, chown); CI runs them as root")
        pytest.skip("needs root (useradd, chown)")


def run_as(user: str, command: list[str], env: dict[str, str] | None = None, stdin: str | None = None):
    """`command` as `user`, with exactly `env` when given (runuser itself resets HOME to the user's)."""
    prefix = ["env", "-i", *(f"{k}={v}" for k, v in env.items())] if env is not None else []
    return subprocess.run(["runuser", "-u", user, "--", *prefix, *command], capture_output=True, text=True, cwd="/",
                          input=stdin, timeout=120)


@pytest.fixture(scope="session")
def shared_exe(tmp_path_factory) -> str:
    """A hanna-sync other users can run: the venv's, or, when its Python is closed to them (a pyenv under
    /root), a venv of the system's Python of the same version over the same packages."""
    need_root()
    exe = str(Path(sys.executable).parent / "hanna-sync")
    if run_as("nobody", [exe, "--version"]).returncode == 0:
        return exe
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    probe = subprocess.run([system_python or "false", "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True)
    if probe.stdout.strip() != str(tuple(sys.version_info[:2])):
        pytest.fail(f"no Python other users may run with this one's packages ({sys.executable} is closed to them)")
    shim = Path(tempfile.mkdtemp(prefix="hanna-svc-venv-", dir="/tmp"))
    shim.chmod(0o755)
    subprocess.run([system_python, "-m", "venv", "--without-pip", str(shim)], check=True)
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    (next(shim.glob("lib/python3*/site-packages")) / "hanna.pth").write_text(
        f"import site; site.addsitedir({site!r})\n")
    script = shim / "bin" / "hanna-sync"
    script.write_text(f"#!{shim}/bin/python\nfrom hanna_sync.__main__ import main\nmain()\n")
    script.chmod(0o755)
    assert run_as("nobody", [str(script), "--version"]).returncode == 0
    yield str(script)
    shutil.rmtree(shim)


@pytest.fixture
def tree():
    """A temp tree other users can walk (pytest's own tmp_path is root's alone)."""
    need_root()
    top = Path(tempfile.mkdtemp(prefix="hanna-svc-", dir="/tmp"))
    top.chmod(0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def service_user():
    need_root()
    name = f"hs-test-{os.getpid() % 100000}"
    yield name
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)


def fake_command(tree: Path, name: str, script: str) -> Path:
    path = tree / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(script.format(log=tree / f"{name}.log", state=tree / f"{name}.enabled"))
    path.chmod(0o755)
    return path


def calls(tree: Path, name: str = "systemctl") -> list[str]:
    log = tree / f"{name}.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def layout(tree, service_user, shared_exe) -> SystemLayout:
    (tree / "run" / "systemd" / "system").mkdir(parents=True)  # systemd "runs"
    return SystemLayout(user=service_user, etc_dir=tree / "etc" / "hanna-sync", state_dir=tree / "var" / "hanna-sync",
                        unit_dir=tree / "etc" / "systemd" / "system", vendor_unit_dir=tree / "usr" / "systemd",
                        systemd_marker=tree / "run" / "systemd" / "system",
                        systemctl=(str(fake_command(tree, "systemctl", FAKE_SYSTEMCTL)),), exe=shared_exe)


def outcomes(report) -> list[tuple[str, str]]:
    return [(s.step, s.outcome) for s in report.steps]


def owner_mode(path: Path) -> tuple[str, str, str]:
    st = path.stat()
    import grp

    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, f"{stat.S_IMODE(st.st_mode):04o}"


def snapshot(top: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in top.rglob("*") if p.name not in skip}


def add_mailbox(exe: str, config: Path, user: str | None = None) -> None:
    command = [exe, "--config", str(config), "add-mailbox", "--user", "jonas", "--email", "jonas@example.com",
               "--provider", "custom", "--imap-host", "127.0.0.1", "--no-verify", "--password-stdin"]
    done = run_as(user, command, stdin="pw\n") if user else subprocess.run(command, capture_output=True, text=True,
                                                                            input="pw\n", timeout=120)
    assert done.returncode == 0, done.stderr


# -- system mode --------------------------------------------------------------------------------------------

def test_the_first_run_does_every_step_with_the_right_owners_modes_and_paths(layout, tree):
    report = setup_system(layout)
    assert outcomes(report) == [("user", "done"), ("state-dir", "done"), ("config-dir", "done"), ("config", "done"),
                                ("secrets-key", "done"), ("units", "done"), ("units", "done"), ("units", "done"),
                                ("daemon-reload", "done"), ("timer", "left"), ("web", "left")], report.steps
    user = pwd.getpwnam(layout.user)
    assert (user.pw_dir, user.pw_shell) == (str(layout.state_dir), "/usr/sbin/nologin")
    assert owner_mode(layout.state_dir) == (layout.user, layout.user, "0700")
    assert owner_mode(layout.etc_dir) == ("root", layout.user, "0750")
    assert owner_mode(layout.config_file) == ("root", layout.user, "0640")
    config = load_config(layout.config_file)  # the written file loads, and names exactly these two
    assert (config.database, config.secrets_key_file) == (layout.database, layout.key_file)
    assert config.secrets_file == layout.state_dir / "secrets.enc"  # the store beside the database, the key apart
    assert owner_mode(layout.key_file) == (layout.user, layout.user, "0600")
    assert len(existing_key(layout.key_file)[0]) == 32
    for name, file_name in UNITS.items():
        assert (layout.unit_dir / file_name).read_text() == systemd_unit(name, False, layout.exe)
    assert calls(tree) == ["daemon-reload", "is-enabled hanna-sync.timer"]
    assert report.timer == "not-enabled" and not report.failed
    timer = report.steps[-2].detail
    assert "no mailbox yet. Add one: sudo -u" in timer and "add-mailbox" in timer and "setup-service` again" in timer
    assert "systemctl enable --now hanna-sync.timer" in timer
    assert "systemctl enable --now hanna-sync-web.service" in report.steps[-1].detail
    assert "token create" in report.steps[-1].detail
    assert not layout.database.exists()  # nothing created in the state directory by root, not even to look


@pytest.mark.skipif(shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
                    reason="systemd-analyze not installed (CI installs systemd)")
def test_the_written_units_pass_systemd_analyze_verify(layout):
    setup_system(layout)
    units = [str(layout.unit_dir / f) for f in UNITS.values()]
    verified = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True,
                              timeout=60)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr


def test_a_second_run_keeps_everything_and_rewrites_nothing(layout, tree):
    setup_system(layout)
    before = snapshot(tree, skip=("systemctl.log",))
    again = setup_system(layout)
    assert {o for _, o in outcomes(again)} == {"kept", "left"}
    assert [s for s, o in outcomes(again) if o == "left"] == ["timer", "web"]
    assert "daemon-reload" not in dict(outcomes(again))  # nothing written, nothing to reload
    assert snapshot(tree, skip=("systemctl.log",)) == before


def test_a_hand_edited_unit_is_left_with_how_to_see_and_replace_it(layout):
    setup_system(layout)
    timer = layout.unit_dir / UNITS["timer"]
    timer.write_text(timer.read_text().replace("*:0/10", "*:0/5"))
    edited = timer.read_bytes()
    report = setup_system(layout)
    step = next(s for s in report.steps if s.path == str(timer))
    assert step.outcome == "left" and not report.failed
    assert f"setup-guide systemd --unit timer | diff -u {timer} -" in step.detail
    assert f"setup-guide systemd --unit timer | sudo tee {timer} >/dev/null" in step.detail
    assert timer.read_bytes() == edited


def test_an_existing_config_is_never_touched_and_its_key_file_is_the_one_made(layout, tree):
    layout.etc_dir.mkdir(parents=True)
    (tree / "keys").mkdir()
    text = f'database = "{tree}/data/archive.db"\n\n[secrets]\nkey_file = "{tree}/keys/the.key"\n'
    layout.config_file.write_text(text)
    layout.config_file.chmod(0o644)
    mtime = layout.config_file.stat().st_mtime_ns
    report = setup_system(layout)
    assert ("config", "kept") in outcomes(report) and not report.failed
    assert layout.config_file.read_text() == text and layout.config_file.stat().st_mtime_ns == mtime
    assert owner_mode(tree / "keys" / "the.key") == (layout.user, layout.user, "0600")
    assert not layout.key_file.exists()


def test_a_secrets_store_without_its_key_fails_the_key_step_and_nothing_after_it(layout, monkeypatch):
    layout.state_dir.mkdir(parents=True)
    (layout.state_dir / "secrets.enc").write_bytes(b"written with a key that is gone")
    monkeypatch.setattr(service, "SystemLayout", lambda: layout)
    result = CliRunner().invoke(cli, ["setup-service"], env={"HANNA_SYNC_CONFIG": None})
    assert result.exit_code == 1, result.output
    last = result.output.splitlines()[-1]
    assert last.startswith("failed") and "secrets store" in last and "restore the key file" in last
    assert "units" not in result.output and not layout.unit_dir.exists() and not layout.key_file.exists()


def test_a_state_directory_of_another_owner_and_mode_is_fixed_and_says_what_it_was(layout, service_user):
    layout.state_dir.mkdir(parents=True, mode=0o755)
    layout.state_dir.chmod(0o755)
    report = setup_system(layout)
    step = report.steps[1]
    assert (step.step, step.outcome) == ("state-dir", "done")
    assert "was 0755 root:root, now 0700" in step.detail
    assert owner_mode(layout.state_dir) == (service_user, service_user, "0700")


def test_the_timer_is_enabled_once_a_mailbox_exists_and_kept_after(layout, tree):
    setup_system(layout)
    add_mailbox(layout.exe, layout.config_file, user=layout.user)  # as the service user, as the steps say
    doctor = run_as(layout.user, [layout.exe, "--config", str(layout.config_file), "doctor"])
    assert doctor.returncode == 0, doctor.stdout  # the key in etc/, the store beside the database: all theirs
    assert f"ok     secrets key      {layout.key_file}: mode 0600" in doctor.stdout
    report = setup_system(layout)
    assert ("timer", "done") in outcomes(report) and report.timer == "enabled"
    assert calls(tree)[-2:] == ["is-enabled hanna-sync.timer", "enable --now hanna-sync.timer"]
    assert "hanna-sync-web.service" not in " ".join(calls(tree))  # the web unit is never enabled
    again = setup_system(layout)
    assert ("timer", "kept") in outcomes(again) and again.timer == "enabled"


def test_no_enable_and_a_masked_timer_leave_the_admins_choice_standing(layout, tree):
    """The package's postinst runs setup-service --no-enable on every upgrade: a timer the admin stopped comes
    back on no upgrade, and a masked one fails no upgrade."""
    setup_system(layout)
    add_mailbox(layout.exe, layout.config_file, user=layout.user)
    held = setup_system(layout, enable=False)
    timer = next(s for s in held.steps if s.step == "timer")
    assert (timer.outcome, held.timer, held.failed) == ("left", "not-enabled", False)
    assert "kept so: --no-enable" in timer.detail and "systemctl enable --now hanna-sync.timer" in timer.detail
    (tree / "systemctl.enabled").write_text("masked\n")
    masked = setup_system(layout)  # even without --no-enable: masked is the admin's word
    timer = next(s for s in masked.steps if s.step == "timer")
    assert timer.outcome == "left" and "masked" in timer.detail and not masked.failed
    assert not any(call.startswith("enable") for call in calls(tree))


def test_root_follows_no_symlink_the_service_user_planted_as_the_key(layout, tree):
    """An older config keeps the key in the state directory, which the service user owns: a link planted there
    must not make root hand another file to that user (or change its mode)."""
    layout.etc_dir.mkdir(parents=True)
    layout.config_file.write_text(f'database = "{layout.database}"\n')
    setup_system(layout)  # the key is made beside the database
    key = layout.state_dir / "secrets.key"
    assert owner_mode(key) == (layout.user, layout.user, "0600")
    victim = tree / "victim"
    victim.write_text("root's\n")
    victim.chmod(0o640)
    key.unlink()
    key.symlink_to(victim)
    os.lchown(key, pwd.getpwnam(layout.user).pw_uid, -1)
    report = setup_system(layout)
    step = next(s for s in report.steps if s.step == "secrets-key")
    assert step.outcome == "failed" and "symbolic link" in step.detail
    assert owner_mode(victim) == ("root", "root", "0640") and victim.read_text() == "root's\n"


def test_user_mode_never_changes_the_mode_of_a_directory_the_config_named(tree, monkeypatch):
    monkeypatch.setenv("HOME", str(tree / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tree / "cfg"))
    monkeypatch.delenv("HANNA_SYNC_CONFIG", raising=False)
    shared = tree / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    layout = UserLayout.from_environment()
    layout.config_file.parent.mkdir(parents=True)
    layout.config_file.write_text(f'database = "{shared}/hs.db"\n')
    layout = UserLayout(config_file=layout.config_file, unit_dir=layout.unit_dir, vendor_unit_dir=tree / "vendor",
                        systemctl=(str(fake_command(tree, "systemctl", FAKE_SYSTEMCTL)), "--user"),
                        loginctl=("true",), exe=str(Path(sys.executable).parent / "hanna-sync"))
    report = setup_user(layout)
    step = next(s for s in report.steps if s.step == "state-dir")
    assert step.outcome == "kept" and "mode 0755" in step.detail and f"chmod 700 {shared}" in step.detail
    assert owner_mode(shared)[2] == "0755"


def test_without_systemd_running_the_units_are_written_and_activation_left(layout, tree):
    layout.systemd_marker.rmdir()
    setup_system(layout)
    add_mailbox(layout.exe, layout.config_file, user=layout.user)
    (layout.unit_dir / UNITS["service"]).unlink()
    report = setup_system(layout)
    assert dict(outcomes(report))["daemon-reload"] == "left"
    timer = next(s for s in report.steps if s.step == "timer")
    assert timer.outcome == "left" and "systemd is not running here" in timer.detail
    assert (layout.unit_dir / UNITS["service"]).exists() and calls(tree) == []


def test_the_packages_units_are_kept_and_none_written(layout):
    layout.vendor_unit_dir.mkdir(parents=True)
    (layout.vendor_unit_dir / UNITS["service"]).write_text("[Service]\n")
    report = setup_system(layout)
    units = [s for s in report.steps if s.step == "units"]
    assert [(s.outcome, s.detail) for s in units] == [("kept", f"the package's units in {layout.vendor_unit_dir}")]
    assert not layout.unit_dir.exists()


def test_a_hanna_sync_under_root_or_home_is_refused_before_anything_is_made(layout):
    from dataclasses import replace

    report = setup_system(replace(layout, exe="/home/someone/.local/bin/hanna-sync"))
    assert outcomes(report) == [("user", "done"), ("executable", "failed")]
    assert "ProtectHome=yes" in report.steps[-1].detail and "pipx install" in report.steps[-1].detail
    assert not layout.state_dir.exists()


def test_json_shape(layout, monkeypatch):
    monkeypatch.setattr(service, "SystemLayout", lambda: layout)
    result = CliRunner().invoke(cli, ["setup-service", "--json"], env={"HANNA_SYNC_CONFIG": None})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"mode", "steps", "timer"} and (data["mode"], data["timer"]) == ("system", "not-enabled")
    assert all(set(s) == {"step", "outcome", "path", "detail"} for s in data["steps"])
    assert data["steps"][3] == {"step": "config", "outcome": "done", "path": str(layout.config_file),
                                "detail": data["steps"][3]["detail"]}
    human = CliRunner().invoke(cli, ["setup-service"], env={"HANNA_SYNC_CONFIG": None})
    assert human.output.splitlines()[0] == f"kept  system user {layout.user} exists (uid {pwd.getpwnam(layout.user).pw_uid})"
    assert any(line.startswith("      then run `sudo") for line in human.output.splitlines())  # continuation lines


def test_without_root_it_refuses_in_one_line_and_touches_nothing(shared_exe, tree):
    for args in (["setup-service"], ["setup-service", "--json"]):
        result = run_as("nobody", [shared_exe, *args])
        assert result.returncode == 77, result
        assert result.stderr == ("Error: setup-service sets up the system-wide service and needs root: run it with"
                                 " sudo, or use --user to set up units for yourself\n")
        assert result.stdout == ""
    # Refused before any step: even where this user could write, nothing is made.
    mine = tree / "nobody"
    mine.mkdir()
    os.chown(mine, pwd.getpwnam("nobody").pw_uid, -1)
    script = (f"from pathlib import Path; from hanna_sync.admin.service import SystemLayout, setup_system; t = Path({str(mine)!r})\n"
              "try: setup_system(SystemLayout(user='nobody', etc_dir=t / 'etc', state_dir=t / 'var', unit_dir=t / 'u',"
              " vendor_unit_dir=t / 'v', systemd_marker=t, systemctl=('true',), exe='true'))\n"
              "except Exception as exc: print(type(exc).__name__, exc.exit_code)\n")
    refused = run_as("nobody", [str(Path(shared_exe).parent / "python"), "-c", script])
    assert refused.stdout == "NoPermission 77\n", refused.stderr
    assert list(mine.iterdir()) == []


def test_user_mode_as_root_is_a_usage_error():
    need_root()
    result = CliRunner().invoke(cli, ["setup-service", "--user"], env={"HANNA_SYNC_CONFIG": None})
    assert result.exit_code == 2 and "drop --user" in result.output


def test_another_config_named_is_refused():
    need_root()
    result = CliRunner().invoke(cli, ["--config", "/tmp/elsewhere.toml", "setup-service"])
    assert result.exit_code == 2 and "leave them out" in result.output


# -- --user mode --------------------------------------------------------------------------------------------

def test_user_mode_as_a_user_without_a_user_manager_writes_everything_and_leaves_activation(tree, shared_exe):
    home = tree / "home"
    home.mkdir()
    os.chown(home, pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    result = run_as("nobody", [shared_exe, "setup-service", "--user", "--json"], env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    steps = [(s["step"], s["outcome"]) for s in data["steps"]]
    assert (data["mode"], data["timer"]) == ("user", "not-enabled")
    # The package's user units, when installed on this machine, are used instead of written ones.
    packaged = any(s["detail"].startswith("the package's units") for s in data["steps"])
    units = [("units", "kept")] if packaged else [("units", "done")] * 3
    assert steps == [("config", "done"), ("state-dir", "done"), ("secrets-key", "done"), *units,
                     ("daemon-reload", "left"), ("timer", "left"), ("web", "left"), ("linger", "left")], data
    assert "systemctl --user daemon-reload" in data["steps"][-4]["detail"]
    assert "loginctl enable-linger nobody" in data["steps"][-1]["detail"]
    config = home / ".config" / "hanna-sync" / "config.toml"
    assert config.read_text() == example_config()
    data_dir = home / ".local" / "share" / "hanna-sync"
    assert owner_mode(data_dir)[2] == "0700" and owner_mode(data_dir / "secrets.key")[::2] == ("nobody", "0600")
    for name, file_name in UNITS.items():
        unit = home / ".config" / "systemd" / "user" / file_name
        assert packaged or unit.read_text() == systemd_unit(name, True, shared_exe)
    assert not (data_dir / "hanna-sync.db").exists()
    before = snapshot(home)
    again = json.loads(run_as("nobody", [shared_exe, "setup-service", "--user", "--json"], env=env).stdout)
    assert {s["outcome"] for s in again["steps"]} == {"kept", "left"} and snapshot(home) == before


def test_user_mode_enables_the_timer_once_a_mailbox_exists_and_honours_xdg(tree, monkeypatch):
    exe = str(Path(sys.executable).parent / "hanna-sync")
    monkeypatch.setenv("HOME", str(tree / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tree / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tree / "data"))
    monkeypatch.delenv("HANNA_SYNC_CONFIG", raising=False)
    linger = fake_command(tree, "loginctl", "#!/bin/sh\necho \"$*\" >> \"{log}\"\necho Linger=yes\n")
    layout = UserLayout.from_environment()
    layout = UserLayout(config_file=layout.config_file, unit_dir=layout.unit_dir, vendor_unit_dir=tree / "vendor",
                        systemctl=(str(fake_command(tree, "systemctl", FAKE_SYSTEMCTL)), "--user"),
                        loginctl=(str(linger),), exe=exe)
    assert layout.config_file == tree / "cfg" / "hanna-sync" / "config.toml"
    first = setup_user(layout)
    assert (tree / "cfg" / "systemd" / "user" / UNITS["timer"]).exists()
    assert ("timer", "left") in outcomes(first) and ("linger", "kept") in outcomes(first)
    assert load_config(layout.config_file).database == tree / "data" / "hanna-sync" / "hanna-sync.db"
    add_mailbox(exe, layout.config_file)
    second = setup_user(layout)
    assert ("timer", "done") in outcomes(second) and second.timer == "enabled"
    assert calls(tree)[-1] == "--user enable --now hanna-sync.timer"
    assert ("timer", "kept") in outcomes(setup_user(layout))


def test_the_systemd_steps_lead_with_setup_service_and_keep_the_manual_steps_below():
    from hanna_sync.admin.setup_guide import executable, systemd_steps

    steps, user_steps = systemd_steps(False), systemd_steps(True)
    assert steps.index(f"sudo {executable()} setup-service\n") < steps.index("\n1. ") < steps.index("\n3. The units")
    assert user_steps.index(f"{executable()} setup-service --user\n") < user_steps.index("\n1. ")
    # The manual steps say what setup-service writes: the same useradd and the same two config keys.
    assert "useradd --system --user-group --home-dir /var/lib/hanna-sync --no-create-home" in steps
    layout = SystemLayout(exe="/x")
    assert f'database = "{layout.database}"' in steps and f'key_file = "{layout.key_file}"' in steps
    text = service.system_config_text(layout)
    assert f'\ndatabase = "{layout.database}"\n' in text and f'\nkey_file = "{layout.key_file}"\n' in text
