"""The pair schedule, the held-out split, the learning-rate schedule and the retrieval metric."""

from __future__ import annotations

import numpy as np
import pytest

from cliper_dist.data.dataset import DatasetDir
from cliper_dist.errors import UserError
from cliper_dist.pretrain.job import split_items
from cliper_dist.pretrain.pairs import ItemSource, PairSchedule, RankBatches
from cliper_dist.pretrain.retrieval import recall_at, retrieval_metrics
from cliper_dist.pretrain.trainer import ClipOptimConfig, learning_rate


def test_rank_slices_make_the_same_global_batch_at_any_world_size():
    schedule = PairSchedule(np.arange(100, 137), num_views=5, batch_size=12, seed=3)
    one = list(RankBatches(schedule, 0, 9, rank=0, world_size=1))
    for world in (2, 3, 4):
        slices = [list(RankBatches(schedule, 0, 9, r, world)) for r in range(world)]
        assert [sum((s[step] for s in slices), []) for step in range(9)] == one
    resumed = list(RankBatches(schedule, 5, 9, rank=0, world_size=1))
    assert resumed == one[5:]


def test_an_epoch_pairs_distinct_items_with_views_that_change_between_epochs():
    items = np.arange(40)
    schedule = PairSchedule(items, num_views=5, batch_size=8, seed=0)
    assert schedule.steps_per_epoch == 5
    epoch0 = sum((schedule.global_batch(s) for s in range(5)), [])
    epoch1 = sum((schedule.global_batch(s) for s in range(5, 10)), [])
    assert sorted(i for i, _ in epoch0) == list(range(40))
    assert {v for _, v in epoch0} == set(range(5))
    assert [i for i, _ in epoch0] != [i for i, _ in epoch1]
    assert dict(epoch0) != dict(epoch1)


def test_a_batch_larger_than_the_training_items_is_refused():
    with pytest.raises(UserError, match="batch_size=64 is larger than the 40 training items"):
        PairSchedule(np.arange(40), num_views=5, batch_size=64, seed=0)


def test_held_out_items_are_disjoint_from_training_and_fixed_by_the_seed():
    items = np.arange(0, 200, 2)
    train, held = split_items(items, 10, seed=1)
    assert len(held) == 10 and len(train) == 90
    assert not set(train) & set(held) and set(train) | set(held) == set(items)
    assert np.array_equal(held, split_items(items, 10, seed=1)[1])
    assert not np.array_equal(held, split_items(items, 10, seed=2)[1])
    with pytest.raises(UserError, match="leaves no training items"):
        split_items(items, 100, seed=1)


def test_learning_rate_warms_up_linearly_then_decays_to_zero():
    optim = ClipOptimConfig(lr=1.0, warmup=10)
    assert learning_rate(0, optim, 110) == pytest.approx(0.1)
    assert learning_rate(9, optim, 110) == pytest.approx(1.0)
    assert learning_rate(60, optim, 110) == pytest.approx(0.5)
    assert learning_rate(110, optim, 110) == pytest.approx(0.0, abs=1e-12)
    optim.schedule = "constant"
    assert learning_rate(60, optim, 110) == 1.0


def test_recall_counts_the_rank_of_each_querys_own_candidate():
    scores = np.array([[0.9, 0.1, 0.0],   # right at rank 0
                       [0.8, 0.5, 0.1],   # right at rank 1
                       [0.7, 0.6, 0.2]])  # right at rank 2
    own = np.eye(3, dtype=bool)
    assert recall_at(scores, own, ks=(1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}
    # items 1 and 2 share a prompt: either text answers either query
    shared = own | np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=bool)
    assert recall_at(scores, shared, ks=(1, 2)) == {1: pytest.approx(1 / 3), 2: 1.0}


def test_identical_prompts_are_one_text_with_its_own_chance_level():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((4, 3))
    text = np.repeat(image[:, None], 2, axis=1)  # view 0: each text is its image
    tokens = np.array([[[1], [7]], [[2], [7]], [[3], [7]], [[4], [8]]])  # view 1: items 0-2 share a prompt
    metrics = retrieval_metrics(image, text, tokens, ["own", "shared"])
    assert metrics["own"]["chance_r1"] == 0.25 and metrics["own"]["distinct_texts"] == 4
    assert metrics["shared"]["chance_r1"] == pytest.approx((3 * 3 + 1) / 16, abs=1e-4)
    assert metrics["shared"]["distinct_texts"] == 2


def test_item_source_reads_every_item_by_seeking(demo_dataset):
    from cliper_dist.data.shards import read_shard
    from cliper_dist.data.schema import key_index

    dataset = DatasetDir.open(demo_dataset)
    source = ItemSource(dataset)
    assert len(source.with_image) == dataset.num_items
    for name in dataset.shard_names[:2]:
        for sample in read_shard(dataset.shard_path(name)):
            fields, image = source.item(key_index(sample["__key__"]))
            assert image == sample["jpg"] and fields["title"]
