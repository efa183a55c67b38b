"""FREEDOM's frozen item-item graph, built once from the item features, split across ranks.

Per modality: the top-k cosine neighbours of every item (self included), unweighted,
normalised as FREEDOM does, D^-1/2 A D^-1/2 with the row degrees of A (= k) on both
sides, so every entry is 1/k. The modalities mix as mm_adj = w * image + (1 - w) * text,
kept as weighted bags of 2k neighbours (``ItemGraph``). Each rank finds the neighbours of
its own block of items (against all items, a block of rows at a time, never I x I) and
the blocks are summed into the whole graph on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from cliper_dist.model.graph import ItemGraph, knn_neighbours
from cliper_dist.parallel.columns import ColumnSplit


def knn_graph_neighbours(features: torch.Tensor, k: int, split: ColumnSplit) -> torch.Tensor:
    """(I, k) top-k cosine neighbours of every item; rank r computes items ``split.bounds(I, r)``."""
    n = features.shape[0]
    lo, hi = split.bounds(n)
    mine = knn_neighbours(features, k, rows=(lo, hi))
    if split.world_size == 1:
        return mine
    whole = mine.new_zeros(n, mine.shape[1])
    whole[lo:hi] = mine
    dist.all_reduce(whole)  # the blocks are disjoint: the sum is their union
    return whole


def freedom_item_graph(image: torch.Tensor | None, text: torch.Tensor | None, k: int, image_weight: float,
                       split: ColumnSplit) -> ItemGraph:
    """mm_adj = w * kNN(image) + (1 - w) * kNN(text); with one modality, its kNN graph alone."""
    parts = [(f, w) for f, w in ((image, image_weight), (text, 1.0 - image_weight)) if f is not None]
    if len(parts) == 1:
        parts = [(parts[0][0], 1.0)]
    neighbours, weights = [], []
    for features, mix in parts:
        nbr = knn_graph_neighbours(features, k, split)
        neighbours.append(nbr)
        weights.append(torch.full(nbr.shape, mix / nbr.shape[1]))  # FREEDOM's normalisation: 1/k per entry
    return ItemGraph(torch.cat(neighbours, dim=1), torch.cat(weights, dim=1))
