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


def five_users() -> Sequences:
    """Users with 6, 1, 3, 0 and 4 training items."""
    return Sequences(num_items=30, indptr=np.array([0, 6, 7, 10, 10, 14]),
                     items=np.array([3, 5, 7, 9, 11, 13, 20, 1, 2, 4, 8, 16, 24, 6]),
                     valid=np.full(5, -1), test=np.full(5, -1))


def test_window_batches_are_those_of_the_per_user_batcher():
    """Frozen from the batcher before examples could be prefixes (e8ebfce): L=3, 3 users a batch, seed 5, epoch 1.
    A share no longer ends in padding examples (an empty bag each, for the table's lookup before ids were
    deduplicated): rank 1's lengths were [2, 0]."""
    frozen = {(1, 0): [([7, 9, 11, 8, 16, 24, 1, 2], [9, 11, 13, 16, 24, 6, 2, 4], [24, 23, 23, 14, 26, 20, 25, 24],
                        [3, 3, 2], (8,))],
              (2, 0): [([7, 9, 11, 8, 16, 24], [9, 11, 13, 16, 24, 6], [24, 23, 23, 14, 26, 20], [3, 3], (6, 2))],
              (2, 1): [([1, 2], [2, 4], [25, 24], [2], (6, 2))]}
    for (world, rank), batches in frozen.items():
        got = [(b.inputs.tolist(), b.targets.tolist(), b.negatives.tolist(), b.lengths.tolist(), b.counts)
               for b in train_batches(five_users(), 3, 3, 1, 5, rank, world)]
        assert got == batches, (world, rank)


def test_prefix_examples_are_every_item_but_the_first_after_at_most_L_items_at_any_world_size():
    seqs, L = five_users(), 2
    expected = sorted([(5, [3]), (7, [3, 5]), (9, [5, 7]), (11, [7, 9]), (13, [9, 11]), (2, [1]), (4, [1, 2]),
                       (16, [8]), (24, [8, 16]), (6, [16, 24])])
    whole = [(b.inputs.tolist(), b.targets.tolist(), b.negatives.tolist())
             for b in train_batches(seqs, L, 4, 0, 0, 0, 1, examples="prefix")]
    for world in (1, 2, 3):
        examples = []
        shares = [list(train_batches(seqs, L, 4, 0, 0, rank, world, examples="prefix")) for rank in range(world)]
        for step, batches in enumerate(zip(*shares)):
            assert sum(b.counts[r] for r, b in enumerate(batches)) == min(4, 10 - 4 * step)  # targets this step
            for rank, b in enumerate(batches):
                assert b.last_only and b.counts[rank] == int((b.lengths > 0).sum()) == len(b.targets)
                inputs = iter(b.inputs.tolist())
                examples += [(t, [next(inputs) for _ in range(n)])
                             for n, t in zip(b.lengths.tolist(), b.targets.tolist())]
                assert next(inputs, None) is None
            # the ranks' shares, in rank order, are the world of one's batch
            assert whole[step] == tuple(sum((getattr(b, f).tolist() for b in batches), [])
                                        for f in ("inputs", "targets", "negatives")), (world, step)
        assert sorted(examples) == expected, world
