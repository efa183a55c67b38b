import numpy as np
import pytest

from cliper_dist.data.interactions import split_per_user, split_sizes


@pytest.mark.parametrize("n, sizes", [(1, (1, 0, 0)), (2, (2, 0, 0)), (3, (1, 1, 1)), (5, (3, 1, 1)), (9, (7, 1, 1)),
                                      (10, (8, 1, 1)), (11, (9, 1, 1)), (15, (12, 1, 2)), (19, (16, 1, 2)),
                                      (20, (16, 2, 2)), (35, (28, 3, 4)), (101, (81, 10, 10))])
def test_split_sizes_follow_mmrec(n, sizes):
    # MMRec's files: train = ceil(0.8 n), valid = floor(0.1 n), test = the rest; under 10: n-2/1/1.
    assert tuple(int(v[0]) for v in split_sizes(np.array([n]))) == sizes


def _events(counts):
    user = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(user))  # users interleaved, as in real files
    return user[order], np.arange(len(user))[order]


def test_split_per_user_counts_seed_and_row_order():
    counts = [5, 9, 10, 14, 23, 40, 2]
    user, item = _events(counts)
    a = split_per_user(user, item, seed=999)
    assert (a.user == user).all() and (a.item == item).all()  # rows keep their order
    for u, n in enumerate(counts):
        got = np.bincount(a.split[a.user == u], minlength=3)
        assert tuple(got) == tuple(int(v[0]) for v in split_sizes(np.array([n])))
    assert (split_per_user(user, item, seed=999).split == a.split).all()
    assert (split_per_user(user, item, seed=1).split != a.split).any()


def test_temporal_split_puts_the_newest_events_last():
    user = np.array([0] * 10 + [1] * 4)
    timestamp = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 10] + [4, 3, 2, 1], dtype=float)
    s = split_per_user(user, np.arange(14), seed=0, timestamp=timestamp)
    assert s.split[timestamp.tolist().index(10)] == 2 and s.split[2] == 1  # t=10 test, t=9 valid
    assert (s.split[:10][timestamp[:10] <= 8] == 0).all()
    assert s.split[10:].tolist() == [2, 1, 0, 0]


def test_empty_interactions_split():
    assert len(split_per_user(np.zeros(0, int), np.zeros(0, int), seed=0)) == 0
