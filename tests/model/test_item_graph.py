"""Item graphs (``model/item_graph.py``): the bags against a dense S and their receptive field,
FREEDOM's mixed kNN graph, and the FAISS HNSW search against the exact one at 1 and 2 real ranks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cliper_dist import dist
from cliper_dist.data.features import ItemVectors
from cliper_dist.model.item_graph import ItemGraph, KnnSearch, freedom_item_graph, knn_graph_neighbours
from cliper_dist.parallel.columns import ColumnSplit

K = 11


def clustered(n: int = 3000, dim: int = 48, centres: int = 60, noise: float = 0.7, seed: int = 0) -> torch.Tensor:
    """A mixture of Gaussians, as real embeddings cluster (on unstructured vectors every ANN degrades)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    return torch.from_numpy(c[rng.integers(centres, size=n)] + noise * rng.standard_normal((n, dim), dtype=np.float32))


def recall(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / exact.shape[1] for a, b in zip(approx, exact)]))


def neighbours_on_every_rank(search: str) -> list[list[int]]:
    """The job's way in: the features stream in blocks (here 700 rows, not a divisor of the
    items or of a rank's block)."""
    info = dist.init(device="cpu")  # CPU features and a CPU result, on a GPU host too
    features = ItemVectors.of(clustered())
    graph = knn_graph_neighbours(dataclasses.replace(features, block=700), K, ColumnSplit(info.rank, info.world_size),
                                 KnnSearch(search, 16, 64))
    return graph.tolist()


def test_hnsw_finds_the_exact_neighbours_at_one_and_two_ranks(ranks):
    exact = knn_graph_neighbours(clustered(), K, ColumnSplit())
    one = torch.tensor(ranks.run(neighbours_on_every_rank, "hnsw", nproc=1)[0])
    two = ranks.run(neighbours_on_every_rank, "hnsw", nproc=2)
    assert two[0] == two[1], "the ranks must build one graph"
    two = torch.tensor(two[0])
    assert one.shape == two.shape == exact.shape
    # each rank indexes only its block: 2 blocks are merged, every id is a real item
    assert int(two.min()) >= 0 and int(two.max()) < len(exact)
    assert recall(one, exact) > 0.98 and recall(two, exact) > 0.98, (recall(one, exact), recall(two, exact))
    assert (two == torch.arange(len(exact))[:, None]).any(1).float().mean() > 0.99  # self is (almost) always found


@pytest.mark.slow  # FREEDOM's parity at 2 and 4 ranks builds the same exact graph
def test_exact_search_does_not_depend_on_the_world_size(ranks):
    one, two = (ranks.run(neighbours_on_every_rank, "exact", nproc=p)[0] for p in (1, 2))
    assert torch.equal(torch.tensor(one).sort(1).values, torch.tensor(two).sort(1).values)


def test_low_hnsw_recall_is_measured_and_warned_about(caplog):
    """On unstructured vectors with a starved index the sampled recall is low: the job warns,
    naming the keys that fix it; on clustered ones it only logs the recall."""
    rng = np.random.default_rng(0)
    unstructured = torch.from_numpy(rng.standard_normal((3000, 48), dtype=np.float32))
    with caplog.at_level("INFO", logger="cliper_dist"):
        starved = knn_graph_neighbours(unstructured, K, ColumnSplit(), KnnSearch("hnsw", 4, 4))
    exact = knn_graph_neighbours(unstructured, K, ColumnSplit())
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert recall(starved, exact) < 0.9 and len(warned) == 1, (recall(starved, exact), warned)
    assert "model.hnsw_ef (now 4)" in warned[0] and "model.knn=exact" in warned[0]
    caplog.clear()
    with caplog.at_level("INFO", logger="cliper_dist"):
        knn_graph_neighbours(clustered(), K, ColumnSplit(), KnnSearch("hnsw", 16, 64))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert any("recall@11" in r.getMessage() for r in caplog.records)


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
