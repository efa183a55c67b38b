"""Item-item graphs and every kNN search that builds them, split across ranks.

``ItemGraph`` holds a sparse I x I matrix S as weighted bags: row i lists its neighbours
and their weights, so (S x)[i] is one SUM-pooled weighted embedding-bag lookup of x. Two
models build one:

- FREEDOM's frozen graph (``freedom_item_graph``), built once from the item features: per
  modality the top-k cosine neighbours of every item (self included), unweighted,
  normalised as FREEDOM does, D^-1/2 A D^-1/2 with the row degrees of A (= k) on both
  sides, so every entry is 1/k. The modalities mix as mm_adj = w * image + (1 - w) * text,
  kept as weighted bags of 2k neighbours.
- LATTICE's graphs (``knn_bags``, ``sym_normalised``): the top-k neighbours weighted by
  their cosine similarity, differentiable in the features, symmetric-normalised.

Two searches find the neighbours (FREEDOM's ``model.knn``), both split across ranks by
item blocks:

- ``exact``: each rank finds the neighbours of its own block of items against all items, a
  block of rows at a time (never I x I); the blocks are summed into the whole graph.
- ``hnsw``: each rank builds a FAISS HNSW index of its own block of items (the build and the
  index memory split P ways), every item queries every rank's index, and the per-block top-k
  merge into the global top-k, as ``faiss.IndexShards`` does. The queries stream a block
  at a time (``ItemVectors``): no rank holds all the features. Approximate: the graph depends
  on the number of ranks, and is the same on every rank of a run. Its recall is measured
  on a seeded sample of items against their exact neighbours, logged, and warned about
  when low (unstructured features: every ANN index degrades on them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from cliper_dist import dist as cdist
from cliper_dist.data.features import ItemVectors
from cliper_dist.model.bipartite import csr_from_pairs
from cliper_dist.parallel.columns import ColumnSplit

RECALL_SAMPLE = 256  # items whose exact neighbours check an approximate graph (sample x I x D products)
RECALL_WARN = 0.9  # below this sampled recall@k the job warns


@dataclass
class ItemGraph:
    """A sparse I x I matrix S as weighted bags: S[i, neighbours[i, j]] += weights[i, j]
    (a neighbour may appear twice, e.g. once per modality; its weights add up)."""

    neighbours: torch.Tensor  # (I, K) int64
    weights: torch.Tensor  # (I, K) float32
    _transposed: torch.Tensor | None = field(default=None, init=False, repr=False)

    def to(self, device: torch.device) -> "ItemGraph":
        return ItemGraph(self.neighbours.to(device), self.weights.to(device))

    def rows(self, x: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """(S x)[items] (all rows when ``items`` is None): one weighted SUM embedding bag."""
        nbr, w = (self.neighbours, self.weights) if items is None else (self.neighbours[items], self.weights[items])
        return F.embedding_bag(nbr, x, per_sample_weights=w, mode="sum")

    def power_rows(self, x: torch.Tensor, hops: int, items: torch.Tensor | None = None) -> torch.Tensor:
        """(S^hops x)[items]: full products for all hops but the last, which takes the rows only."""
        for _ in range(hops - 1):
            x = self.rows(x)
        return self.rows(x, items) if hops > 0 else (x if items is None else x[items])

    def transposed_csr(self) -> torch.Tensor:
        """S^T in CSR, repeated neighbours summed; built on first use (a training step's
        backward) and kept: S is frozen."""
        if self._transposed is None:
            n, k = self.neighbours.shape
            key = self.neighbours.cpu().numpy().reshape(-1) * n + np.repeat(np.arange(n), k)
            key, where = np.unique(key, return_inverse=True)
            values = np.bincount(where, weights=self.weights.detach().cpu().numpy().reshape(-1))
            self._transposed = csr_from_pairs(key // n, key % n, values, n, n).to(self.neighbours.device)
        return self._transposed

    @torch.no_grad()
    def add_row_gradient(self, out: torch.Tensor, items: torch.Tensor, grad: torch.Tensor,
                         scratch: torch.Tensor) -> torch.Tensor:
        """out += the gradient of (S x)[items] with respect to x, S^T G for the rows' gradient
        ``grad`` scattered to full size G (in ``scratch``, shaped as x): one sparse product,
        where adding each row's K weighted neighbours one by one costs about four times it."""
        return out.addmm_(self.transposed_csr(), scratch.zero_().index_add_(0, items, grad))

    @torch.no_grad()
    def reach(self, items: torch.Tensor, hops: int) -> torch.Tensor:
        """The rows of x that ``power_rows(x, hops, items)`` depends on."""
        mask = torch.zeros(self.neighbours.shape[0], dtype=torch.bool, device=self.neighbours.device)
        mask[items] = True
        for _ in range(hops):
            nxt = torch.zeros_like(mask)
            nxt[self.neighbours[mask].reshape(-1)] = True
            mask = nxt
        return mask.nonzero()[:, 0]


@dataclass(frozen=True)
class KnnSearch:
    method: Literal["exact", "hnsw"] = "exact"
    hnsw_m: int = 16
    hnsw_ef: int = 64


def knn_neighbours(features: torch.Tensor, k: int, rows: tuple[int, int] | None = None,
                   block: int = 4096) -> torch.Tensor:
    """Top-k cosine neighbours (self included) of rows [lo, hi) (default all) against all
    rows, (hi - lo, k) indices, computed a block of rows at a time (never N x N)."""
    n = features.shape[0]
    lo, hi = rows or (0, n)
    normed = F.normalize(features.float(), dim=1)
    progress = cdist.Progress(hi - lo, desc="knn", unit="item")
    out = []
    for start in range(lo, hi, block):
        out.append((normed[start:min(hi, start + block)] @ normed.T).topk(min(k, n), dim=1).indices)
        progress.update(len(out[-1]))
    progress.close()
    return torch.cat(out) if out else torch.empty(0, min(k, n), dtype=torch.int64, device=features.device)


def knn_graph_neighbours(vectors: torch.Tensor | ItemVectors, k: int, split: ColumnSplit,
                         search: KnnSearch = KnnSearch(), device: torch.device | None = None) -> torch.Tensor:
    """(I, k) top-k cosine neighbours of every item, the same on every rank, on ``device``
    (a tensor's own when given one)."""
    if isinstance(vectors, torch.Tensor):
        vectors, device = ItemVectors.of(vectors), vectors.device
    device = device or torch.device("cpu")
    if search.method == "hnsw":
        return hnsw_neighbours(vectors, k, split, search, device).to(device)
    features = vectors.whole().to(device)  # exact search is for catalogs that fit
    n = features.shape[0]
    lo, hi = split.bounds(n)
    mine = knn_neighbours(features, k, rows=(lo, hi))
    if split.world_size == 1:
        return mine
    whole = mine.new_zeros(n, mine.shape[1])
    whole[lo:hi] = mine
    dist.all_reduce(whole)  # the blocks are disjoint: the sum is their union
    return whole


def hnsw_neighbours(vectors: ItemVectors, k: int, split: ColumnSplit, search: KnnSearch,
                    device: torch.device) -> torch.Tensor:
    """Approximate top-k by inner product of the unit rows: this rank indexes its block, every
    row queries it, and the ranks' candidates (P x k per row) merge into the top k.

    The vectors stream a block at a time: the queries, and with them the exact neighbours of
    the recall sample. A rank holds its block's index, never all the vectors.
    """
    n = vectors.num_items
    k = min(k, n)
    lo, hi = split.bounds(n)
    index = hnsw_index(vectors, (lo, hi), search)
    sample = recall_sample(n)
    sample_unit = unit(vectors.read(sample))
    found, exact = [], None
    for start, block in vectors.blocks():
        block = unit(block)
        found.append(block_candidates(index, block, k, (lo, hi), search))
        exact = merge_top_k(exact, sample_unit @ block.T, start, k)
    sims, ids = (torch.cat(parts) for parts in zip(*found))
    if split.world_size > 1:
        sims, ids = (gather_blocks(t.to(device), split).cpu() for t in (sims, ids))
    neighbours = merge_candidates(sims, ids, k)
    recall = overlap(neighbours[torch.from_numpy(sample)], exact[1])
    cdist.log.info("hnsw kNN graph: recall@%d %.3f against the exact neighbours of %d sampled items", k, recall,
                   len(sample))
    if recall < RECALL_WARN:
        cdist.log.warning("hnsw kNN graph: recall@%d is only %.3f (< %.2f): the features look unstructured to "
                          "HNSW; raise model.hnsw_ef (now %d) or model.hnsw_m (now %d), or use model.knn=exact",
                          k, recall, RECALL_WARN, search.hnsw_ef, search.hnsw_m)
    return neighbours


def unit(rows: torch.Tensor) -> torch.Tensor:
    return F.normalize(rows.float(), dim=1).cpu()


def recall_sample(num_items: int, size: int = RECALL_SAMPLE) -> np.ndarray:
    """The items whose exact neighbours check an approximate graph: seeded, the same on every rank."""
    return np.sort(np.random.default_rng(0).choice(num_items, size=min(size, num_items), replace=False))


def merge_top_k(best: tuple[torch.Tensor, torch.Tensor] | None, sims: torch.Tensor, first: int,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, ids) of the top k so far, updated with ``sims`` of the items from ``first`` on."""
    vals, ids = sims.topk(min(k, sims.shape[1]), dim=1)
    if best is not None:
        vals, ids = torch.cat([best[0], vals], dim=1), torch.cat([best[1], ids + first], dim=1)
        top = vals.topk(k, dim=1).indices
        return vals.gather(1, top), ids.gather(1, top)
    return vals, ids + first


def overlap(found: torch.Tensor, truth: torch.Tensor) -> float:
    """recall of ``found`` (n, k) against ``truth`` (n, k): the share of true ids found."""
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth))
    return hits / truth.numel()


def hnsw_index(vectors: ItemVectors, block: tuple[int, int], search: KnnSearch):
    """A FAISS HNSW index of the unit rows of items [lo, hi), by inner product, added a block
    of ``vectors.block`` items at a time."""
    import faiss  # here: only this search needs it

    index = faiss.IndexHNSWFlat(vectors.width, search.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = search.hnsw_ef
    for _, rows in vectors.blocks(*block):
        index.add(unit(rows).numpy())
    return index


def block_candidates(index, queries: torch.Tensor, k: int, block: tuple[int, int],
                     search: KnnSearch) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, item ids), each (n, <= k): the best matches of every query in ``index``,
    which holds items [lo, hi) (-inf where the block holds fewer)."""
    lo, hi = block
    index.hnsw.efSearch = max(search.hnsw_ef, k)
    sims, ids = index.search(queries.numpy(), min(k, hi - lo))
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


def freedom_item_graph(image: torch.Tensor | ItemVectors | None, text: torch.Tensor | ItemVectors | None, k: int,
                       image_weight: float, split: ColumnSplit, search: KnnSearch = KnnSearch(),
                       device: torch.device | None = None) -> ItemGraph:
    """mm_adj = w * kNN(image) + (1 - w) * kNN(text); with one modality, its kNN graph alone."""
    parts = [(f, w) for f, w in ((image, image_weight), (text, 1.0 - image_weight)) if f is not None]
    if len(parts) == 1:
        parts = [(parts[0][0], 1.0)]
    neighbours, weights = [], []
    for features, mix in parts:
        nbr = knn_graph_neighbours(features, k, split, search, device)
        neighbours.append(nbr)
        weights.append(torch.full(nbr.shape, mix / nbr.shape[1]))  # FREEDOM's normalisation: 1/k per entry
    return ItemGraph(torch.cat(neighbours, dim=1), torch.cat(weights, dim=1))


def knn_bags(features: torch.Tensor, k: int, split: ColumnSplit,
             block_floats: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """K(features) as bags: (I, k) neighbours and their cosine similarities, differentiable
    in ``features`` (whole rows, the same on every rank). The similarities gather a block
    of rows' neighbours at a time (block x k x D floats, never I x k x D)."""
    neighbours = knn_graph_neighbours(features.detach(), k, split)
    unit = features / features.norm(dim=1, keepdim=True)  # MMRec's build_sim: no epsilon
    block = max(1, block_floats // (neighbours.shape[1] * unit.shape[1]))
    cosines = [torch.bmm(unit[lo:lo + block, None], unit[neighbours[lo:lo + block]].transpose(1, 2))[:, 0]
               for lo in range(0, len(unit), block)]
    return neighbours, torch.cat(cosines)


def sym_normalised(neighbours: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The values of N(S) = D^-1/2 S D^-1/2 for bags S, D its row sums (0 where a row sums to 0)."""
    inv = values.sum(1).pow(-0.5)
    inv = torch.where(torch.isinf(inv), torch.zeros_like(inv), inv)
    return inv[:, None] * values * inv[neighbours]
