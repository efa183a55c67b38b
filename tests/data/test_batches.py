"""Per-epoch BPR batches and their negatives (``data/batches.py``)."""

from __future__ import annotations

import numpy as np

from cliper_dist.data.batches import epoch_batches, sample_negatives
from cliper_dist.data.recdata import load_rec_data
from tests.train._data import make_mmrec_folder


def test_negatives_reject_training_positives_and_batches_cover_the_epoch(tmp_path):
    data = load_rec_data(make_mmrec_folder(tmp_path / "d"))
    keys = data.train_keys()
    users = np.repeat(np.arange(data.num_users), 50)
    neg = sample_negatives(users, data.num_items, keys, np.random.default_rng(0))
    assert not np.isin(users * data.num_items + neg, keys).any()
    seen = []
    for u, p, n in epoch_batches(data, keys, 3, 7, 32):
        assert len(u) <= 32 and len(u) == len(p) == len(n)
        seen += list(zip(u.tolist(), p.tolist()))
    assert sorted(seen) == sorted(zip(data.train_user.tolist(), data.train_item.tolist()))
    again = [b for b in epoch_batches(data, keys, 3, 7, 32)]  # every rank draws the same batches
    assert all(np.array_equal(x, y) for a, b in zip(again, epoch_batches(data, keys, 3, 7, 32)) for x, y in zip(a, b))
    a = [b[0] for b in epoch_batches(data, keys, 3, 7, 32)]
    c = [b[0] for b in epoch_batches(data, keys, 4, 7, 32)]
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))  # a new permutation every epoch
