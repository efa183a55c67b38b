"""CTR samples: (user, item, label) per split, the sparse and dense inputs of a batch.

Labels (``LabelConfig``):

- ``explicit``: an interaction is a click when its ``rating >= threshold``, else a non-click; the
  dataset must keep the ``rating`` column, and the threshold must split its range.
- ``implicit``: every interaction is a click; each gets ``negatives`` non-clicks, items the user
  never interacted with (in any split), drawn uniformly. Valid and test negatives are drawn once
  from (seed, split); training negatives are drawn again every epoch from (seed, epoch).

The split is the dataset's own (``x_label``), the one the other tasks use, so results compare.

Inputs of a sample: sparse ``user_id``, ``item_id`` and the catalog's fields (``catalog.py``);
dense: log(1 + training interactions) of the user and of the item, then the item's feature vector
when the job has features (standardised per column over the catalog).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal

import numpy as np
import torch
from torchrec import KeyedJaggedTensor
from torchrec.datasets.utils import Batch

from cliper_dist.ctr.catalog import FieldIds
from cliper_dist.data import schema
from cliper_dist.data.interactions import Interactions
from cliper_dist.errors import UserError

ID_KEYS = ("user_id", "item_id")
SPLITS = {"train": schema.SPLIT_TRAIN, "valid": schema.SPLIT_VALID, "test": schema.SPLIT_TEST}


@dataclass
class LabelConfig:
    kind: Literal["implicit", "explicit"] = "implicit"
    threshold: float = 4.0  # explicit: rating >= threshold is a click
    negatives: int = 4  # implicit: sampled non-clicks per interaction


@dataclass
class Samples:
    user: np.ndarray  # int64
    item: np.ndarray  # int64
    label: np.ndarray  # float32, 0 or 1

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray) -> "Samples":
        return Samples(self.user[index], self.item[index], self.label[index])

    @staticmethod
    def concat(parts: list["Samples"]) -> "Samples":
        return Samples(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("user", "item", "label")))


def check_labels(inter: Interactions, labels: LabelConfig, source: str) -> None:
    """One line for labels the data cannot give."""
    if labels.kind == "explicit":
        if inter.rating is None:
            raise UserError(f"{source}: model.labels=explicit needs a rating column, and these interactions have "
                            "none (reconvert a source with ratings, or use model.labels=implicit)")
        lo, hi = float(inter.rating.min()), float(inter.rating.max())
        if not lo < labels.threshold <= hi:
            raise UserError(f"model.rating_threshold={labels.threshold:g} is outside the ratings' range "
                            f"({lo:g}..{hi:g}): every interaction would get the same label")
    elif labels.negatives < 1:
        raise UserError(f"model.negatives must be >= 1 with implicit labels; got {labels.negatives}")


class NegativeSampler:
    """Uniform items outside each user's interactions (all splits), by rejection."""

    def __init__(self, inter: Interactions, num_items: int):
        self.num_items = num_items
        self.seen = np.unique(inter.user.astype(np.int64) * num_items + inter.item)

    def draw(self, user: np.ndarray, n: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` negatives per entry of ``user``: (users repeated, items)."""
        users = np.repeat(user, n)
        items = g.integers(self.num_items, size=len(users))
        for _ in range(100):
            keys = users * self.num_items + items
            pos = np.minimum(np.searchsorted(self.seen, keys), len(self.seen) - 1)
            bad = np.flatnonzero(self.seen[pos] == keys)
            if not len(bad):
                return users, items
            items[bad] = g.integers(self.num_items, size=len(bad))
        raise UserError("negative sampling: some users interacted with (nearly) every item; use explicit labels")


@dataclass
class CtrData:
    """The samples of every split and what a batch needs to look up."""

    num_users: int
    num_items: int
    labels: LabelConfig
    seed: int
    positives: dict[str, Samples]  # per split: the interactions, labelled (explicit) or all 1 (implicit)
    sampler: NegativeSampler | None
    fields: list[FieldIds]
    item_dense: torch.Tensor | None  # (I, Df) standardised item features, or None (IDs only)
    counts: tuple[np.ndarray, np.ndarray]  # training interactions per user, per item
    source: str = ""
    _eval: dict[str, Samples] = field(default_factory=dict)

    @classmethod
    def build(cls, inter: Interactions, num_users: int, num_items: int, labels: LabelConfig, seed: int,
              fields: list[FieldIds], item_dense: torch.Tensor | None, source: str) -> "CtrData":
        check_labels(inter, labels, source)
        if item_dense is not None and item_dense.shape[0] != num_items:
            raise UserError(f"features have {item_dense.shape[0]} item rows, but the dataset has {num_items} items")
        positives = {}
        for name, split in SPLITS.items():
            mask = inter.split == split
            label = (inter.rating[mask] >= labels.threshold) if labels.kind == "explicit" else np.ones(mask.sum())
            positives[name] = Samples(inter.user[mask].astype(np.int64), inter.item[mask].astype(np.int64),
                                      label.astype(np.float32))
        train = positives["train"]
        counts = (np.bincount(train.user, minlength=num_users), np.bincount(train.item, minlength=num_items))
        sampler = NegativeSampler(inter, num_items) if labels.kind == "implicit" else None
        return cls(num_users, num_items, labels, seed, positives, sampler, fields, item_dense, counts, source)

    def _with_negatives(self, pos: Samples, g: np.random.Generator) -> Samples:
        if self.sampler is None:
            return pos
        users, items = self.sampler.draw(pos.user, self.labels.negatives, g)
        return Samples.concat([pos, Samples(users, items, np.zeros(len(users), dtype=np.float32))])

    def train_samples(self, epoch: int) -> Samples:
        """This epoch's training samples in this epoch's order (seeded by (seed, epoch))."""
        g = np.random.default_rng([self.seed, 1, epoch])
        samples = self._with_negatives(self.positives["train"], g)
        return samples.take(g.permutation(len(samples)))

    def eval_samples(self, split: str) -> Samples:
        """The valid or test samples, their negatives fixed by (seed, split)."""
        if split not in self._eval:
            g = np.random.default_rng([self.seed, 2, SPLITS[split]])
            self._eval[split] = self._with_negatives(self.positives[split], g)
        return self._eval[split]

    @property
    def sparse_keys(self) -> list[str]:
        return [*ID_KEYS, *(f.name for f in self.fields)]

    @property
    def dense_dim(self) -> int:
        return 2 + (0 if self.item_dense is None else self.item_dense.shape[1])

    def batch(self, s: Samples) -> Batch:
        """torchrec's ``Batch``: dense (B, dense_dim), the sparse KJT (one bag per key and sample),
        labels (B,)."""
        n = len(s)
        one = np.ones(n, dtype=np.int64)
        values, lengths = [s.user, s.item], [one, one]
        for f in self.fields:
            v, ln = f.bags(s.item)
            values.append(v)
            lengths.append(ln)
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=self.sparse_keys, values=torch.from_numpy(np.concatenate(values)),
                                                  lengths=torch.from_numpy(np.concatenate(lengths)).int())
        users, items = self.counts
        dense = [torch.from_numpy(np.stack([np.log1p(users[s.user]), np.log1p(items[s.item])], 1).astype(np.float32))]
        if self.item_dense is not None:
            dense.append(self.item_dense[torch.from_numpy(s.item)])
        return Batch(torch.cat(dense, 1), kjt, torch.from_numpy(s.label))


def rank_batches(samples: Samples, global_batch: int, rank: int, world_size: int) -> Iterator[Samples]:
    """This rank's share of each full global batch: rows [r b, (r + 1) b) of it, b = global / world.
    The remainder (fewer than ``global_batch`` samples) is left out: every rank steps as often, and
    the batches are the same at any world size."""
    b = global_batch // world_size
    for lo in range(0, len(samples) - global_batch + 1, global_batch):
        yield samples.take(np.arange(lo + rank * b, lo + (rank + 1) * b))


def eval_batches(samples: Samples, batch: int, rank: int, world_size: int) -> Iterator[Samples]:
    """This rank's contiguous share of ``samples`` in batches, padded (label -1) so that every rank
    runs the same number of equal batches (each lookup is a collective)."""
    per_rank = -(-len(samples) // world_size)
    steps = max(1, -(-per_rank // batch))
    index = np.arange(rank * per_rank, rank * per_rank + steps * batch)
    pad = index >= min(len(samples), (rank + 1) * per_rank)
    part = samples.take(np.where(pad, 0, index))
    part.label = np.where(pad, -1.0, part.label).astype(np.float32)
    for lo in range(0, len(index), batch):
        yield part.take(np.arange(lo, lo + batch))


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Per-column zero mean, unit variance over the catalog (no labels involved)."""
    std = x.std(0, keepdim=True)
    return (x - x.mean(0, keepdim=True)) / torch.where(std > 0, std, torch.ones_like(std))
