"""Everything the commands print: JSON, tables that fit 80 columns, progress bars, journald lines, test stages.

Kept in one place so that every command renders alike; the core returns data and never formats for a terminal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from hanna_sync.diagnose import Report, Stage

Reporter = Callable[[str, int, int], None]


def under_journal(stream: Any) -> bool:
    """Whether this stream is connected to journald (systemd sets JOURNAL_STREAM to its device:inode)."""
    import os

    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return os.environ.get("JOURNAL_STREAM", "") == f"{st.st_dev}:{st.st_ino}"


class JournalFormatter(logging.Formatter):
    """`<3>message`: journald reads the syslog priority from the prefix, so levels survive."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITIES.get(record.levelno, 6)}>{super().format(record)}"


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def console() -> Console:
    from rich.console import Console

    return Console()


def console_err() -> Console:
    from rich.console import Console

    return Console(stderr=True)


SHORT_WORD = 16  # cell words up to this long are kept whole when the terminal has room: rule names, dates


def table(title: str | None, columns: list[str], rows: list[list[Any]], *, below: tuple[str, ...] = ()) -> None:
    """A table that stays readable on an 80-column terminal: a header breaks only between its words,
    and the long free-text columns named in `below` move under the table, one entry per row, when the
    table would not fit with them (a 300-character error folded into a 20-column cell is 15 lines)."""
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    out = console()
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    moved = [i for i, name in enumerate(columns) if name in below] if _width(columns, cells) > out.width else []
    kept = [i for i in range(len(columns)) if i not in moved]

    def least(i: int, words_of_cells: bool) -> int:
        """A column's least width: its header's longest word and, when there is room, its cells' longest
        word of up to SHORT_WORD characters, so "customer_contact" or "2025-03-06" is never cut in two
        (a longer one, an email address, folds anyway)."""
        words = columns[i].split() + ([w for row in cells for w in row[i].split()] if words_of_cells else [])
        return max([0] + [n for w in words if (n := cell_len(w)) <= SHORT_WORD])

    def build(compact: bool, words_of_cells: bool) -> Table:
        # Compact: no vertical rules, for a table too wide for its borders (one column less of text per rule).
        t = Table(title=title, show_lines=False, box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
                  pad_edge=not compact)
        for i in kept:
            t.add_column(columns[i], overflow="fold", min_width=least(i, words_of_cells))
        for row in cells:
            # Text, not str: a subject like "[/bold]" or "[link=...]" is what the sender wrote, not rich markup.
            t.add_row(*(Text(row[i]) for i in kept))
        return t

    def cropped(t: Table) -> bool:
        """Whether rich had to cut the table's right edge off: it is wider than the terminal."""
        with out.capture() as capture:
            out.print(t)
        lines = Text.from_ansi(capture.get()).plain.splitlines()
        ruled = [line for line in lines if line[:1] in "┏┃┡│└"]
        if ruled:
            return any(line.rstrip()[-1:] not in "┓┃┩│┘" for line in ruled)
        return any(cell_len(line.rstrip()) >= out.width for line in lines)

    # The roomiest form that fits: whole short words and rules, then without rules, then words cut anywhere.
    for compact, words_of_cells in ((False, True), (True, True), (True, False)):
        t = build(compact, words_of_cells)
        if not cropped(t):
            break
    out.print(t)
    for row in cells:
        for i in moved:
            if row[i]:
                out.print(Text(f"{columns[i]} {row[0]}: {row[i]}"))


def _width(columns: list[str], cells: list[list[str]]) -> int:
    """The width a table needs to show every cell on one line: rich's box adds 3 per column and 1."""
    from rich.cells import cell_len

    return 1 + sum(3 + max([cell_len(columns[i])] + [cell_len(line) for row in cells for line in row[i].splitlines()])
                   for i in range(len(columns)))


def progress_reporter(enabled: bool) -> tuple[Progress, Reporter] | tuple[None, None]:
    """A rich progress bar on a terminal; None elsewhere (the log lines tell the story there)."""
    if not enabled:
        return None, None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console_err(), transient=True)
    tasks: dict[str, Any] = {}

    def report(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=done, total=total)

    return bar, report


def short_date(date_utc: str | None) -> str:
    return (date_utc or "")[:16].replace("T", " ")


def stage_line(stage: Stage) -> str:
    """One plain line per stage (for logs and pipes), the fix indented below a failure."""
    verdict = "skipped" if stage.skipped else "ok" if stage.ok else "FAILED"
    seconds = "" if stage.skipped else f"{stage.seconds:.2f}s"
    head = f"{stage.protocol.upper():<4} {stage.stage:<12} {verdict:<8}{seconds:>6}  "
    line = head + stage.detail
    if stage.hint:
        line += f"\n{'':<{len(head)}}{'note' if stage.ok else 'fix'}: {stage.hint}"
    return line


def stage_table(report: Report) -> Table:
    """The terminal view: a rich table, the fix under each failure (server texts never read as markup)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(f"hanna-sync test: {report.mailbox.email}"))
    for column in ("", "Stage", "Result", "Time"):
        t.add_column(column, no_wrap=True, justify="right" if column == "Time" else "left")
    t.add_column("Detail", overflow="fold")
    for s in report.stages:
        verdict = (Text("skipped", style="dim") if s.skipped else Text("ok", style="green") if s.ok
                   else Text("FAILED", style="bold red"))
        detail = Text(s.detail)
        if s.hint:
            detail.append("\nFix: " if not s.ok else "\nNote: ", style="bold")
            detail.append(s.hint, style="yellow")
        t.add_row(s.protocol.upper(), s.stage, verdict, "" if s.skipped else f"{s.seconds:.2f}s", detail)
    return t
