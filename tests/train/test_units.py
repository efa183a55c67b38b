"""Single-process pieces: sparse products, pruning, kNN graph, negatives, epoch batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_dist.model.graph import SparseGraph, degree_sensitive_prune, knn_item_graph
from cliper_dist.train.data import epoch_batches, load_rec_data, sample_negatives
from tests.train._data import make_mmrec_folder


@pytest.fixture
def data(tmp_path):
    return load_rec_data(make_mmrec_folder(tmp_path / "d"))


@pytest.mark.parametrize("symmetric", [True, False])
def test_sparse_graph_product_and_its_backward(symmetric):
    g = torch.Generator().manual_seed(0)
    dense = torch.rand(12, 12, generator=g) * (torch.rand(12, 12, generator=g) < 0.3)
    if symmetric:
        dense = dense + dense.T
    graph = (SparseGraph.symmetric if symmetric else SparseGraph.general)(dense.to_sparse_csr())
    x = torch.randn(12, 3, generator=g, requires_grad=True)
    w = torch.randn(12, 3, generator=g)
    (graph.mm(x) * w).sum().backward()
    torch.testing.assert_close(graph.mm(x.detach()), dense @ x.detach())
    torch.testing.assert_close(x.grad, dense.T @ w)


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
