"""Sequences from a converted dataset: time order, the held-out targets, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from cliper_dist.data.interactions import Interactions, split_per_user, write_inter
from cliper_dist.errors import UserError
from cliper_dist.seq.data import Sequences, load_sequences, train_batches


def write_folder(tmp_path, inter: Interactions):
    folder = tmp_path / "mmrec"
    folder.mkdir(parents=True)
    write_inter(folder / "x.inter", inter)
    return folder


def test_training_items_in_time_order_and_one_target_per_split(tmp_path):
    user = np.array([0, 0, 0, 0, 0, 1, 1])
    item = np.array([4, 3, 2, 1, 0, 5, 6])
    time = np.array([50., 10., 30., 30., 20., 2., 1.])
    inter = split_per_user(user, item, 0, timestamp=time, leave_one_out=True)
    seqs = load_sequences(write_folder(tmp_path, inter))
    assert seqs.row(0).tolist() == [3, 0, 2]  # times 10, 20, 30 (2 and 1 tie at 30: file order, 2 first)
    assert (seqs.valid[0], seqs.test[0]) == (1, 4)
    assert seqs.row(1).tolist() == [6, 5] and (seqs.valid[1], seqs.test[1]) == (-1, -1)  # 2 events: all train


def test_no_timestamps_or_a_split_that_is_not_leave_one_out_is_one_line(tmp_path):
    user, item = np.array([0, 0, 0, 0]), np.array([0, 1, 2, 3])
    with pytest.raises(UserError, match="no timestamp column; sequential recommendation orders"):
        load_sequences(write_folder(tmp_path / "a", Interactions(user, item, np.array([0, 0, 1, 2]))))
    two_valid = Interactions(user, item, np.array([0, 1, 1, 2]), timestamp=np.arange(4.0))
    with pytest.raises(UserError, match="user 0 has 2 valid interactions.*--split loo"):
        load_sequences(write_folder(tmp_path / "b", two_valid))


def test_prefix_examples_are_every_item_but_the_first_after_at_most_L_items_at_any_world_size():
    # user 0 trains on 5 items, user 1 on 1 (no example), user 2 on 3
    seqs = Sequences(num_items=20, indptr=np.array([0, 5, 6, 9]), items=np.array([10, 11, 12, 13, 14, 15, 16, 17, 18]),
                     valid=np.full(3, -1), test=np.full(3, -1))
    expected = {(11,): (10,), (12,): (10, 11), (13,): (11, 12), (14,): (12, 13), (17,): (16,), (18,): (16, 17)}
    for world in (1, 2, 3):
        got = {}
        for rank in range(world):
            for batch in train_batches(seqs, 2, 4, 0, 0, rank, world, negatives=True, examples="prefix"):
                assert batch.last_only and batch.total == sum(batch.counts)
                assert batch.target_lengths.tolist() == [int(n > 0) for n in batch.lengths]
                assert len(batch.negatives) == len(batch.targets) == batch.counts[rank]
                inputs = iter(batch.inputs.tolist())
                for n, target in zip(batch.lengths[batch.lengths > 0].tolist(), batch.targets.tolist()):
                    got[(target,)] = tuple(next(inputs) for _ in range(n))
        assert got == expected, world
    window = [b for b in train_batches(seqs, 2, 4, 0, 0, 0, 1, examples="window")]
    assert sorted(t for b in window for t in b.targets.tolist()) == [13, 14, 17, 18]  # the last L+1 items'
