"""Single-process pieces: batch-row propagation, pruning, kNN graph, negatives, epoch batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_dist.model.graph import degree_sensitive_prune, knn_item_graph, user_item_adjacency
from cliper_dist.model.recommender import GraphRecommender, ModelConfig
from cliper_dist.train.data import epoch_batches, load_rec_data, sample_negatives
from cliper_dist.train.job import build_item_graph
from cliper_dist.train.features import load_features
from tests.train._data import make_mmrec_folder


@pytest.fixture
def data(tmp_path):
    return load_rec_data(make_mmrec_folder(tmp_path / "d"))


@pytest.mark.parametrize("layers,mm_layers", [(0, 1), (1, 1), (2, 1), (3, 2)])
def test_propagate_rows_equals_full_propagation_and_its_gradient(tmp_path, layers, mm_layers):
    folder = make_mmrec_folder(tmp_path / "d")
    data = load_rec_data(folder)
    feats = load_features(folder, data.num_items)
    cfg = ModelConfig(name="freedom", embedding_dim=5, n_ui_layers=layers, n_mm_layers=mm_layers, knn_k=4)
    model = GraphRecommender(cfg, data.num_users, data.num_items, image=feats.image, text=feats.text)
    model.set_item_graph(build_item_graph(cfg, feats))
    adj = user_item_adjacency(data.train_user, data.train_item, data.num_users, data.num_items)
    users, items = torch.tensor([0, 3, 7, 39]), torch.tensor([1, 2, 5, 29])
    grads = []
    for rows_only in (False, True):
        eu = torch.randn(data.num_users, 5, generator=torch.Generator().manual_seed(0)).requires_grad_()
        ei = torch.randn(data.num_items, 5, generator=torch.Generator().manual_seed(1)).requires_grad_()
        if rows_only:
            u, i = model.propagate_rows(eu, ei, adj, users, items)
        else:
            all_u, all_i = model.propagate(eu, ei, adj)
            u, i = all_u[users], all_i[items]
        ((u * torch.arange(5.0)).sum() + (i ** 2).sum()).backward()
        grads.append((u.detach(), i.detach(), eu.grad, ei.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_pruning_keeps_the_right_count_and_prefers_low_degree_edges():
    rng = np.random.default_rng(0)
    # user 0 and item 0 are hubs; the other edges join degree-1 nodes
    user = np.array([0] * 50 + list(range(1, 51)))
    item = np.array(list(range(50)) + [0] * 25 + list(range(50, 75)))
    kept_hub = 0
    for t in range(200):
        u, i = degree_sensitive_prune(user, item, 51, 75, 0.5, np.random.default_rng([t]))
        assert len(u) == 50 and len(set(zip(u.tolist(), i.tolist()))) == 50
        kept_hub += int(((u == 0) & (i == 0)).sum())
    assert kept_hub < 60  # the hub-hub edge has the lowest weight 1/sqrt(50*26)


def test_knn_graph_rows_and_self_loops():
    feats = torch.randn(50, 8)
    g = knn_item_graph(feats, 5, block=7).to_dense()
    assert torch.all((g > 0).sum(1) == 5)
    assert torch.all(g.diagonal() > 0)  # self is its own nearest neighbour
    torch.testing.assert_close(g.sum(1), torch.ones(50))  # values 1/k


def test_negatives_reject_training_positives_and_batches_cover_the_epoch(data):
    keys = data.train_keys()
    users = np.repeat(np.arange(data.num_users), 50)
    neg = sample_negatives(users, data.num_items, keys, np.random.default_rng(0))
    assert not np.isin(users * data.num_items + neg, keys).any()
    seen = []
    for rank in (0, 1):
        for u, p, n, size in epoch_batches(data, keys, 3, 7, 32, rank, 2):
            assert size <= 32 and len(u) in (size // 2, (size + 1) // 2)
            seen += list(zip(u.tolist(), p.tolist()))
    assert sorted(seen) == sorted(zip(data.train_user.tolist(), data.train_item.tolist()))
    a = [b[0] for b in epoch_batches(data, keys, 3, 7, 32, 0, 2)]
    c = [b[0] for b in epoch_batches(data, keys, 4, 7, 32, 0, 2)]
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))  # a new permutation every epoch
