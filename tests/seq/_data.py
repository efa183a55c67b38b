"""Synthetic sequences for the sequential tests: users walking through items in strides."""

from __future__ import annotations

import numpy as np

from cliper_dist.data.interactions import Interactions, split_per_user


def stride_walks(users: int, items: int, lengths: tuple[int, int], g: np.random.Generator) -> Interactions:
    """Each user walks from a random item with a stride of its own (an order a sequential model can
    learn), ``lengths`` = [low, high) events; split leave-one-out by time."""
    user, item = [], []
    for u in range(users):
        n = int(g.integers(*lengths))
        start, stride = int(g.integers(items)), int(g.integers(1, 4))
        user += [u] * n
        item += [(start + stride * j) % items for j in range(n)]
    return split_per_user(np.array(user), np.array(item), 0, timestamp=np.arange(len(user), dtype=np.float64),
                          leave_one_out=True)
