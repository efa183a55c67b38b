"""FREEDOM's item kNN graph: the FAISS HNSW search against the exact one, at 1 and 2 real ranks."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from cliper_dist import dist
from cliper_dist.data.features import ItemVectors
from cliper_dist.model.item_graph import KnnSearch, knn_graph_neighbours
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
    info = dist.init()
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
