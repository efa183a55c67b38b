"""Inputs a conversion left out or degraded: counted by kind, listed with where and why.

Nothing is dropped silently: every reject becomes one line of ``rejects.jsonl``
({"kind", "id", "where", "reason"}) and one count in the manifest. In strict mode the
first reject is a ``UserError`` naming the file and line instead.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import IO

from cliper_dist import files
from cliper_dist.convert.accounting import Ledger
from cliper_dist.errors import UserError


def reject_row(kind: str, reason: str, where: str, ident: str | None = None, cause: str | None = None) -> dict:
    """A reject's record; ``cause``, when given, is the reason's short form that tallies group by."""
    row = {"kind": kind, "id": ident, "where": where, "reason": reason}
    return row if cause is None else {**row, "cause": cause}


def strict_error(row: dict) -> UserError:
    return UserError(f"{row['where']}: {row['kind']}: {row['reason']} (drop --strict to count and list such inputs)")


class Rejects:
    """Streams reject rows to files as they arrive, so memory stays flat for any number.

    Rows from the readers (in input order) and rows from shard work (in shard order, added
    when the dataset is assembled) go to separate files and are joined by ``write``: the
    rejects file is then the same whatever the number of workers, ranks or interruptions.
    ``out_dir=None`` counts (and in strict mode raises) without writing: the ranks other
    than 0 read the same inputs, and only rank 0 lists what they reject. ``ledger`` is the
    conversion's row accounting (``accounting``): a reject that removes a row counts there.
    """

    def __init__(self, out_dir: str | Path | None, strict: bool):
        self.strict = strict
        self.counts: Counter = Counter()
        self.ledger = Ledger()
        self.first: dict | None = None  # the first reject, for an error that has to name one
        self._paths = () if out_dir is None else (Path(out_dir) / ".rejects-inputs.tmp",
                                                  Path(out_dir) / ".rejects-shards.tmp")
        self._files: tuple[IO[str], ...] = tuple(open(p, "w", encoding="utf-8") for p in self._paths)

    def add(self, kind: str, reason: str, where: str, ident: str | None = None) -> None:
        self._add(reject_row(kind, reason, where, ident), 0)

    def add_from_shard(self, rows: list[dict]) -> None:
        for row in rows:
            self._add(row, 1)

    def _add(self, row: dict, stream: int) -> None:
        if self.strict:
            raise strict_error(row)
        self.counts[row["kind"]] += 1
        self.ledger.rejected(row["where"], row["kind"])
        self.first = self.first or row
        if self._files:
            self._files[stream].write(json.dumps(row, ensure_ascii=False) + "\n")

    def write(self, path: str | Path) -> None:
        """Join both streams into ``path`` (atomically) and remove them."""
        self.close()
        with files.atomic_open(path, "wb") as out:
            for part in self._paths:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        for part in self._paths:
            part.unlink()

    def close(self) -> None:
        for f in self._files:
            f.close()
