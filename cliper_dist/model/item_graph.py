"""FREEDOM's frozen item-item graph, built once from the item features, split across ranks.

Per modality: the top-k cosine neighbours of every item (self included), unweighted,
normalised as FREEDOM does, D^-1/2 A D^-1/2 with the row degrees of A (= k) on both
sides, so every entry is 1/k. The modalities mix as mm_adj = w * image + (1 - w) * text,
kept as weighted bags of 2k neighbours (``ItemGraph``).

Two searches (``model.knn``), both split across ranks by item blocks:

- ``exact``: each rank finds the neighbours of its own block of items against all items, a
  block of rows at a time (never I x I); the blocks are summed into the whole graph.
- ``hnsw``: each rank builds a FAISS HNSW index of its own block of items (the build and the
  index memory split P ways), every item queries every rank's index, and the per-block top-k
  merge into the global top-k, as ``faiss.IndexShards`` does. Approximate: the graph depends
  on the number of ranks, and is the same on every rank of a run. Its recall is measured
  on a seeded sample of items against their exact neighbours, logged, and warned about
  when low (unstructured features: every ANN index degrades on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from cliper_dist import dist as cdist
from cliper_dist.model.graph import ItemGraph, knn_neighbours
from cliper_dist.parallel.columns import ColumnSplit


RECALL_SAMPLE = 256  # items whose exact neighbours check an approximate graph (sample x I x D products)
RECALL_WARN = 0.9  # below this sampled recall@k the job warns


@dataclass(frozen=True)
class KnnSearch:
    method: Literal["exact", "hnsw"] = "exact"
    hnsw_m: int = 16
    hnsw_ef: int = 64


def knn_graph_neighbours(features: torch.Tensor, k: int, split: ColumnSplit,
                         search: KnnSearch = KnnSearch()) -> torch.Tensor:
    """(I, k) top-k cosine neighbours of every item, the same on every rank."""
    if search.method == "hnsw":
        return hnsw_neighbours(features, k, split, search)
    n = features.shape[0]
    lo, hi = split.bounds(n)
    mine = knn_neighbours(features, k, rows=(lo, hi))
    if split.world_size == 1:
        return mine
    whole = mine.new_zeros(n, mine.shape[1])
    whole[lo:hi] = mine
    dist.all_reduce(whole)  # the blocks are disjoint: the sum is their union
    return whole


def hnsw_neighbours(features: torch.Tensor, k: int, split: ColumnSplit, search: KnnSearch) -> torch.Tensor:
    """Approximate top-k by inner product of the unit rows: this rank indexes its block, every
    row queries it, and the ranks' candidates (P x k per row) merge into the top k."""
    k = min(k, features.shape[0])
    unit = F.normalize(features.float(), dim=1).cpu().numpy()
    sims, ids = hnsw_block_candidates(unit, split.bounds(len(unit)), k, search)
    if split.world_size > 1:
        sims, ids = (gather_blocks(t.to(features.device), split).cpu() for t in (sims, ids))
    neighbours = merge_candidates(sims, ids, k)
    recall = sampled_recall(unit, neighbours, k)
    cdist.log.info("hnsw kNN graph: recall@%d %.3f against the exact neighbours of %d sampled items", k, recall,
                   min(RECALL_SAMPLE, len(unit)))
    if recall < RECALL_WARN:
        cdist.log.warning("hnsw kNN graph: recall@%d is only %.3f (< %.2f): the features look unstructured to "
                          "HNSW; raise model.hnsw_ef (now %d) or model.hnsw_m (now %d), or use model.knn=exact",
                          k, recall, RECALL_WARN, search.hnsw_ef, search.hnsw_m)
    return neighbours.to(features.device)


def sampled_recall(unit: np.ndarray, neighbours: torch.Tensor, k: int, sample: int = RECALL_SAMPLE) -> float:
    """recall@k of ``neighbours`` (I, k) against the exact top-k by inner product of the unit
    rows, on a seeded sample of items (the same on every rank)."""
    rows = np.sort(np.random.default_rng(0).choice(len(unit), size=min(sample, len(unit)), replace=False))
    whole = torch.from_numpy(unit)
    exact = (whole[rows] @ whole.T).topk(k, dim=1).indices
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(neighbours[rows], exact))
    return hits / (len(rows) * k)


def hnsw_block_candidates(unit: np.ndarray, block: tuple[int, int], k: int,
                          search: KnnSearch) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, item ids), each (n, <= k): every row's best matches among rows [lo, hi)
    by an HNSW index of that block (-inf where the block holds fewer)."""
    import faiss  # here: only this search needs it

    lo, hi = block
    index = faiss.IndexHNSWFlat(unit.shape[1], search.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = search.hnsw_ef
    index.add(unit[lo:hi])
    index.hnsw.efSearch = max(search.hnsw_ef, k)
    sims, ids = index.search(unit, min(k, hi - lo))
    sims, ids = torch.from_numpy(sims), torch.from_numpy(ids) + lo
    sims[ids < lo] = -torch.inf  # FAISS's -1: not found
    return sims, ids


def merge_candidates(sims: torch.Tensor, ids: torch.Tensor, k: int) -> torch.Tensor:
    """The k best of every row's candidates from all blocks, (n, k) item ids."""
    return ids.gather(1, sims.topk(k, dim=1).indices)


def gather_blocks(t: torch.Tensor, split: ColumnSplit) -> torch.Tensor:
    """Every rank's (n, c_r) ``t``, concatenated along the columns on every rank."""
    widths = [torch.zeros((), dtype=torch.int64, device=t.device) for _ in range(split.world_size)]
    dist.all_gather(widths, torch.tensor(t.shape[1], device=t.device))
    parts = [t.new_empty(t.shape[0], int(w)) for w in widths]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=1)


def freedom_item_graph(image: torch.Tensor | None, text: torch.Tensor | None, k: int, image_weight: float,
                       split: ColumnSplit, search: KnnSearch = KnnSearch()) -> ItemGraph:
    """mm_adj = w * kNN(image) + (1 - w) * kNN(text); with one modality, its kNN graph alone."""
    parts = [(f, w) for f, w in ((image, image_weight), (text, 1.0 - image_weight)) if f is not None]
    if len(parts) == 1:
        parts = [(parts[0][0], 1.0)]
    neighbours, weights = [], []
    for features, mix in parts:
        nbr = knn_graph_neighbours(features, k, split, search)
        neighbours.append(nbr)
        weights.append(torch.full(nbr.shape, mix / nbr.shape[1]))  # FREEDOM's normalisation: 1/k per entry
    return ItemGraph(torch.cat(neighbours, dim=1), torch.cat(weights, dim=1))
