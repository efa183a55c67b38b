"""User-item interactions in MMRec's `.inter` layout, and MMRec's per-user split rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliper_dist.data.schema import SPLIT_NAMES, SPLIT_TEST, SPLIT_VALID
from cliper_dist.errors import UserError


@dataclass
class Interactions:
    """Parallel int64 arrays, one row per (user, item) event; ``split`` holds x_label."""

    user: np.ndarray
    item: np.ndarray
    split: np.ndarray

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


def read_inter(path: str | Path) -> Interactions:
    """Read an MMRec `.inter` file (tab-separated with a header naming userID, itemID, x_label)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"interactions file not found: {path}")
    with path.open() as f:
        header = f.readline().rstrip("\n").split("\t")
    try:
        cols = [header.index(c) for c in ("userID", "itemID", "x_label")]
    except ValueError:
        raise UserError(f"{path}: header must name userID, itemID and x_label; got {header}") from None
    try:
        data = np.loadtxt(path, dtype=np.int64, delimiter="\t", skiprows=1, usecols=cols, ndmin=2)
    except ValueError as e:
        raise UserError(f"{path}: malformed row ({e})") from None
    bad = ~np.isin(data[:, 2], list(SPLIT_NAMES))
    if bad.any():
        raise UserError(f"{path}: x_label must be 0, 1 or 2; row {int(np.flatnonzero(bad)[0]) + 2} has {data[bad][0, 2]}")
    return Interactions(user=data[:, 0].copy(), item=data[:, 1].copy(), split=data[:, 2].copy())


def write_inter(path: str | Path, inter: Interactions) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    rows = np.stack([inter.user, inter.item, inter.split], axis=1)
    np.savetxt(tmp, rows, fmt="%d", delimiter="\t", header="userID\titemID\tx_label", comments="")
    tmp.replace(path)


def split_per_user(user: np.ndarray, item: np.ndarray, seed: int) -> Interactions:
    """MMRec's rule: shuffle each user's events; under 10 events n-2/1/1, else 80/10/10.

    Users with fewer than 3 events keep everything in train (they cannot be split).
    """
    rng = np.random.default_rng(seed)
    split = np.zeros(len(user), dtype=np.int64)
    order = np.argsort(user, kind="stable")
    bounds = np.flatnonzero(np.diff(user[order])) + 1
    for rows in np.split(order, bounds):
        n = len(rows)
        if n < 3:
            continue
        rows = rows[rng.permutation(n)]
        if n < 10:
            n_valid = n_test = 1
        else:
            n_valid = n_test = int(round(n * 0.1))
        n_train = n - n_valid - n_test
        split[rows[n_train:n_train + n_valid]] = SPLIT_VALID
        split[rows[n_train + n_valid:]] = SPLIT_TEST
    return Interactions(user=user.astype(np.int64), item=item.astype(np.int64), split=split)
