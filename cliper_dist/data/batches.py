"""Per-epoch BPR batches of the training pairs, with one sampled negative per positive."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from cliper_dist.data.recdata import RecData


def sample_negatives(users: np.ndarray, num_items: int, train_keys: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """One uniform item per user that is not among the user's training items (vectorised
    rejection: redraw only the collisions until none remain)."""
    neg = rng.integers(num_items, size=len(users))
    todo = np.arange(len(users))
    while len(todo):
        keys = users[todo] * num_items + neg[todo]
        pos = np.searchsorted(train_keys, keys)
        hit = train_keys[np.minimum(pos, len(train_keys) - 1)] == keys
        todo = todo[hit]
        neg[todo] = rng.integers(num_items, size=len(todo))
    return neg


def epoch_batches(data: RecData, train_keys: np.ndarray, epoch: int, seed: int,
                  batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(users, positives, negatives) for every step of one epoch, the same on every rank.

    Column-parallel ranks all work on the whole global batch (each on its own columns), so
    the permutation and the negatives derive from (seed, epoch) alone: every rank, and a
    run resumed at any world size, draws the same batches. The last batch of an epoch may
    be smaller; the loss is the mean over the batch actually drawn.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(data.train_user))
    neg_rng = np.random.default_rng([seed, epoch, 1])
    for lo in range(0, len(order), batch_size):
        batch = order[lo:lo + batch_size]
        users, pos = data.train_user[batch], data.train_item[batch]
        yield users, pos, sample_negatives(users, data.num_items, train_keys, neg_rng)
