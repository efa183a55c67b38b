"""What one adapt step trains on: a batch of items, and co-interaction triples sampled from the interactions."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from cliper_dist.data.recdata import RecData

MAX_REDRAWS = 16


def cooccurrence_triples(data: RecData, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``n`` triples (i, j, k): i and j are two items of one user's training interactions, k
    a uniform random item. A training interaction is drawn uniformly (so pairs follow the
    interaction distribution, as first-order proximity weighs co-occurrence counts), then
    another item of its user; the I x I co-occurrence matrix is never built. Users with a
    single training item give no pairs; a draw that keeps hitting i is dropped, so fewer
    than ``n`` triples may come back."""
    lengths = data.train.lengths()
    eligible = np.flatnonzero(lengths[data.train_user] >= 2)
    if len(eligible) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    rows = eligible[rng.integers(len(eligible), size=n)]
    users, first = data.train_user[rows], data.train_item[rows]
    start, count = data.train.indptr[users], lengths[users]
    second = data.train.indices[start + rng.integers(count)]
    for _ in range(MAX_REDRAWS):
        same = np.flatnonzero(second == first)
        if len(same) == 0:
            break
        second[same] = data.train.indices[start[same] + rng.integers(count[same])]
    keep = second != first
    return first[keep], second[keep], rng.integers(data.num_items, size=int(keep.sum()))


def epoch_steps(data: RecData, epoch: int, seed: int, batch_size: int,
                pairs_per_step: int) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, ...]]]:
    """(items, triples) for every step of one epoch, the same on every rank: the items in a
    (seed, epoch) permutation, ``batch_size`` at a time, each step with its own triples."""
    order = np.random.default_rng([seed, epoch]).permutation(data.num_items)
    pairs = np.random.default_rng([seed, epoch, 1])
    for lo in range(0, len(order), batch_size):
        yield order[lo:lo + batch_size], cooccurrence_triples(data, pairs_per_step, pairs)
