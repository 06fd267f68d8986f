"""Reading a CRM export: CSV or JSON into (line, record) pairs, and which of its columns are ours.

A CRM export always has a few bad rows; one of them must not stop the other thousand, and none may
slip in half-read. A column spelled otherwise (`E-mail`) is read as the one it is, one that only
looks like a known one (`Email address`) is refused rather than ignored, and a CRM's own column
names are mapped to ours by [directory.columns] in the config.

`read_records` takes the data as bytes (a file's, standard input's, or a live source's): a source
that is not a path is read by its own code and handed over as bytes with the name errors use.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hanna_sync.errors import InputError
from hanna_sync.mail.addresses import normalise_domain

FORMATS = ("csv", "json")
# The longest CSV field read, in characters: the csv module's own default field_size_limit(), named to say it.
FIELD_LIMIT = 128 * 1024
# A line break in these is a stray quote's doing, never data (a name or a note may hold one).
SINGLE_LINE = ("id", "email", "domain")
COLUMNS = {"customer": ("id", "name", "email", "domain", "contacts"), "lead": ("id", "name", "email", "contacts")}


@dataclass(frozen=True)
class RowError:
    line: int  # CSV: line number in the file; JSON: position of the object in the list, from 1
    message: str


def source_label(path: Path | None, source_name: str | None = None) -> str:
    """What errors call the source: the name given (a URL, "cmd:..."), else the path, else standard input."""
    return source_name or (str(path) if path else "standard input")


def read_records(
    path: Path | None, fmt: str, stdin_data: bytes | None = None, *, source_name: str | None = None
) -> tuple[list[str], list[tuple[int, Any]]]:
    """The file's column names (CSV header; JSON: every key, first seen first) and (line number, record)
    pairs; a file that cannot be read at all is an error.

    Standard input comes as bytes, like a file, so that both are decoded (and refused) the same way; so
    does a live source (a URL, a command), read by its own code, with `source_name` naming it in errors.
    """
    name = source_label(path, source_name)
    try:
        data = stdin_data if path is None else path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{name} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from None
    assert data is not None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{name} is not UTF-8 (line {line}); save it as UTF-8 (CSV UTF-8 in Excel)") from None
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
        except RecursionError:
            raise InputError(f"{name} is not a CRM export: JSON nested too deep to read") from None
        except ValueError as exc:  # a number of more than 4300 digits, and the like
            raise InputError(f"{name} is not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise InputError(f"{name} must hold a JSON list of objects")
        keys = dict.fromkeys(key for record in data if isinstance(record, dict) for key in record)
        return list(keys), list(enumerate(data, start=1))
    return read_csv(text, name)


def read_csv(text: str, name: str) -> tuple[list[str], list[tuple[int, Any]]]:
    """(line where the row starts, record) pairs; a row whose field count is not the header's is a RowError.

    A quoted field may hold a line break (a note), but only if it closes where a field may end and its
    row then has the header's number of fields, with no line break in an id, email or domain: a stray
    quote would otherwise swallow every later row into one field, so a quote that runs on past its row
    stops the whole import at the line where it opened. An unnamed column with nothing in it (Excel's
    empty trailing columns) is not a column.
    """
    lines = io.StringIO(text, newline="").readlines()  # split as csv splits: \n, \r\n or \r
    delimiter = max((",", ";", "\t"), key=lines[0].count) if lines else ","
    reader = csv.reader(lines, delimiter=delimiter, strict=True)  # strict: a quote closed mid-field is an error
    header: list[str] = []
    rows: list[tuple[int, list[str] | RowError]] = []
    end = 0  # the last line of the previous row
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            end = reader.line_num
            if header and end == start and "expected after" in str(exc):
                rows.append((start, _text_after_quote(start, lines[start - 1], delimiter, header)))
                continue
            raise _csv_error(exc, name=name, lines=lines, start=start, line=end, delimiter=delimiter,
                             header=header) from None
        end = reader.line_num
        if not header:
            if not row:
                break
            header = [f.strip() for f in row]
            continue
        if not row:
            continue  # a blank line
        broken = [i for i, f in enumerate(row) if "\n" in f or "\r" in f]
        if broken and len(row) != len(header):
            raise InputError(
                f"{name}, line {start}: the quote opened in column {_column(header, broken[0])} runs on to line {end}"
                f" and leaves {len(row)} fields where the header has {len(header)}: remove the stray quote, or"
                " close the field")
        if single := [i for i in broken if _spelling(header[i]) in SINGLE_LINE]:
            raise InputError(
                f"{name}, line {start}: the quote opened in column {_column(header, single[0])} runs on to line {end},"
                " and an id, email or domain has no line break: remove the stray quote, or close the field")
        if len(row) != len(header):
            more = "more" if len(row) > len(header) else "fewer"
            hint = " (quote fields with commas)" if more == "more" else ""
            rows.append((start, RowError(start, f"{len(row)} fields: {more} than the header's {len(header)}"
                                                f" columns{hint}")))
            continue
        rows.append((start, row))
    if not header:
        raise InputError(f"{name} is empty: the first line must name the columns (id,name,email,...)")
    kept = [i for i, column in enumerate(header)
            if column or any(row[i].strip() for _, row in rows if not isinstance(row, RowError))]
    return [header[i] for i in kept], [
        (line, row if isinstance(row, RowError) else {header[i]: row[i] for i in kept}) for line, row in rows]


def _text_after_quote(start: int, line: str, delimiter: str, header: list[str]) -> RowError:
    """A one-line row with text after a field's closing quote (`"Acme" UAB`): that row's error, naming the field."""
    index, _ = _open_field(line, delimiter)
    return RowError(start, f"text after the closing quote in column {_column(header, index)}: quote the whole field,"
                       ' doubling the quotes in it ("")')


def _spelling(column: str) -> str:
    """`E-mail`, `e_mail`, ` EMAIL ` -> `email`: one column name as CRMs and people spell it."""
    return re.sub(r"[\s_.\-]+", "", column.lower())


def _misspelled(column: str, candidates: list[str]) -> list[str]:
    """The known columns a one-word unknown one is a near spelling of (`mail`, `Emails`); of more words
    (`Contact person`), its words say what it is."""
    if len(re.findall(r"[a-z0-9]+", column.lower())) > 1:
        return []
    return [known for known in candidates if difflib.SequenceMatcher(None, _spelling(column), known).ratio() >= 0.75]


def _named_after(column: str, candidates: list[str]) -> list[str]:
    """The known columns a word of an unknown one names (`Email address`, `customer_id`, `Contact persons`,
    but also `Last contact` and `First name`): only a guess until its values say so."""
    words = re.findall(r"[a-z0-9]+", column.lower())
    spelled = _spelling(column)
    return [known for known in candidates
            if known in words or known.rstrip("s") in words or (len(known) >= 4 and known in spelled)]


def _values(records: list[tuple[int, Any]], column: str) -> list[str]:
    """The column's non-empty values as text (a JSON list's items each)."""
    found: list[str] = []
    for _, record in records:
        value = record.get(column) if isinstance(record, dict) else None
        items = value if isinstance(value, list) else [value]
        found += [str(item).strip() for item in items if isinstance(item, (str, int)) and str(item).strip()]
    return found


def _holds(known: str, values: list[str]) -> bool:
    """Whether values look like what the known column holds, so that ignoring them would lose them: an
    address for email and contacts, a domain for domain. Any value could be an id, and without one no row
    imports; nothing marks a value as a name, and a file without names imports fine."""
    if known == "id":
        return bool(values)
    if known in ("email", "contacts"):
        return any("@" in value for value in values)
    if known == "domain":
        return any(_domain_like(value) for value in values)
    return False


def _domain_like(value: str) -> bool:
    domain = normalise_domain(value.removeprefix("@"))
    return domain is not None and any(c.isalpha() for c in domain.rsplit(".", 1)[-1])


def mapped_columns(names: list[str], columns: dict[str, str], entity_type: str, source: str) -> dict[str, str]:
    """The file's columns that [directory.columns] names (the CRM's name -> ours). A mapping naming a
    column the file does not have is refused, naming the mapping and the columns the file has: reading
    on without it would import every row without that value (and a snapshot would drop it)."""
    found: dict[str, str] = {}
    for ours, theirs in columns.items():
        if ours not in COLUMNS[entity_type]:
            continue  # e.g. domain, which leads do not have
        match = [n for n in names if n == theirs.strip()] or [n for n in names if _spelling(n) == _spelling(theirs)]
        if not match:
            have = ", ".join(repr(n) for n in names) or "none"
            raise InputError(f"{source}: [directory.columns] {ours} = {theirs!r} names a column the file does not"
                             f" have (its columns: {have}): correct the mapping in the config, or the export")
        found[match[0]] = ours
    return found


def resolve_columns(names: list[str], records: list[tuple[int, Any]], entity_type: str, source: str, *,
                    renamed: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """Which known column each of the file's columns is, and the columns left unread.

    Case, spaces, hyphens, dots and underscores do not matter (`E-mail` is `email`). An unknown column
    that looks like a known one the file lacks is refused with a did-you-mean, since ignoring it would
    import every row without that value: always when it is a near spelling (`mail`), and when a word of
    it names one (`Email address`) if its values look like that one's (addresses). Two columns meaning
    the same one are refused too. Other columns (`Last contact`, `First name`) are ignored and named.
    """
    known = COLUMNS[entity_type]
    renamed = renamed or {}
    mapping = {name: renamed.get(name) or _spelling(name) for name in names
               if name in renamed or _spelling(name) in known}
    given: dict[str, list[str]] = {}
    for name, column in mapping.items():
        given.setdefault(column, []).append(name)
    problems = [f"columns {' and '.join(repr(n) for n in spellings)} both mean '{column}': keep one"
                for column, spellings in given.items() if len(spellings) > 1]
    if len(names) != len(set(names)):
        problems += [f"column '{n}' is there twice: keep one" for n in dict.fromkeys(names) if names.count(n) > 1]
    ignored = [name for name in dict.fromkeys(names) if name not in mapping]
    lacking = [column for column in known if column not in given]
    for name in ignored:
        values = _values(records, name)
        guesses = [g for g in lacking if g in _misspelled(name, lacking)
                   or (g in _named_after(name, lacking) and _holds(g, values))]
        if guesses:
            meant = " or ".join(f"'{g}'" for g in guesses)
            problems.append(f"column '{name}' is not one hanna-sync reads (did you mean {meant}?): rename it,"
                            " or remove it to import without it")
    if problems:
        raise InputError(f"{source}: {'; '.join(problems)}")
    return mapping, ignored


def _join(lines: list[str], first: int, last: int) -> str:
    return "".join(lines[first - 1:last])


def _column(header: list[str], index: int) -> str:
    return f"'{header[index]}'" if index < len(header) else f"{index + 1}"


def _open_field(text: str, delimiter: str, limit: int = FIELD_LIMIT) -> tuple[int, bool]:
    """Where csv's reader stands at the end of `text` (one row's lines, from its start), at text after a
    closing quote, or at the first field longer than `limit`: that field's index, and whether it is inside
    quotes. Only for saying where a row went wrong; the csv module reads the data."""
    index = length = 0
    state = "start"  # start of a field, "plain" text, "quoted", or a "quote" seen inside quotes
    for char in text:
        if state == "quote" and char not in (delimiter, '"', "\r", "\n"):
            break  # strict csv stops here too
        if state == "quoted":
            if char == '"':
                state = "quote"
            else:
                length += 1
        elif state == "quote" and char == '"':  # a doubled quote: one quote in the text
            state, length = "quoted", length + 1
        elif char == delimiter:
            index, length, state = index + 1, 0, "start"
        elif char in "\r\n":
            state = "start"
        elif char == '"' and state == "start":
            state = "quoted"
        else:
            state, length = "plain", length + 1
        if length > limit:
            break
    return index, state == "quoted"


def _csv_error(exc: csv.Error, *, name: str, lines: list[str], start: int, line: int, delimiter: str,
               header: list[str]) -> InputError:
    """One line for a row the csv module gives up on: which line, which column, and what to do."""
    index, open_quote = _open_field(_join(lines, start, line), delimiter)
    column = _column(header, index)
    if "unexpected end of data" in str(exc):
        return InputError(f"{name}, line {start}: the quote opened in column {column} never closes (it runs"
                          " to the end of the file): remove the stray quote, or close the field")
    if "expected after" in str(exc) and line > start:
        return InputError(f"{name}, line {start}: the quote opened in column {column} runs on to line {line}, where"
                          " text follows its closing quote: remove the stray quote, or close the field")
    if "field limit" not in str(exc):
        return InputError(f"{name}, line {line}: not readable as CSV ({exc})")
    if open_quote and line > start:
        return InputError(f"{name}, line {start}: the quote opened in column {column} runs on for more than"
                          f" {FIELD_LIMIT:,} characters (to line {line}): remove the stray quote, or close the field")
    return InputError(f"{name}, line {line}, column {column}: a field longer than {FIELD_LIMIT:,} characters,"
                      " the limit for one CSV field: shorten it")


def detect_format(path: Path | None, fmt: str | None, data: bytes | None = None) -> str:
    """The format given, else the file name's; data without a name (a live source) that starts with
    '[' is JSON, other data CSV."""
    if fmt:
        return fmt
    if path is None and data is not None:
        return "json" if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[") else "csv"
    suffix = path.suffix.lower().lstrip(".") if path else ""
    if suffix not in FORMATS:
        raise InputError("cannot tell the file's format from its name: give --format csv or --format json")
    return suffix

