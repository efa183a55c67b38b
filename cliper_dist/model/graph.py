"""The two graphs of LightGCN and FREEDOM, and propagation over them.

- ``BipartiteGraph``: the symmetric-normalised user-item adjacency
  A = [[0, R], [R^T, 0]], R[u, i] = 1 / sqrt(d_u d_i), stored as R (U x I) and R^T (I x U)
  in CSR. One layer maps (users, items) -> (R items, R^T users): the user and item tables
  stay apart (no concatenated copy) and each product reads one table, which is faster
  than one product with the (U+I) x (U+I) matrix.
- ``ItemGraph``: FREEDOM's frozen item-item kNN graph as weighted bags: row i of S holds
  the weights of its neighbours, so (S x)[i] is a SUM-pooled weighted embedding-bag
  lookup of x.

Everything here acts on whatever columns it is given: under the column-parallel layout
each rank propagates its own columns with no communication.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def csr_from_pairs(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int) -> torch.Tensor:
    """A CSR tensor from (row, col, value) triples without duplicates, built in numpy."""
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(cols[order].astype(np.int64)),
                                   torch.from_numpy(values[order].astype(np.float32)), (n_rows, n_cols),
                                   check_invariants=False)


class _LayerMeanAt(torch.autograd.Function):
    """Rows of LightGCN's layer mean, (sum_{l=0..L} A^l x)[rows] / (L + 1), over a bipartite A.

    Backward: grad_x = sum_l (A^T)^l G with G the row gradients scattered to full size and
    divided by L + 1, evaluated by Horner's rule h <- G + A h (A is symmetric), one fused
    ``addmm`` per layer and side, with no other full-size temporaries.
    """

    @staticmethod
    def forward(ctx, users: torch.Tensor, items: torch.Tensor, graph: "BipartiteGraph", layers: int,
                user_rows: torch.Tensor, item_rows: torch.Tensor):
        acc_u, acc_i = graph.layer_sum(users, items, layers)
        ctx.graph, ctx.layers = graph, layers
        ctx.save_for_backward(user_rows, item_rows)
        scale = 1.0 / (layers + 1)
        return acc_u[user_rows] * scale, acc_i[item_rows] * scale

    @staticmethod
    def backward(ctx, grad_u: torch.Tensor, grad_i: torch.Tensor):
        user_rows, item_rows = ctx.saved_tensors
        graph, scale = ctx.graph, 1.0 / (ctx.layers + 1)
        g_u = grad_u.new_zeros(graph.num_users, grad_u.shape[1]).index_add_(0, user_rows, grad_u * scale)
        g_i = grad_i.new_zeros(graph.num_items, grad_i.shape[1]).index_add_(0, item_rows, grad_i * scale)
        h_u, h_i = g_u, g_i
        for _ in range(ctx.layers):
            h_u, h_i = torch.addmm(g_u, graph.r, h_i), torch.addmm(g_i, graph.r_t, h_u)
        return h_u, h_i, None, None, None, None


@dataclass
class BipartiteGraph:
    """Normalised user-item adjacency: ``r`` (U x I) and its transpose ``r_t`` (I x U), CSR."""

    r: torch.Tensor
    r_t: torch.Tensor

    @classmethod
    def from_edges(cls, user: np.ndarray, item: np.ndarray, num_users: int, num_items: int) -> "BipartiteGraph":
        """From distinct (user, item) training pairs; degrees count the given edges."""
        d_user = np.bincount(user, minlength=num_users).astype(np.float64)
        d_item = np.bincount(item, minlength=num_items).astype(np.float64)
        values = (d_user[user] * d_item[item]) ** -0.5
        return cls(csr_from_pairs(user, item, values, num_users, num_items),
                   csr_from_pairs(item, user, values, num_items, num_users))

    @property
    def num_users(self) -> int:
        return self.r.shape[0]

    @property
    def num_items(self) -> int:
        return self.r.shape[1]

    def to(self, device: torch.device) -> "BipartiteGraph":
        return BipartiteGraph(self.r.to(device), self.r_t.to(device))

    def layer_sum(self, users: torch.Tensor, items: torch.Tensor, layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum_{l=0..L} A^l x) for x = (users, items), without autograd."""
        acc_u, acc_i, y_u, y_i = users, items, users, items
        for layer in range(layers):
            if layer == layers - 1:  # the last layer only accumulates: one pass
                acc_u, acc_i = torch.addmm(acc_u, self.r, y_i), torch.addmm(acc_i, self.r_t, y_u)
            else:
                y_u, y_i = torch.sparse.mm(self.r, y_i), torch.sparse.mm(self.r_t, y_u)
                acc_u, acc_i = acc_u + y_u, acc_i + y_i
        return acc_u, acc_i

    @torch.no_grad()
    def layer_mean(self, users: torch.Tensor, items: torch.Tensor, layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN's output for every node: the mean of layers 0..L (evaluation)."""
        acc_u, acc_i = self.layer_sum(users, items, layers)
        return acc_u / (layers + 1), acc_i / (layers + 1)

    def layer_mean_at(self, users: torch.Tensor, items: torch.Tensor, layers: int, user_rows: torch.Tensor,
                      item_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer mean at ``user_rows`` and ``item_rows`` only, differentiable in the tables."""
        return _LayerMeanAt.apply(users, items, self, layers, user_rows, item_rows)

    @torch.no_grad()
    def reach(self, user_rows: torch.Tensor, item_rows: torch.Tensor, layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The table rows that ``layer_mean_at(..., user_rows, item_rows)`` depends on: those
        within ``layers`` hops. Found by propagating an indicator (positive weights: no
        cancellation), the same on every rank."""
        s_u = torch.zeros(self.num_users, 1, device=self.r.device).index_fill_(0, user_rows, 1.0)
        s_i = torch.zeros(self.num_items, 1, device=self.r.device).index_fill_(0, item_rows, 1.0)
        h_u, h_i = s_u, s_i
        for _ in range(layers):
            h_u, h_i = torch.addmm(s_u, self.r, h_i), torch.addmm(s_i, self.r_t, h_u)
        return h_u[:, 0].nonzero()[:, 0], h_i[:, 0].nonzero()[:, 0]


def degree_sensitive_prune(user: np.ndarray, item: np.ndarray, num_users: int, num_items: int,
                           keep_ratio: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """FREEDOM's edge pruning: keep int(|E| * keep_ratio) edges, sampled without replacement
    with probability proportional to 1 / sqrt(d_u * d_i), so hub edges are dropped first."""
    n_keep = int(len(user) * keep_ratio)
    d_user = np.bincount(user, minlength=num_users).astype(np.float64)
    d_item = np.bincount(item, minlength=num_items).astype(np.float64)
    weight = 1.0 / np.sqrt(d_user[user] * d_item[item])
    # Efraimidis-Spirakis: the n_keep largest u^(1/w) are a weighted sample without replacement.
    keys = np.log(rng.random(len(user))) / weight
    keep = np.argpartition(-keys, n_keep - 1)[:n_keep] if 0 < n_keep < len(user) else np.arange(n_keep)
    return user[keep], item[keep]


@dataclass
class ItemGraph:
    """A sparse I x I matrix S as weighted bags: S[i, neighbours[i, j]] += weights[i, j]
    (a neighbour may appear twice, e.g. once per modality; its weights add up)."""

    neighbours: torch.Tensor  # (I, K) int64
    weights: torch.Tensor  # (I, K) float32

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


def knn_neighbours(features: torch.Tensor, k: int, rows: tuple[int, int] | None = None,
                   block: int = 4096) -> torch.Tensor:
    """Top-k cosine neighbours (self included) of rows [lo, hi) (default all) against all
    rows, (hi - lo, k) indices, computed a block of rows at a time (never N x N)."""
    n = features.shape[0]
    lo, hi = rows or (0, n)
    normed = F.normalize(features.float(), dim=1)
    out = [(normed[start:min(hi, start + block)] @ normed.T).topk(min(k, n), dim=1).indices
           for start in range(lo, hi, block)]
    return torch.cat(out) if out else torch.empty(0, min(k, n), dtype=torch.int64, device=features.device)
