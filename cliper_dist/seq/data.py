"""Users' item sequences in time order, and the training batches.

A dataset converted with ``split=loo`` (``data/interactions.split_per_user``) holds out each
user's last item by time (test) and the one before (valid); the rest trains, in time order.
A training example is a slice of one user's training items in time order, in one of two forms
(``model.train_examples``):

- ``window`` (the SASRec paper's): one per user, its last L+1 items; each of the first L predicts
  the next, so every position is a target;
- ``prefix`` (RecBole's and GRU4Rec's): one per training item but each user's first, the up to L
  items before it as input and it the only target, read at the last position.

Each target comes at most once an epoch: ``prefix`` every training item but a user's first,
``window`` only those among a user's last L+1. Every rank builds the same batches: a seeded
permutation per epoch of the examples, cut into global batches; rank r takes its contiguous
share, and negatives are drawn for the whole global batch from (seed, epoch, step) before
slicing, so the batches and negatives are the same at any world size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cliper_dist.data.interactions import Interactions
from cliper_dist.data.recdata import load_interactions
from cliper_dist.data.schema import SPLIT_NAMES, SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID
from cliper_dist.errors import UserError

Examples = Literal["window", "prefix"]


@dataclass
class Sequences:
    """Per-user training items in time order (``items[indptr[u]:indptr[u+1]]``) and the held-out
    valid/test targets (-1: none)."""

    num_items: int
    indptr: np.ndarray
    items: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @classmethod
    def from_interactions(cls, inter: Interactions, num_users: int, num_items: int, source: str) -> "Sequences":
        """Each user's training items ordered by time (ties keep the file's order); at most one
        valid and one test item per user, as ``split=loo`` makes them."""
        if inter.timestamp is None:
            raise UserError(f"{source}: no timestamp column; sequential recommendation orders each user's items "
                            f"by time. Convert from a source with timestamps (Amazon reviews, or a CSV/TSV or MMRec "
                            f".inter with a timestamp column) with split=loo (tools/convert.py: --split loo)")
        targets = {}
        for split in (SPLIT_VALID, SPLIT_TEST):
            mask = inter.split == split
            per_user = np.bincount(inter.user[mask], minlength=num_users)
            if (per_user > 1).any():
                u = int(np.flatnonzero(per_user > 1)[0])
                raise UserError(f"{source}: user {u} has {per_user[u]} {SPLIT_NAMES[split]} interactions; sequential "
                                f"recommendation holds out one per user: convert with split=loo "
                                f"(tools/convert.py: --split loo)")
            targets[split] = np.full(num_users, -1, dtype=np.int64)
            targets[split][inter.user[mask]] = inter.item[mask]
        train = inter.split == SPLIT_TRAIN
        user, item, time = inter.user[train], inter.item[train], inter.timestamp[train]
        order = np.lexsort((np.arange(len(user)), time, user))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=num_users))])
        return cls(num_items, indptr, item[order].astype(np.int64), targets[SPLIT_VALID], targets[SPLIT_TEST])

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    def row(self, u: int) -> np.ndarray:
        return self.items[self.indptr[u]:self.indptr[u + 1]]

    @cached_property
    def owners(self) -> np.ndarray:
        """The user of each training item (``items``' parallel array)."""
        return np.repeat(np.arange(self.num_users), np.diff(self.indptr))

    @cached_property
    def trained_pairs(self) -> np.ndarray:
        """Sorted user * num_items + item of every training interaction."""
        return np.sort(_pair_keys(self.owners, self.items, self.num_items))

    def history(self, with_valid: bool, with_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, items) of what each user has seen before its valid target (``with_valid``: before
        its test target; ``with_test`` too: everything, the input of a next-item recommendation)."""
        indptr, items = self.indptr, self.items
        for held_out, add in ((self.valid, with_valid), (self.test, with_test)):
            if not add:
                continue
            has = held_out >= 0
            # the held-out item goes after the user's other items: insert it at the row's end
            items = np.insert(items, indptr[1:][has], held_out[has])
            indptr = np.concatenate([[0], np.cumsum(np.diff(indptr) + has)])
        return indptr, items


def load_sequences(path: str | Path) -> Sequences:
    """A dataset directory (or MMRec folder) as sequences (``Sequences.from_interactions``)."""
    return Sequences.from_interactions(*load_interactions(path))


@dataclass
class Batch:
    """One rank's share of a global batch (possibly no example, in an epoch's last batch)."""

    inputs: torch.Tensor  # jagged input items, example-major, oldest first
    targets: torch.Tensor  # the next item of each target position
    negatives: torch.Tensor  # a sampled item per target
    lengths: torch.Tensor  # input positions per example
    counts: tuple[int, ...]  # targets of each rank's share (every rank knows all: no collective asks)
    last_only: bool = False  # prefix examples: an example's last position is its only target

    @property
    def total(self) -> int:
        """Targets in the global batch: the loss is a mean over them."""
        return sum(self.counts)

    def scored(self, outputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The encoder's (left-padded) ``outputs`` at the target positions, in ``targets``' order."""
        return outputs[:, -1] if self.last_only else outputs[mask]


def _pair_keys(user: np.ndarray, item: np.ndarray, num_items: int) -> np.ndarray:
    return user.astype(np.int64) * num_items + item


def sample_negatives(seqs: Sequences, users: np.ndarray, g: np.random.Generator) -> np.ndarray:
    """An item per user in ``users`` that the user never trained on (uniform; resampled until so)."""
    seen = seqs.trained_pairs
    out = g.integers(0, seqs.num_items, len(users))
    for _ in range(100):
        bad = np.isin(_pair_keys(users, out, seqs.num_items), seen)
        if not bad.any():
            return out
        out[bad] = g.integers(0, seqs.num_items, int(bad.sum()))
    return out  # a user who trained on almost every item keeps a few positives as negatives


def training_examples(seqs: Sequences, max_len: int, examples: Examples) -> tuple[np.ndarray, np.ndarray]:
    """An epoch's examples in user then time order, as slices [start, end) of ``seqs.items``: the
    inputs are ``items[start:end-1]``, the targets the items after each (``window``) or the last
    (``prefix``)."""
    if examples == "window":  # a user's last L+1 items give L targets
        positions = np.minimum(np.diff(seqs.indptr), max_len + 1) - 1
        end = seqs.indptr[1:][positions >= 1]
        return end - positions[positions >= 1] - 1, end
    target = np.flatnonzero(np.arange(len(seqs.items)) > seqs.indptr[seqs.owners])  # all but a user's first
    return np.maximum(seqs.indptr[seqs.owners[target]], target - max_len), target + 1


def train_batches(seqs: Sequences, max_len: int, batch_size: int, epoch: int, seed: int, rank: int,
                  world_size: int, negatives: bool = True, examples: Examples = "window"):
    """This rank's batches of one epoch (a generator); the global batch is ``batch_size`` examples.
    ``negatives=False`` (the full softmax needs none): the batches' negatives are empty."""
    start, end = training_examples(seqs, max_len, examples)
    order = np.random.default_rng([seed, epoch]).permutation(len(start))
    start, end = start[order], end[order]
    last_only = examples == "prefix"
    per_rank = -(-batch_size // world_size)
    empty = np.zeros(0, dtype=np.int64)
    for step, first in enumerate(range(0, len(start), batch_size)):
        s, e = start[first:first + batch_size], end[first:first + batch_size]
        n = e - s - 1  # input positions per example
        targets_per = np.ones_like(n) if last_only else n
        rng = np.random.default_rng([seed, epoch, step])
        drawn = sample_negatives(seqs, np.repeat(seqs.owners[e - 1], targets_per), rng) if negatives else empty
        cuts = np.minimum(np.arange(world_size + 1) * per_rank, len(s))
        counts = tuple(int(targets_per[a:b].sum()) for a, b in zip(cuts[:-1], cuts[1:]))
        lo, hi = cuts[rank], cuts[rank + 1]
        before = int(targets_per[:lo].sum())
        slices = [seqs.items[a:b] for a, b in zip(s[lo:hi], e[lo:hi])]
        inputs = np.concatenate([x[:-1] for x in slices]) if slices else empty
        targets = np.concatenate([x[-1:] if last_only else x[1:] for x in slices]) if slices else empty
        yield Batch(torch.from_numpy(inputs), torch.from_numpy(targets),
                    torch.from_numpy(drawn[before:before + len(targets)]), torch.from_numpy(n[lo:hi].copy()), counts,
                    last_only)
