"""A recommender's interactions by split: the training pairs, and per-user item lists (CSR).

Reads a dataset directory (``tools/convert.py``) or an MMRec data folder (``X.inter``);
``batches`` draws training batches from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliper_dist import dirs
from cliper_dist.data import schema
from cliper_dist.data.dataset import DatasetDir
from cliper_dist.data.interactions import Interactions, read_inter
from cliper_dist.errors import UserError


@dataclass
class CSR:
    """Per-user item lists: items of user u are indices[indptr[u]:indptr[u+1]], sorted."""

    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def build(cls, user: np.ndarray, item: np.ndarray, num_users: int) -> "CSR":
        order = np.lexsort((item, user))
        indptr = np.zeros(num_users + 1, dtype=np.int64)
        np.add.at(indptr, user + 1, 1)
        return cls(np.cumsum(indptr), item[order].astype(np.int64))

    def row(self, u: int) -> np.ndarray:
        return self.indices[self.indptr[u]:self.indptr[u + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


@dataclass
class RecData:
    num_users: int
    num_items: int
    train_user: np.ndarray
    train_item: np.ndarray
    train: CSR
    valid: CSR
    test: CSR
    source: str

    @classmethod
    def from_interactions(cls, inter: Interactions, num_users: int, num_items: int, source: str) -> "RecData":
        inter.validate(num_users, num_items, source)
        tu, ti = inter.select(schema.SPLIT_TRAIN)
        csr = {s: CSR.build(*inter.select(s), num_users) for s in (schema.SPLIT_VALID, schema.SPLIT_TEST)}
        return cls(num_users, num_items, tu, ti, CSR.build(tu, ti, num_users),
                   csr[schema.SPLIT_VALID], csr[schema.SPLIT_TEST], source)

    def train_keys(self) -> np.ndarray:
        """Sorted user * num_items + item keys of the training pairs (for negative rejection)."""
        return np.sort(self.train_user * self.num_items + self.train_item)


def load_interactions(path: str | Path, num_items_hint: int | None = None) -> tuple[Interactions, int, int, str]:
    """The interactions of a dataset directory, or of an MMRec folder holding exactly one
    ``*.inter`` file, with the number of users and items and the file's name."""
    path = Path(path)
    if dirs.expect(path, (dirs.DATASET, dirs.MMREC), "--data") == dirs.DATASET:
        ds = DatasetDir.open(path)
        return read_inter(path / schema.INTERACTIONS), ds.num_users, ds.num_items, str(path / schema.INTERACTIONS)
    inters = sorted(path.glob("*.inter")) if path.is_dir() else []
    if len(inters) != 1:
        raise UserError(f"{path}: expected a dataset directory (with {schema.MANIFEST}) or an MMRec folder "
                        f"with one .inter file; found {len(inters)} .inter files")
    inter = read_inter(inters[0])
    num_users = int(inter.user.max()) + 1
    num_items = max(int(inter.item.max()) + 1, num_items_hint or 0)
    return inter, num_users, num_items, str(inters[0])


def load_rec_data(path: str | Path, num_items_hint: int | None = None) -> RecData:
    """A dataset directory, or an MMRec folder holding exactly one ``*.inter`` file."""
    return RecData.from_interactions(*load_interactions(path, num_items_hint))
