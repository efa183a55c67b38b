"""CTR inputs: labels, negatives, the catalog's vocabularies, and the one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest

from cliper_dist.ctr.catalog import MISSING, OOV, build_field
from cliper_dist.ctr.data import eval_batches, rank_batches
from cliper_dist.ctr.config import DLRMConfig
from cliper_dist.ctr.inputs import load_ctr_data
from cliper_dist.ctr.synthetic import synthetic_ctr, write_dataset, write_features
from cliper_dist.errors import UserError


@pytest.fixture(scope="module")
def synth():
    return synthetic_ctr(num_users=30, num_items=40, per_user=8, seed=2, feature_dim=5)


@pytest.fixture(scope="module")
def dataset(synth, tmp_path_factory):
    return write_dataset(synth, tmp_path_factory.mktemp("ctr_data"))


def test_explicit_labels_follow_the_threshold(synth, dataset):
    data = load_ctr_data(str(dataset), "", DLRMConfig(labels="explicit", rating_threshold=4), seed=0)
    valid = synth.inter.split == 1
    np.testing.assert_array_equal(data.eval_samples("valid").label, synth.inter.rating[valid] >= 4)
    assert data.sampler is None and data.dense_dim == 2


def test_implicit_negatives_are_unseen_and_seeded(synth, dataset, tmp_path):
    feats = write_features(synth.features, tmp_path / "feats")
    data = load_ctr_data(str(dataset), str(feats), DLRMConfig(negatives=3), seed=0)
    assert data.dense_dim == 2 + synth.features.shape[1]
    seen = set(zip(synth.inter.user.tolist(), synth.inter.item.tolist()))
    for epoch in (0, 1):
        s = data.train_samples(epoch)
        n_pos = int((synth.inter.split == 0).sum())
        assert len(s) == 4 * n_pos and s.label.sum() == n_pos
        assert not seen & set(zip(s.user[s.label == 0].tolist(), s.item[s.label == 0].tolist()))
    a, b = data.train_samples(0), load_ctr_data(str(dataset), str(feats), DLRMConfig(negatives=3), 0).train_samples(0)
    np.testing.assert_array_equal(a.item, b.item)
    assert not np.array_equal(a.item, data.train_samples(1).item)


def test_vocabulary_sends_rare_values_to_oov(synth):
    items = [{"brand": "a"}, {"brand": "a"}, {"brand": "b"}, {},
             {"categories": [["X", "Y"], ["X", "Z"]]}, {"categories": "X, Y"},
             {"categories": "X, Y, Z", "category_paths": [["X", "Y"], ["X", "Z"]]}]
    brand = build_field(items, "brand", min_count=2)
    assert brand.vocab == ["a"]
    assert [brand.bags(np.array([i]))[0].tolist() for i in range(4)] == [[2], [2], [OOV], [MISSING]]
    cats = build_field(items, "categories", min_count=1)
    values, lengths = cats.bags(np.array([4, 0]))
    assert lengths.tolist() == [3, 1] and values[-1] == MISSING  # X, X > Y, X > Z; nothing
    np.testing.assert_array_equal(cats.bags(np.array([5]))[0], values[:2])  # an older dataset's string: X, X > Y
    np.testing.assert_array_equal(cats.bags(np.array([6]))[0], values[:3])  # a converted dataset's paths


def test_batches_are_the_same_at_any_world_size(synth, dataset):
    s = load_ctr_data(str(dataset), "", DLRMConfig(), 0).train_samples(0)
    one = np.concatenate([b.item for b in rank_batches(s, 8, 0, 1)])
    two = [list(rank_batches(s, 8, r, 2)) for r in range(2)]
    np.testing.assert_array_equal(one, np.concatenate([np.concatenate([a.item, b.item]) for a, b in zip(*two)]))
    ev = [list(eval_batches(s, 7, r, 2)) for r in range(2)]
    assert len(ev[0]) == len(ev[1])
    got = np.concatenate([b.item[b.label >= 0] for part in ev for b in part])
    np.testing.assert_array_equal(got, s.item)


@pytest.mark.parametrize("case,message", [
    ("no_rating", "needs a rating column"),
    ("threshold", "outside the ratings' range"),
    ("field", "no item of the catalog has a 'brand' value"),
    ("features", "item rows"),
])
def test_bad_input_is_one_line(synth, tmp_path, case, message):
    inputs, features = DLRMConfig(labels="explicit"), ""
    data = write_dataset(synth, tmp_path / "data", with_rating=case != "no_rating")
    if case == "threshold":
        inputs.rating_threshold = 9
    if case == "field":
        (data / "items.jsonl").write_text("".join(
            f'{{"index": {i}, "categories": [["A"]]}}\n' for i in range(synth.num_items)))
    if case == "features":
        features = str(write_features(synth.features[:-1], tmp_path / "feats"))
    with pytest.raises(UserError, match=message) as e:
        load_ctr_data(str(data), features, inputs, 0)
    assert "\n" not in str(e.value)
