"""Co-interaction triples, the epoch's steps, and what the co-interaction term learns: on a
catalog whose users stay inside item clusters, items that share a user end closer than
random pairs, and without the term (w_cooccur=0) they do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cliper_dist import checkpoint, dist
from cliper_dist.adapt.job import AdaptConfig, Adapter, load_inputs, run
from cliper_dist.adapt.model import AdaptModelConfig
from cliper_dist.adapt.pairs import cooccurrence_triples, epoch_steps
from cliper_dist.data.interactions import Interactions, split_per_user, write_inter
from cliper_dist.data.recdata import RecData
from cliper_dist.parallel.optim import OptimConfig

# user -> training items; user 3's item 7 and user 4's item 8 are theirs alone (one-item
# users); user 5 holds item 9 twice (two training rows, one distinct item: never a pair)
TRAIN = {0: [0, 1, 2, 3], 1: [2, 4], 2: [5, 6, 0, 1, 4], 3: [7], 4: [8], 5: [9, 9]}
NUM_ITEMS = 12


def _data() -> RecData:
    rows = [(u, i, 0) for u, items in TRAIN.items() for i in items] + [(0, 10, 1), (1, 11, 2)]
    user, item, split = (np.array(c, dtype=np.int64) for c in zip(*rows))
    return RecData.from_interactions(Interactions(user, item, split), len(TRAIN), NUM_ITEMS, "test")


def test_triples_pair_items_of_one_user():
    data = _data()
    i, j, k = cooccurrence_triples(data, 5000, np.random.default_rng(0))
    # 13 rows belong to users of two or more rows; user 5's 2 never give a pair and are dropped
    assert abs(len(i) - 5000 * 11 / 13) < 150 and len(i) == len(j) == len(k)
    shared = {(a, b) for items in TRAIN.values() for a in items for b in items if a != b}
    assert set(zip(i.tolist(), j.tolist())) == shared  # every such pair occurs, and no other
    assert (i != j).all()
    assert not {7, 8, 9} & (set(i.tolist()) | set(j.tolist()))  # one-item users give no pair
    assert k.min() >= 0 and k.max() < NUM_ITEMS and len(np.unique(k)) == NUM_ITEMS


def test_triples_follow_the_interactions():
    """i is a uniform draw over the training rows of users with two or more rows."""
    data = _data()
    i, _, _ = cooccurrence_triples(data, 200_000, np.random.default_rng(1))
    rows = [x for u, items in TRAIN.items() if u != 5 and len(items) >= 2 for x in items]
    want = np.bincount(rows, minlength=NUM_ITEMS) / len(rows)
    assert np.abs(np.bincount(i, minlength=NUM_ITEMS) / len(i) - want).max() < 0.005


def test_triples_are_seeded():
    data = _data()
    a = cooccurrence_triples(data, 100, np.random.default_rng(7))
    b = cooccurrence_triples(data, 100, np.random.default_rng(7))
    c = cooccurrence_triples(data, 100, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_no_pairs_without_a_user_of_two_items():
    rows = [(0, 0, 0), (1, 1, 0), (0, 2, 1), (1, 3, 2)]
    user, item, split = (np.array(c, dtype=np.int64) for c in zip(*rows))
    data = RecData.from_interactions(Interactions(user, item, split), 2, 4, "test")
    assert all(len(x) == 0 for x in cooccurrence_triples(data, 10, np.random.default_rng(0)))


def test_an_epoch_covers_every_item_once():
    data = _data()
    steps = list(epoch_steps(data, 3, 11, 5, 8))
    assert [len(items) for items, _ in steps] == [5, 5, 2]
    assert sorted(np.concatenate([items for items, _ in steps]).tolist()) == list(range(NUM_ITEMS))
    again = list(epoch_steps(data, 3, 11, 5, 8))
    assert all(np.array_equal(a[0], b[0]) and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))
               for a, b in zip(steps, again))
    other = list(epoch_steps(data, 4, 11, 5, 8))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(steps, other))


# ---- what the co-interaction term learns ---------------------------------------------------
CLUSTERS, PER_CLUSTER, USERS, PER_USER = 4, 30, 160, 8


def make_clustered(path: Path, seed: int = 0) -> Path:
    """An MMRec folder: user u interacts with PER_USER items of cluster u % CLUSTERS only;
    image and text features are noise, unrelated to the clusters, with more dimensions than
    items, so that a linear head can express the clusters in the exported features."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    users = np.repeat(np.arange(USERS), PER_USER)
    items = np.concatenate([(u % CLUSTERS) * PER_CLUSTER + rng.choice(PER_CLUSTER, PER_USER, replace=False)
                            for u in range(USERS)])
    write_inter(path / "clusters.inter", split_per_user(users, items, seed))
    n = CLUSTERS * PER_CLUSTER
    np.save(path / "image_feat.npy", rng.normal(size=(n, 128)).astype(np.float32))
    np.save(path / "text_feat.npy", rng.normal(size=(n, 160)).astype(np.float32))
    return path


def cosine_gaps(data_dir: Path, out: Path, w_cooccur: float) -> dict[str, float]:
    """Train with the job, reload its last checkpoint, and return per embedding (z_id, and
    the exported image and text features) the mean cosine of item pairs that share a
    training user minus that of random pairs."""
    cfg = AdaptConfig(data=str(data_dir), out=str(out), epochs=40, batch_size=32, pairs_per_step=256,
                      model=AdaptModelConfig(dim=16, id_dim=16, w_cooccur=w_cooccur), optim=OptimConfig(lr=0.03))
    info = dist.init(device="cpu")
    run(cfg, info)
    data, features = load_inputs(cfg)
    adapter = Adapter(cfg, data, features, info)
    checkpoint.load(checkpoint.resolve(out / "adapt"), adapter.state_dict())
    for name, file in (("image", "image_feat.npy"), ("text", "text_feat.npy")):  # the state the job wrote from
        np.testing.assert_allclose(adapter.adapted(name), np.load(out / file), atol=1e-6)
    with torch.no_grad():
        z = adapter.embed(np.arange(data.num_items))
    shared = np.array(sorted({(a, b) for u in range(data.num_users) for a in data.train.row(u)
                              for b in data.train.row(u) if a != b}))
    rand = np.random.default_rng(1).integers(data.num_items, size=(20000, 2))
    rand = rand[rand[:, 0] != rand[:, 1]]

    def mean_cos(e, pairs):
        return float((e[pairs[:, 0]] * e[pairs[:, 1]]).sum(1).mean())

    return {name: mean_cos(z[name], shared) - mean_cos(z[name], rand) for name in ("id", "image", "text")}


def test_co_interacted_items_end_closer_than_random_pairs(tmp_path):
    data_dir = make_clustered(tmp_path / "data")
    learned = cosine_gaps(data_dir, tmp_path / "with", w_cooccur=2.0)
    control = cosine_gaps(data_dir, tmp_path / "without", w_cooccur=0.0)
    # the features are noise: the clusters reach the embeddings only through the co-interaction term
    assert min(learned.values()) > 0.15, learned
    assert max(abs(v) for v in control.values()) < 0.05, control
