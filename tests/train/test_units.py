"""Single-process pieces: graph products and their backward, receptive fields, pruning, the
kNN item graph, negatives and epoch batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_dist.model.graph import BipartiteGraph, ItemGraph, Workspace, degree_sensitive_prune
from cliper_dist.model.item_graph import freedom_item_graph
from cliper_dist.parallel.columns import ColumnSplit
from cliper_dist.train.data import epoch_batches, load_rec_data, sample_negatives
from tests.train._data import make_mmrec_folder


@pytest.fixture
def data(tmp_path):
    return load_rec_data(make_mmrec_folder(tmp_path / "d"))


def dense_adjacency(data) -> torch.Tensor:
    n_users, n = data.num_users, data.num_users + data.num_items
    a = torch.zeros(n, n, dtype=torch.float64)
    a[data.train_user, n_users + data.train_item] = 1.0
    a[n_users + data.train_item, data.train_user] = 1.0
    d = a.sum(1).pow(-0.5)
    return d[:, None] * a * d[None, :]


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_batch_rows_and_their_backward_match_dense_powers(data, layers):
    graph = BipartiteGraph.from_edges(data.train_user, data.train_item, data.num_users, data.num_items)
    a = dense_adjacency(data)
    g = torch.Generator().manual_seed(layers)
    item_graph = ItemGraph(torch.randint(0, data.num_items, (data.num_items, 3), generator=g),
                           torch.rand(data.num_items, 3, generator=g))
    s = torch.zeros(data.num_items, data.num_items, dtype=torch.float64).index_put_(
        (torch.arange(data.num_items).repeat_interleave(3), item_graph.neighbours.reshape(-1)),
        item_graph.weights.reshape(-1).double(), accumulate=True)
    users = torch.randn(data.num_users, 3, generator=g, requires_grad=True)
    items = torch.randn(data.num_items, 3, generator=g, requires_grad=True)
    u_rows, i_rows = torch.tensor([3, 3, 17, 0]), torch.tensor([5, 29, 5])
    workspace = Workspace()
    for _ in range(2):  # the second step reuses the first one's blocks
        users.grad = items.grad = None
        rows = graph.batch_rows(users, items, layers, u_rows, i_rows, workspace, item_graph)
        weights = [torch.randn(t.shape, generator=g) for t in
                   (rows.users, rows.items, rows.ego_users, rows.ego_items, rows.item_graph)]
        sum((t * w).sum() for t, w in zip((rows.users, rows.items, rows.ego_users, rows.ego_items,
                                           rows.item_graph), weights)).backward()

    x = torch.cat([users, items]).detach().double().requires_grad_()
    mean = sum(torch.linalg.matrix_power(a, l) @ x for l in range(layers + 1)) / (layers + 1)
    index = torch.cat([u_rows, i_rows + data.num_users])
    dense = [mean[index], x[index], (s @ x[data.num_users:])[i_rows]]
    got = [torch.cat([rows.users, rows.items]), torch.cat([rows.ego_users, rows.ego_items]), rows.item_graph]
    for d, t in zip(dense, got):
        torch.testing.assert_close(t.double(), d.detach(), atol=1e-6, rtol=0)
    w = [torch.cat(weights[:2]), torch.cat(weights[2:4]), weights[4]]
    sum((d * wt.double()).sum() for d, wt in zip(dense, w)).backward(retain_graph=True)
    torch.testing.assert_close(torch.cat([users.grad, items.grad]).double(), x.grad, atol=1e-6, rtol=0)
    # the receptive field of the layer mean alone is exactly the rows with a nonzero gradient
    reach_u, reach_i = graph.reach(u_rows, i_rows, layers)
    x.grad = None
    (mean[index] * w[0].double()).sum().backward()
    assert torch.equal(torch.cat([reach_u, reach_i + data.num_users]), x.grad.ne(0).any(1).nonzero()[:, 0])
    full_u, full_i = graph.layer_mean(users.detach(), items.detach(), layers)
    torch.testing.assert_close(torch.cat([full_u, full_i]).double(), mean.detach(), atol=1e-6, rtol=0)


def test_item_graph_bags_are_the_sparse_product_and_reach_its_support():
    g = torch.Generator().manual_seed(0)
    nbr = torch.randint(0, 9, (9, 4), generator=g)
    w = torch.rand(9, 4, generator=g)
    s = torch.zeros(9, 9).index_put_((torch.arange(9).repeat_interleave(4), nbr.reshape(-1)), w.reshape(-1),
                                     accumulate=True)
    graph, x = ItemGraph(nbr, w), torch.randn(9, 3, generator=g, requires_grad=True)
    items = torch.tensor([2, 7, 2])
    for hops in (0, 1, 2):
        torch.testing.assert_close(graph.power_rows(x, hops, items), (torch.linalg.matrix_power(s, hops) @ x)[items])
        x.grad = None
        graph.power_rows(x, hops, items).sum().backward()
        assert torch.equal(graph.reach(items, hops), x.grad.ne(0).any(1).nonzero()[:, 0])
    # a training step's backward of (S x)[items]: S^T G, with repeated neighbours and items
    nbr[:, 1] = nbr[:, 0]
    graph, grad, out = ItemGraph(nbr, w), torch.randn(3, 3, generator=g), torch.randn(9, 3, generator=g)
    s = torch.zeros(9, 9).index_put_((torch.arange(9).repeat_interleave(4), nbr.reshape(-1)), w.reshape(-1),
                                     accumulate=True)
    expected = out + s.T @ torch.zeros(9, 3).index_add_(0, items, grad)
    torch.testing.assert_close(graph.add_row_gradient(out, items, grad, torch.full((9, 3), 7.0)), expected)


def test_pruning_keeps_the_right_count_and_prefers_low_degree_edges():
    # user 0 and item 0 are hubs; the other edges join degree-1 nodes
    user = np.array([0] * 50 + list(range(1, 51)))
    item = np.array(list(range(50)) + [0] * 25 + list(range(50, 75)))
    kept_hub = 0
    for t in range(200):
        u, i = degree_sensitive_prune(user, item, 51, 75, 0.5, np.random.default_rng([t]))
        assert len(u) == 50 and len(set(zip(u.tolist(), i.tolist()))) == 50
        kept_hub += int(((u == 0) & (i == 0)).sum())
    assert kept_hub < 60  # the hub-hub edge has the lowest weight 1/sqrt(50*26)


def test_freedom_item_graph_rows_mix_two_knn_graphs():
    g = torch.Generator().manual_seed(1)
    image, text = torch.randn(50, 8, generator=g), torch.randn(50, 6, generator=g)
    graph = freedom_item_graph(image, text, 5, 0.1, ColumnSplit())
    assert graph.neighbours.shape == (50, 10)
    assert torch.all(graph.neighbours[:, 0] == torch.arange(50))  # self is its own nearest neighbour
    dense = torch.zeros(50, 50).index_put_((torch.arange(50).repeat_interleave(10), graph.neighbours.reshape(-1)),
                                           graph.weights.reshape(-1), accumulate=True)
    torch.testing.assert_close(dense.sum(1), torch.ones(50))  # 0.1 * 5 * 1/5 + 0.9 * 5 * 1/5
    single = freedom_item_graph(image, None, 5, 0.1, ColumnSplit())
    assert single.neighbours.shape == (50, 5) and torch.allclose(single.weights, torch.full((50, 5), 0.2))


def test_negatives_reject_training_positives_and_batches_cover_the_epoch(data):
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


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_source_rows_split_the_layer_mean_by_source(data, layers):
    """SLMRec's M([E_u; 0]) and M([0; E_i]) at a step's rows, and their backward (one Horner
    pass with alternating seeds), against dense powers of each source alone."""
    graph = BipartiteGraph.from_edges(data.train_user, data.train_item, data.num_users, data.num_items)
    a = dense_adjacency(data)
    g = torch.Generator().manual_seed(layers)
    users = torch.randn(data.num_users, 3, generator=g, requires_grad=True)
    items = torch.randn(data.num_items, 3, generator=g, requires_grad=True)
    u_rows, i_rows = torch.tensor([3, 3, 17, 0]), torch.tensor([5, 29, 5])
    rows = graph.source_rows(users, items, layers, u_rows, i_rows, Workspace())
    got = [rows.user_by_user, rows.user_by_item, rows.item_by_user, rows.item_by_item]
    weights = [torch.randn(t.shape, generator=g) for t in got]
    sum((t * w).sum() for t, w in zip(got, weights)).backward()

    eu = users.detach().double().requires_grad_()
    ei = items.detach().double().requires_grad_()
    zeros_u, zeros_i = torch.zeros_like(eu), torch.zeros_like(ei)
    def mean(x):
        return sum(torch.linalg.matrix_power(a, l) @ x for l in range(layers + 1)) / (layers + 1)
    by_user, by_item = mean(torch.cat([eu, zeros_i])), mean(torch.cat([zeros_u, ei]))
    n = data.num_users
    dense = [by_user[u_rows], by_item[u_rows], by_user[n + i_rows], by_item[n + i_rows]]
    for t, d in zip(got, dense):
        torch.testing.assert_close(t.double(), d.detach(), atol=1e-6, rtol=0)
    sum((d * w.double()).sum() for d, w in zip(dense, weights)).backward()
    torch.testing.assert_close(users.grad.double(), eu.grad, atol=1e-6, rtol=0)
    torch.testing.assert_close(items.grad.double(), ei.grad, atol=1e-6, rtol=0)


def test_mean_with_self_propagates_and_back_propagates_d_inv_a_plus_i(data):
    """LATTICE's P = D^-1 (A + I) is not symmetric: the backward must use its transpose."""
    graph = BipartiteGraph.mean_with_self(data.train_user, data.train_item, data.num_users, data.num_items)
    n = data.num_users + data.num_items
    a = torch.zeros(n, n, dtype=torch.float64)
    a[data.train_user, data.num_users + data.train_item] = 1.0
    a[data.num_users + data.train_item, data.train_user] = 1.0
    p = (a + torch.eye(n, dtype=torch.float64)) / (a.sum(1, keepdim=True) + 1.0)
    g = torch.Generator().manual_seed(0)
    users = torch.randn(data.num_users, 3, generator=g, requires_grad=True)
    items = torch.randn(data.num_items, 3, generator=g, requires_grad=True)
    u_rows, i_rows = torch.tensor([1, 8, 8]), torch.tensor([0, 13])
    rows = graph.batch_rows(users, items, 2, u_rows, i_rows, Workspace())
    w = torch.randn(5, 3, generator=g)
    (torch.cat([rows.users, rows.items]) * w).sum().backward()
    x = torch.cat([users, items]).detach().double().requires_grad_()
    mean = (x + p @ x + p @ (p @ x)) / 3
    picked = mean[torch.cat([u_rows, i_rows + data.num_users])]
    torch.testing.assert_close(torch.cat([rows.users, rows.items]).double(), picked.detach(), atol=1e-6, rtol=0)
    (picked * w.double()).sum().backward()
    torch.testing.assert_close(torch.cat([users.grad, items.grad]).double(), x.grad, atol=1e-6, rtol=0)


def test_co_occurrence_top_is_the_same_in_any_block_size(data):
    """DualGNN's user graph from R R^T a block of users at a time, against one block; the
    shared counts are those of a dense R R^T, in descending order, lower ids first on ties."""
    from cliper_dist.model.dualgnn import co_occurrence_top

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
