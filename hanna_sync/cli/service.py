"""`hanna-sync setup-service [--user]`: the command over hanna_sync.admin.service, one line per step."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hanna_sync.cli.options import json_option
from hanna_sync.cli.render import emit_json
from hanna_sync.errors import ExitCode, InputError

if TYPE_CHECKING:
    from hanna_sync.cli import App


@click.command("setup-service")
@click.option("--user", "user_mode", is_flag=True,
              help="Set up the user units for yourself (systemctl --user), without root.")
@click.option("--no-enable", is_flag=True,
              help="Enable no unit: a timer stopped or masked stays so (the Debian package's install and upgrade).")
@json_option
@click.pass_obj
def setup_service(app: App, user_mode: bool, no_enable: bool, as_json: bool) -> None:
    """Set up the timer-driven service: user, directories, config, key, units; safe to run again.

    System-wide (as root): the system user hanna-sync (home /var/lib/hanna-sync, no login shell),
    /var/lib/hanna-sync (0700 hanna-sync:hanna-sync), /etc/hanna-sync (0750 root:hanna-sync),
    /etc/hanna-sync/config.toml from the example with database = "/var/lib/hanna-sync/hanna-sync.db"
    and [secrets] key_file = "/etc/hanna-sync/secrets.key" (0640 root:hanna-sync), that key (0600,
    owned by hanna-sync), hanna-sync.service, hanna-sync.timer and hanna-sync-web.service in
    /etc/systemd/system (none when the Debian package's are in /usr/lib/systemd/system), daemon-reload,
    and hanna-sync.timer enabled once a mailbox exists (never with --no-enable, which the Debian
    package's postinst uses, so an upgrade never starts a timer you stopped; a masked timer is left
    masked). The web unit is never enabled by it.

    --user: ~/.config/hanna-sync/config.toml from the example, the database's directory (0700), the
    key beside the database, the user units in ~/.config/systemd/user ($XDG_CONFIG_HOME honoured),
    the timer enabled once a mailbox exists, and whether you linger (loginctl enable-linger).

    Nothing that exists is overwritten: a config or key is kept as it is (later steps follow what that
    config names), a unit edited by hand is left, with the command to see the difference. Each step
    prints one line: done, kept (already there and right), left (not done on purpose, with the command
    to do it) or failed (with the fix; the steps after it are not attempted, exit 1). Exit 0 when no
    step failed, 77 without root (nothing is touched; use --user), 2 for --user as root.

    \b
    Examples:
      sudo hanna-sync setup-service
      sudo -u hanna-sync hanna-sync --config /etc/hanna-sync/config.toml add-mailbox --email jonas@example.com
      sudo hanna-sync setup-service          again: enables the timer now that a mailbox exists
      hanna-sync setup-service --user
      hanna-sync setup-service --json | jq -r '.timer'
    """
    from hanna_sync.admin import service

    if user_mode and os.geteuid() == 0:
        raise InputError("--user sets up units for the user running it, and this is root: drop --user to set up"
                         " the system-wide service (or run it as that user)")
    layout = service.UserLayout.from_environment() if user_mode else service.SystemLayout()
    named = Path(app.config_path).expanduser() if app.config_path else None
    if named is not None and named.absolute() != layout.config_file:
        raise InputError(f"setup-service sets up {layout.config_file}, the config its units read; --config and"
                         " $HANNA_SYNC_CONFIG do not apply to it: leave them out")
    report = service.setup_user(layout, enable=not no_enable) if isinstance(layout, service.UserLayout) \
        else service.setup_system(layout, enable=not no_enable)
    if as_json:
        emit_json(report.as_dict())
    else:
        for step in report.steps:
            first, *more = step.detail.splitlines()
            click.echo(f"{step.outcome:<6}{first}")
            for line in more:
                click.echo(f"{'':<6}{line}")
    if report.failed:
        sys.exit(ExitCode.FAILURE)


COMMANDS = (setup_service,)
