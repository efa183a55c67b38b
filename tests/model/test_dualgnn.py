"""DualGNN's user co-occurrence graph (``model/dualgnn.py``): the blockwise top-k and each epoch's
sample, against dense constructions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_dist.data.recdata import load_rec_data
from cliper_dist.model.dualgnn import co_occurrence_top, sample_user_graph
from tests.train._data import make_mmrec_folder


@pytest.fixture
def data(tmp_path):
    return load_rec_data(make_mmrec_folder(tmp_path / "d"))


def test_co_occurrence_top_is_the_same_in_any_block_size(data):
    """DualGNN's user graph from R R^T a block of users at a time, against one block; the
    shared counts are those of a dense R R^T, in descending order, lower ids first on ties."""
    one = co_occurrence_top(data.train_user, data.train_item, data.num_users, data.num_items, 6)
    tiny = co_occurrence_top(data.train_user, data.train_item, data.num_users, data.num_items, 6,
                             block_floats=3 * data.num_users)
    for x, y in zip(one, tiny):
        assert torch.equal(x, y)
    r = torch.zeros(data.num_users, data.num_items)
    r[data.train_user, data.train_item] = 1.0
    shared = (r @ r.T).fill_diagonal_(0)
    ids, counts, found = one
    assert torch.equal(found, (shared > 0).sum(1))
    for u in range(data.num_users):
        want = sorted(range(data.num_users), key=lambda v: (-shared[u, v].item(), v))[:6]
        assert ids[u].tolist() == want and torch.equal(counts[u], shared[u, want])


def test_an_epochs_user_graph_is_mmrecs_sample(data):
    """G as MMRec's topk_sample draws it, written densely: each user's k users sharing the most
    training items (ties: lower id first) with softmax(shared counts) weights; a user with fewer
    such users repeats random ones of them, drawn user by user from the epoch's stream."""
    k, n_users, rng_key = 36, data.num_users, [5, 1, 11]  # k 36: user 4 has fewer co-occurring users
    r = torch.zeros(n_users, data.num_items, dtype=torch.float64)
    r[torch.from_numpy(data.train_user), torch.from_numpy(data.train_item)] = 1.0
    shared = (r @ r.T).fill_diagonal_(0.0)
    rng = np.random.default_rng(rng_key)
    dense, padded = torch.zeros(n_users, n_users, dtype=torch.float64), 0
    for u in range(n_users):
        mates = sorted(torch.nonzero(shared[u])[:, 0].tolist(), key=lambda v: (-shared[u, v].item(), v))[:k]
        if not mates:
            continue
        if len(mates) < k:
            padded += 1
            mates += [mates[j] for j in rng.integers(0, len(mates), size=k - len(mates))]
        for v, w in zip(mates, torch.softmax(shared[u, mates], 0)):
            dense[u, v] += w
    assert padded > 0
    top = co_occurrence_top(data.train_user, data.train_item, n_users, data.num_items, k)
    ids, weights = sample_user_graph(*top, np.random.default_rng(rng_key))
    got = torch.zeros(n_users, n_users, dtype=torch.float64).index_put_(
        (torch.arange(n_users).repeat_interleave(k), ids.reshape(-1)), weights.reshape(-1).double(), accumulate=True)
    torch.testing.assert_close(got, dense, atol=1e-6, rtol=0)
