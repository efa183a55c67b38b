"""Interactions as read from a source, streamed into integer arrays before any index exists.

Rows keep their source order and line number, so a later reject (an unknown item) still
names its file and line, and MMRec files come out row for row as they went in.
"""

from __future__ import annotations

import itertools
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliper_dist.convert import ids
from cliper_dist.convert.ids import IdCodes
from cliper_dist.convert.rejects import Rejects
from cliper_dist.convert.sources import iter_table
from cliper_dist.errors import UserError

USER_COLUMNS = ("user_id", "userID")
ITEM_COLUMNS = ("item_id", "itemID")


@dataclass
class SourceInteractions:
    """One row per event: ``user``/``item`` are codes of ``user_ids``/``item_ids``.

    ``fixed_users``: the user code already is the user index (MMRec ids), not a first-seen code.
    ``timestamp`` and ``rating`` are None where the source has no such column.
    """

    path: str
    user: np.ndarray
    item: np.ndarray
    line: np.ndarray
    split: np.ndarray | None
    timestamp: np.ndarray | None
    user_ids: IdCodes
    item_ids: IdCodes
    fixed_users: bool = False
    rating: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, mask: np.ndarray) -> "SourceInteractions":
        pick = (lambda a: None if a is None else a[mask])
        return SourceInteractions(self.path, self.user[mask], self.item[mask], self.line[mask], pick(self.split),
                                  pick(self.timestamp), self.user_ids, self.item_ids, self.fixed_users,
                                  pick(self.rating))

    def repeats(self) -> np.ndarray:
        """Mask of the rows that exactly repeat an earlier row: same user, item and, where the
        source has them, timestamp, rating and x_label. The first occurrence is not marked."""
        n = len(self)
        if n < 2:
            return np.zeros(n, dtype=bool)
        keys = [a for a in (self.user, self.item, self.timestamp, self.rating, self.split) if a is not None]
        order = np.lexsort(keys[::-1])  # stable: equal rows stay in source order
        same = np.ones(n - 1, dtype=bool)
        for key in keys:
            ordered = key[order]
            same &= ordered[1:] == ordered[:-1]
        repeat = np.zeros(n, dtype=bool)
        repeat[order[1:]] = same
        return repeat


class InteractionBuilder:
    """Appends rows into compact arrays, coding string ids in order of first appearance a
    chunk of rows at a time (no Python object per id: ``IdCodes``)."""

    CHUNK = ids.CHUNK  # rows whose string ids wait to be coded together

    def __init__(self, path: str | Path, with_split: bool, with_timestamp: bool, with_rating: bool = False):
        self.path = str(path)
        self._cols = {"user": array("q"), "item": array("q"), "line": array("q")}
        self._split = array("b") if with_split else None
        self._timestamp = array("d") if with_timestamp else None
        self._rating = array("d") if with_rating else None
        self.user_codes, self.item_codes = IdCodes(), IdCodes()
        self._users: list[str] = []
        self._items: list[str] = []

    def add(self, user: str, item: str, line: int, split: int | None = None, timestamp: float | None = None,
            rating: float | None = None) -> None:
        self._users.append(user)
        self._items.append(item)
        self._cols["line"].append(line)
        if self._split is not None:
            self._split.append(split)
        if self._timestamp is not None:
            self._timestamp.append(timestamp)
        if self._rating is not None:
            self._rating.append(rating)
        if len(self._users) >= self.CHUNK:
            self._code()

    def _code(self) -> None:
        self._cols["user"].frombytes(self.user_codes.code(self._users).tobytes())
        self._cols["item"].frombytes(self.item_codes.code(self._items).tobytes())
        self._users, self._items = [], []

    def build(self) -> SourceInteractions:
        self._code()
        arr = {k: np.frombuffer(v, dtype=np.int64).copy() if len(v) else np.zeros(0, np.int64)
               for k, v in self._cols.items()}
        split = None if self._split is None else np.asarray(self._split, dtype=np.int64)
        timestamp, rating = (None if a is None else np.asarray(a, dtype=np.float64)
                             for a in (self._timestamp, self._rating))
        return SourceInteractions(self.path, arr["user"], arr["item"], arr["line"], split, timestamp,
                                  self.user_codes, self.item_codes, rating=rating)


def read_table(path: str | Path, rejects: Rejects) -> SourceInteractions:
    """CSV/TSV with a header ``user_id,item_id[,timestamp][,rating][,x_label]``, or an MMRec `.inter`.

    Tab-separated when the header holds a tab. MMRec's names (userID, itemID) and RecBole's
    ``name:type`` headers are accepted; x_label (0/1/2), timestamp and rating are kept when
    present (a value that is not a number is a ``malformed_line`` reject).
    """
    rows = iter_table(path, rejects)
    first = next(rows, None)
    if first is None:
        raise UserError(f"{path}: no interactions (a header line and rows are required)")
    header = {name.split(":")[0]: name for name in first[2]}  # RecBole headers: "userID:token"
    user_col = next((header[c] for c in USER_COLUMNS if c in header), None)
    item_col = next((header[c] for c in ITEM_COLUMNS if c in header), None)
    if user_col is None or item_col is None:
        raise UserError(f"{path}: header must name user_id and item_id (or userID and itemID); got {list(first[2])}")
    split_col, time_col, rating_col = header.get("x_label"), header.get("timestamp"), header.get("rating")
    builder = InteractionBuilder(path, split_col is not None, time_col is not None, rating_col is not None)
    for line_no, where, row in itertools.chain([first], rows):
        user, item = row[user_col].strip(), row[item_col].strip()
        split = row[split_col].strip() if split_col is not None else None
        if not user or not item:
            rejects.add("malformed_line", "empty user or item id", where)
            continue
        if split is not None and split not in ("0", "1", "2"):
            rejects.add("malformed_line", f"x_label must be 0, 1 or 2, got {split!r}", where)
            continue
        numbers = {}
        for name, col in (("timestamp", time_col), ("rating", rating_col)):
            if col is not None:
                try:
                    numbers[name] = float(row[col])
                except ValueError:
                    rejects.add("malformed_line", f"{name} {row[col]!r} is not a number", where)
                    break
        else:
            builder.add(user, item, line_no, None if split is None else int(split), **numbers)
    return builder.build()


KEPT, USER_BELOW_K, ITEM_BELOW_K = 0, 1, 2  # why a row left the k-core


def k_core(user: np.ndarray, item: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows left after repeatedly dropping users and items with fewer than k rows: (mask,
    why) where ``why`` is KEPT, or why the row left in the round it left: USER_BELOW_K when
    its user had fewer than k rows then, else ITEM_BELOW_K."""
    keep = np.ones(len(user), dtype=bool)
    why = np.zeros(len(user), dtype=np.int8)
    if k <= 1 or len(user) == 0:
        return keep, why
    while True:
        user_n = np.bincount(user[keep], minlength=int(user.max()) + 1)
        item_n = np.bincount(item[keep], minlength=int(item.max()) + 1)
        user_low, item_low = keep & (user_n[user] < k), keep & (item_n[item] < k)
        drop = user_low | item_low
        if not drop.any():
            return keep, why
        why[user_low] = USER_BELOW_K
        why[item_low & ~user_low] = ITEM_BELOW_K
        keep &= ~drop

