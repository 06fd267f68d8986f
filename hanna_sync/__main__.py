"""`hanna-sync` (the console script) and `python -m hanna_sync`: the CLI group with the commands of the
packages beside cli/ (web/'s serve), which only this top floor may join."""

from hanna_sync.cli import add_command, cli
from hanna_sync.web.command import serve


def main() -> None:
    add_command(serve)
    cli(prog_name="hanna-sync")


if __name__ == "__main__":
    main()
