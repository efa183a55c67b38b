"""Reading catalog files line by line: plain or gzip, JSON or Python-literal records.

Lines are decoded one at a time, so one bad byte costs one line (a reject), not the file;
a gzip stream cut short ends the file with a reject instead of an exception.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import zlib
from collections import Counter
from pathlib import Path
from typing import IO, Iterator

from cliper_dist.convert.rejects import Rejects
from cliper_dist.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"


def open_binary(path: str | Path) -> IO[bytes]:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")


def iter_lines(path: str | Path, rejects: Rejects | None) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line; undecodable lines become rejects.

    ``rejects=None``: the file must be flawless (an id map), so a bad line is an error.
    Otherwise every non-blank line counts as read in the rejects' ledger (``accounting``).
    """
    line_no = 0
    tally = rejects.ledger.tally(path) if rejects is not None else None
    with open_binary(path) as f:
        try:
            for line_no, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    if tally is not None:
                        tally.lines += 1
                    report(rejects, "malformed_line", f"not UTF-8 ({e.reason} at byte {e.start})", f"{path}:{line_no}")
                    continue
                if text.strip():
                    if tally is not None:
                        tally.lines += 1
                    yield line_no, text
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            report(rejects, "truncated_file", f"compressed stream ends early ({e}); lines after {line_no} lost",
                   f"{path}:{line_no + 1}")


def report(rejects: Rejects | None, kind: str, reason: str, where: str) -> None:
    """A reject, or an error where the input admits none (``rejects=None``)."""
    if rejects is None:
        raise UserError(f"{where}: {kind}: {reason}")
    rejects.add(kind, reason, where)


def iter_table(path: str | Path, rejects: Rejects | None) -> Iterator[tuple[int, str, dict[str, str]]]:
    """(line number, "path:line", row) of a CSV/TSV file with a header line (tab-separated when
    the header holds a tab); rows with the wrong number of fields are rejects, and a file in
    which every row has the wrong number is an error that says so."""
    lines = iter_lines(path, rejects)
    first = next(lines, None)
    if first is None:
        return
    delimiter = "\t" if "\t" in first[1] else ","
    if rejects is not None:
        rejects.ledger.tally(path).header = 1
    header = [h.strip() for h in next(csv.reader([first[1]], delimiter=delimiter))]
    kept, wrong_widths = 0, Counter()
    for line_no, text in lines:
        where = f"{path}:{line_no}"
        row = next(csv.reader([text], delimiter=delimiter), [])
        if len(row) != len(header):
            wrong_widths[len(row)] += 1
            report(rejects, "malformed_line", f"{len(row)} fields, the header has {len(header)}", where)
            continue
        kept += 1
        yield line_no, where, dict(zip(header, row))
    if not kept and wrong_widths:
        width, _ = wrong_widths.most_common(1)[0]
        raise UserError(f"{path}: all {sum(wrong_widths.values()):,} rows were rejected: they have {width} fields "
                        f"against the {len(header)}-field header {header} (delimiter {delimiter!r})")


def parse_record(text: str) -> dict:
    """A JSON object, or a Python dict literal (Amazon 2014 metadata); ValueError otherwise."""
    try:
        record = json.loads(text)
    except ValueError:
        try:
            record = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise ValueError(f"neither JSON nor a Python literal ({e.__class__.__name__})") from None
    if not isinstance(record, dict):
        raise ValueError(f"a {type(record).__name__}, not an object")
    return record


def iter_records(path: str | Path, rejects: Rejects) -> Iterator[tuple[int, str, dict]]:
    """(line number, "path:line", record) of every line that parses to an object; the others are rejects."""
    for line_no, text in iter_lines(path, rejects):
        where = f"{path}:{line_no}"
        try:
            record = parse_record(text)
        except ValueError as e:
            rejects.add("malformed_line", str(e), where)
            continue
        yield line_no, where, record
