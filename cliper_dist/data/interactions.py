"""User-item interactions in MMRec's `.inter` layout, and the per-user split rules (MMRec's, and
leave-one-out by time for sequential recommendation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliper_dist import files
from cliper_dist.data.schema import SPLIT_NAMES, SPLIT_TEST, SPLIT_VALID
from cliper_dist.errors import UserError


OPTIONAL_COLUMNS = ("rating", "timestamp")  # kept (float64) whenever the source has them


@dataclass
class Interactions:
    """Parallel arrays, one row per (user, item) event; ``split`` holds x_label. ``rating`` and
    ``timestamp`` (seconds) are there when the source had them, else None."""

    user: np.ndarray
    item: np.ndarray
    split: np.ndarray
    rating: np.ndarray | None = None
    timestamp: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user)

    def select(self, split: int) -> tuple[np.ndarray, np.ndarray]:
        mask = self.split == split
        return self.user[mask], self.item[mask]

    def counts(self) -> dict[str, int]:
        return {name: int((self.split == s).sum()) for s, name in SPLIT_NAMES.items()}

    def validate(self, num_users: int, num_items: int, source: str) -> None:
        """One clear error for ids out of range or an empty split, before any training."""
        for name, ids, n in (("user", self.user, num_users), ("item", self.item, num_items)):
            bad = (ids < 0) | (ids >= n)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise UserError(f"{source}: {bad.sum()} {name} ids outside [0, {n}), first {ids[row]} at row {row + 1}")
        for split, count in self.counts().items():
            if count == 0:
                raise UserError(f"{source}: the {split} split is empty")


def _read_columns(path: str | Path, with_split: bool, name: str | None,
                  optional: tuple[str, ...] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One parse of an MMRec `.inter` file: the id columns (``read_inter_columns``) and those of
    ``optional`` the header names, as float64 arrays."""
    path = Path(path)
    name = name or str(path)
    if not path.is_file():
        raise UserError(f"{name}: interactions file not found")
    with path.open() as f:
        header = f.readline().rstrip("\n").split("\t")
    wanted = ("userID", "itemID", "x_label") if with_split or "x_label" in header else ("userID", "itemID")
    if not set(wanted) <= set(header):
        raise UserError(f"{name}: header must name {', '.join(wanted)} (tab-separated, MMRec .inter); got {header[:6]}")
    extra = tuple(c for c in optional if c in header)
    dtype = [(c, np.int64) for c in wanted] + [(c, np.float64) for c in extra]
    try:
        table = np.loadtxt(path, dtype=dtype, delimiter="\t", skiprows=1,
                           usecols=[header.index(c) for c in wanted + extra], ndmin=1)
    except ValueError as e:
        raise UserError(f"{name}: malformed row, ids must be integers and {', '.join(OPTIONAL_COLUMNS)} numbers "
                        f"({e})") from None
    data = np.stack([table[c] for c in wanted], axis=1) if len(table) else np.zeros((0, len(wanted)), np.int64)
    if len(wanted) == 3:
        bad = ~np.isin(data[:, 2], list(SPLIT_NAMES))
        if bad.any():
            raise UserError(f"{name}: x_label must be 0, 1 or 2; row {int(np.flatnonzero(bad)[0]) + 2} has "
                            f"{data[bad][0, 2]}")
    return data, {c: np.ascontiguousarray(table[c]) for c in extra}


def read_inter_columns(path: str | Path, with_split: bool = True, name: str | None = None) -> np.ndarray:
    """The userID, itemID and x_label columns of an MMRec `.inter` file, (n, 3) int64: tab-separated,
    a header naming them, other columns skipped. ``with_split=False``: x_label is optional,
    (n, 2) without it. ``name`` labels the file in errors (e.g. "--inter baby.inter")."""
    return _read_columns(path, with_split, name)[0]


def read_inter(path: str | Path) -> Interactions:
    """An MMRec `.inter` file with its split (x_label), and its rating and timestamp columns
    where the header names them (datasets converted before they were kept have neither)."""
    data, extra = _read_columns(path, True, None, OPTIONAL_COLUMNS)
    return Interactions(user=data[:, 0].copy(), item=data[:, 1].copy(), split=data[:, 2].copy(), **extra)


def write_inter(path: str | Path, inter: Interactions) -> None:
    """MMRec's column order: userID, itemID, [rating], [timestamp], x_label."""
    columns = [("userID", inter.user, "%d"), ("itemID", inter.item, "%d")]
    columns += [(name, getattr(inter, name), "%.15g") for name in OPTIONAL_COLUMNS if getattr(inter, name) is not None]
    columns.append(("x_label", inter.split, "%d"))
    # one float64 table: ids stay exact below 2**53 and print through %d
    rows = np.stack([np.asarray(values, dtype=np.float64 if len(columns) > 3 else np.int64)
                     for _, values, _ in columns], axis=1)
    with files.atomic_open(path, "w") as f:
        np.savetxt(f, rows, fmt=[fmt for _, _, fmt in columns], delimiter="\t",
                   header="\t".join(name for name, _, _ in columns), comments="")


def split_sizes(n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, valid, test) sizes of users with ``n`` events under MMRec's rule.

    Fewer than 10 events: n-2/1/1; otherwise valid = floor(n/10), test = floor(n/5) - floor(n/10),
    train = the rest (= ceil(0.8 n)). Checked against Amazon Baby: these sizes reproduce
    every user's 0/1/2 counts in MMRec's baby.inter (totals 118,551 / 20,559 / 21,682);
    rounding valid and test to round(0.1 n) each does not (117,544 / 21,624 / 21,624).
    Users with fewer than 3 events keep everything in train: they cannot be split.
    """
    n = np.asarray(n, dtype=np.int64)
    small = n < 10
    valid = np.where(small, 1, n // 10)
    test = np.where(small, 1, n // 5 - n // 10)
    unsplittable = n < 3
    valid, test = np.where(unsplittable, 0, valid), np.where(unsplittable, 0, test)
    return n - valid - test, valid, test


def split_per_user(user: np.ndarray, item: np.ndarray, seed: int,
                   timestamp: np.ndarray | None = None, leave_one_out: bool = False) -> Interactions:
    """Label each event 0/1/2 per user; row order is kept.

    Random (default): each user's events in a seeded random order, sized by ``split_sizes``.
    Temporal (``timestamp`` given): oldest events train, newest test; ties keep row order.
    ``leave_one_out`` (with ``timestamp``): the user's last event is test, the one before
    valid, the rest train (users with fewer than 3 events train on all of them). Vectorised,
    so millions of rows take seconds.
    """
    user, item = np.asarray(user, dtype=np.int64), np.asarray(item, dtype=np.int64)
    if len(user) == 0:
        return Interactions(user=user, item=item, split=np.zeros(0, dtype=np.int64))
    rows = np.arange(len(user))
    key = np.random.default_rng(seed).permutation(len(user)) if timestamp is None else np.asarray(timestamp)
    order = np.lexsort((rows, key, user))
    sorted_user = user[order]
    first = np.ones(len(user), dtype=bool)
    first[1:] = sorted_user[1:] != sorted_user[:-1]
    rank = rows - np.maximum.accumulate(np.where(first, rows, 0))
    counts = np.bincount(user)[sorted_user]
    if leave_one_out:
        n_valid = (counts >= 3).astype(np.int64)
        n_train = counts - 2 * n_valid
    else:
        n_train, n_valid, _ = split_sizes(counts)
    labels = np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, SPLIT_VALID, SPLIT_TEST))
    split = np.empty(len(user), dtype=np.int64)
    split[order] = labels
    return Interactions(user=user, item=item, split=split,
                        timestamp=None if timestamp is None else np.asarray(timestamp, dtype=np.float64))
