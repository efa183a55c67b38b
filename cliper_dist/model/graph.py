"""Graphs of the FREEDOM backbone as sparse tensors: user-item propagation and item-item kNN.

Nodes are ordered users first (0..U-1), then items (U..U+I-1). All matrices are symmetric
normalised, D^-1/2 A D^-1/2, as LightGCN and FREEDOM use them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _sym_normalise(rows: np.ndarray, cols: np.ndarray, n: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of an unweighted graph given as (rows, cols) pairs, as sparse CSR."""
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = deg[nz] ** -0.5
    values = (inv_sqrt[rows] * inv_sqrt[cols]).astype(np.float32)
    coo = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(values), (n, n))
    return coo.coalesce().to_sparse_csr()


def user_item_adjacency(user: np.ndarray, item: np.ndarray, num_users: int, num_items: int) -> torch.Tensor:
    """Normalised bipartite adjacency of the given (training) edges, (U+I) x (U+I)."""
    rows = np.concatenate([user, item + num_users])
    cols = np.concatenate([item + num_users, user])
    return _sym_normalise(rows, cols, num_users + num_items)


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


def knn_item_graph(features: torch.Tensor, k: int, block: int = 4096) -> torch.Tensor:
    """Frozen item-item graph: top-k cosine neighbours per item (self included), unweighted,
    symmetric-normalised. Computed a block of rows at a time, never as an N x N matrix."""
    n = features.shape[0]
    normed = F.normalize(features.float(), dim=1)
    cols = []
    for lo in range(0, n, block):
        sim = normed[lo:lo + block] @ normed.T
        cols.append(sim.topk(min(k, n), dim=1).indices)
    col = torch.cat(cols).numpy().reshape(-1)
    row = np.repeat(np.arange(n), min(k, n))
    # FREEDOM normalises the kNN matrix by its row degrees on both sides (rows have k entries).
    deg = np.bincount(row, minlength=n).astype(np.float64)
    values = (deg[row] ** -0.5 * deg[col] ** -0.5).astype(np.float32)
    coo = torch.sparse_coo_tensor(torch.from_numpy(np.stack([row, col])), torch.from_numpy(values), (n, n))
    return coo.coalesce().to_sparse_csr()
