"""Where every input row went: the one reconcile identity of a conversion, per input file.

    rows read = rows kept + rows rejected (by kind) + rows filtered (by reason) + rows merged

*read*: the file's non-blank lines, less a header line (CSV/TSV); an undecodable line is a
row read and a ``malformed_line`` reject. *kept*: rows that became an item, an interaction
or a match (an MMRec text or URL row of a mapped item). *rejected*: rows the
converter could not use, each listed in ``rejects.jsonl`` with its file and line (only
the kinds in ``ROW_REJECTS`` remove a row; ``empty_text`` and the image kinds keep their
item, ``truncated_file`` is about the lines that were never read). *filtered*: rows a
filter removed on purpose, counted but not listed (the k-core filter's ``k_core_user``
and ``k_core_item``, metadata ``outside_k_core``, rows ``outside_item_map``). *merged*:
exact repeats of an interaction that were folded into its first occurrence.

Every reader feeds the same ``Ledger``: lines and headers as ``sources`` reads them,
row-removing rejects as ``Rejects`` records them, kept, filtered and merged rows from the
reader and the writer. ``DatasetWriter.finish`` checks the identity for every file before
the manifest is written; a mismatch is a bug in the converter, not bad input.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Reject kinds that remove the row they name (the others keep their item or name no row).
ROW_REJECTS = frozenset({"malformed_line", "missing_item_id", "duplicate_item", "unknown_item", "unknown_user"})


class AccountingError(AssertionError):
    """Rows of an input file that no outcome accounts for: a converter bug."""


@dataclass
class FileTally:
    lines: int = 0  # non-blank lines read
    header: int = 0  # of those, a header line
    kept: int = 0
    merged: int = 0
    rejected: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)

    @property
    def read(self) -> int:
        return self.lines - self.header

    def unaccounted(self) -> int:
        return self.read - self.kept - self.merged - sum(self.rejected.values()) - sum(self.filtered.values())

    def as_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "rejected": dict(sorted(self.rejected.items())),
                "filtered": dict(sorted(self.filtered.items())), "merged": self.merged}


class Ledger:
    """Row outcomes by input file (the path as the reader was given it)."""

    def __init__(self) -> None:
        self.files: dict[str, FileTally] = {}

    def tally(self, path: object) -> FileTally:
        key = str(path)
        if key not in self.files:  # not setdefault: it would build a FileTally on every call
            self.files[key] = FileTally()
        return self.files[key]

    def rejected(self, where: str, kind: str) -> None:
        """A reject at ``where`` ("path:line"): it removes a row when its kind does."""
        if kind in ROW_REJECTS:
            self.tally(where.rsplit(":", 1)[0]).rejected[kind] += 1

    def check(self) -> None:
        for path, t in self.files.items():
            if t.unaccounted():
                raise AccountingError(f"convert bug: {path}: {t.unaccounted()} of {t.read} rows unaccounted for "
                                      f"({t.as_dict()})")

    def report(self, roles: dict) -> dict[str, dict]:
        """Each file's outcome, keyed by its role in ``roles`` (e.g. the manifest's source:
        ``{"reviews": path}``), else by its path; in the order of ``roles``."""
        by_path = {str(v): k for k, v in roles.items() if isinstance(v, str)}
        named = {by_path.get(path, path): t.as_dict() for path, t in self.files.items()}
        order = list(roles)
        return dict(sorted(named.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))

