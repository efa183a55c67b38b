"""Propagation with its custom backward (``model/propagation.py``) against dense matrix powers:
a step's rows and their gradients, the split by source, LATTICE's non-symmetric graph, and
the receptive field (``BipartiteGraph.reach``)."""

from __future__ import annotations

import pytest
import torch

from cliper_dist.data.recdata import load_rec_data
from cliper_dist.model.bipartite import BipartiteGraph
from cliper_dist.model.item_graph import ItemGraph
from cliper_dist.model.propagation import batch_rows, source_rows
from cliper_dist.model.workspace import Workspace
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
        rows = batch_rows(graph, users, items, layers, u_rows, i_rows, workspace, item_graph)
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
    rows = source_rows(graph, users, items, layers, u_rows, i_rows, Workspace())
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
    rows = batch_rows(graph, users, items, 2, u_rows, i_rows, Workspace())
    w = torch.randn(5, 3, generator=g)
    (torch.cat([rows.users, rows.items]) * w).sum().backward()
    x = torch.cat([users, items]).detach().double().requires_grad_()
    mean = (x + p @ x + p @ (p @ x)) / 3
    picked = mean[torch.cat([u_rows, i_rows + data.num_users])]
    torch.testing.assert_close(torch.cat([rows.users, rows.items]).double(), picked.detach(), atol=1e-6, rtol=0)
    (picked * w.double()).sum().backward()
    torch.testing.assert_close(torch.cat([users.grad, items.grad]).double(), x.grad, atol=1e-6, rtol=0)
