"""Graphs of the FREEDOM backbone as sparse tensors: user-item propagation and item-item kNN.

Nodes are ordered users first (0..U-1), then items (U..U+I-1). All matrices are symmetric
normalised, D^-1/2 A D^-1/2, as LightGCN and FREEDOM use them.

Matrices are CSR tensors wrapped in :class:`SparseGraph`, whose ``mm`` carries its own
backward: d(A x)/dx applied to g is A^T g, and A^T is either A itself (the user-item graph
is symmetric) or a transpose built once. torch's generic sparse backward re-transposes the
CSR matrix on every call (a sort of all nnz), which cost more than the product itself.
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


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mat: torch.Tensor, mat_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.mat_t = mat_t
        return torch.sparse.mm(mat, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, torch.sparse.mm(ctx.mat_t, grad.contiguous())


@dataclass
class SparseGraph:
    """A frozen sparse matrix and its transpose (the same tensor when symmetric)."""

    mat: torch.Tensor
    mat_t: torch.Tensor

    @classmethod
    def symmetric(cls, mat: torch.Tensor) -> "SparseGraph":
        return cls(mat, mat)

    @classmethod
    def general(cls, mat: torch.Tensor) -> "SparseGraph":
        return cls(mat, mat.to_sparse_coo().t().coalesce().to_sparse_csr())

    @property
    def shape(self) -> torch.Size:
        return self.mat.shape

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad:
            return torch.sparse.mm(self.mat, x)
        return _SpMM.apply(self.mat, self.mat_t, x)

    def to(self, device: torch.device) -> "SparseGraph":
        mat = self.mat.to(device)
        return SparseGraph(mat, mat if self.mat_t is self.mat else self.mat_t.to(device))

    def dense(self) -> torch.Tensor:
        return self.mat.to_dense()


class _LayerMeanAt(torch.autograd.Function):
    """(sum_{l=0..L} A^l x)[index] / (L + 1) with a hand-written backward.

    Backward: grad_x = sum_l (A^T)^l G with G = the row gradients scattered to full size
    / (L + 1), evaluated by Horner's rule h <- G + A^T h, one fused ``addmm`` per layer.
    Against autograd over the layer loop this saves the full-size temporaries (zero
    fills, additions, gradient accumulations) that dominate a step on a CPU whose memory
    bandwidth is the limit.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, mat: torch.Tensor, mat_t: torch.Tensor, layers: int,
                index: torch.Tensor) -> torch.Tensor:
        acc, y = x, x
        for layer in range(layers):
            if layer == layers - 1:
                acc = torch.addmm(acc, mat, y)  # acc + A y in one pass
            else:
                y = torch.sparse.mm(mat, y)
                acc = acc + y
        ctx.mat_t, ctx.layers, ctx.shape = mat_t, layers, x.shape
        ctx.save_for_backward(index)
        return acc[index] * (1.0 / (layers + 1))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        g = torch.zeros(ctx.shape, dtype=grad.dtype, device=grad.device)
        g.index_add_(0, index, grad * (1.0 / (ctx.layers + 1)))
        h = g
        for _ in range(ctx.layers):
            h = torch.addmm(g, ctx.mat_t, h)
        return h, None, None, None, None


def layer_mean_at(graph: SparseGraph, x: torch.Tensor, layers: int, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of LightGCN's layer mean over ``graph``: (sum_{l=0..L} A^l x / (L+1))[index]."""
    return _LayerMeanAt.apply(x, graph.mat, graph.mat_t, layers, index)


def _sym_normalise(rows: np.ndarray, cols: np.ndarray, n: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of an unweighted graph given as (rows, cols) pairs, as sparse CSR."""
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = deg[nz] ** -0.5
    return csr_from_pairs(rows, cols, inv_sqrt[rows] * inv_sqrt[cols], n, n)


def user_item_adjacency(user: np.ndarray, item: np.ndarray, num_users: int, num_items: int) -> SparseGraph:
    """Normalised bipartite adjacency of the given (training) edges, (U+I) x (U+I).

    The (user, item) pairs must be distinct (a dataset's training split is).
    """
    rows = np.concatenate([user, item + num_users])
    cols = np.concatenate([item + num_users, user])
    return SparseGraph.symmetric(_sym_normalise(rows, cols, num_users + num_items))


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


def knn_neighbours(features: torch.Tensor, k: int, block: int = 4096) -> torch.Tensor:
    """(N, k) indices of each row's top-k cosine neighbours (self included), a block at a time."""
    n = features.shape[0]
    normed = F.normalize(features.float(), dim=1)
    out = []
    for lo in range(0, n, block):
        sim = normed[lo:lo + block] @ normed.T
        out.append(sim.topk(min(k, n), dim=1).indices)
    return torch.cat(out)


def knn_item_graph(features: torch.Tensor, k: int, block: int = 4096) -> torch.Tensor:
    """Frozen item-item graph: top-k cosine neighbours per item (self included), unweighted,
    normalised as FREEDOM does (D^-1/2 A D^-1/2 with the row degrees of A on both sides).
    Computed a block of rows at a time, never as an N x N matrix. Returns CSR."""
    n = features.shape[0]
    kk = min(k, n)
    col = knn_neighbours(features, k, block).numpy().reshape(-1).astype(np.int64)
    row = np.repeat(np.arange(n, dtype=np.int64), kk)
    # FREEDOM: d = A.sum(-1) (row sums, = k), values = d[row]^-1/2 * d[col]^-1/2.
    deg = np.bincount(row, minlength=n).astype(np.float64)
    return csr_from_pairs(row, col, deg[row] ** -0.5 * deg[col] ** -0.5, n, n)
