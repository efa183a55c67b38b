"""The user-item graph and propagation over it, without autograd (``propagation`` adds the backward).

``BipartiteGraph`` is the symmetric-normalised user-item adjacency
A = [[0, R], [R^T, 0]], R[u, i] = 1 / sqrt(d_u d_i), stored as R (U x I) and R^T (I x U)
in CSR. One layer maps (users, items) -> (R items, R^T users): the user and item tables
stay apart (no concatenated copy) and each product reads one table, which is faster than
one product with the (U+I) x (U+I) matrix. LATTICE's D^-1 (A + I) adds self-loop weights
and, not being symmetric, its transpose for the backward; MMGCN's D^-1 A the same without
self-loops. FREEDOM prunes the graph's edges every epoch (``degree_sensitive_prune``).

Everything here acts on whatever columns it is given: under the column-parallel layout
each rank propagates its own columns with no communication.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cliper_dist.model.workspace import HORNER, Workspace


def csr_from_pairs(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int) -> torch.Tensor:
    """A CSR tensor from (row, col, value) triples without duplicates, built in numpy.

    Indices are int32 while they fit: MKL's CPU kernel takes int32, and torch converts int64
    indices on every product (a copy of the whole matrix's indices each time)."""
    index = np.int32 if max(len(rows), n_rows, n_cols) < 2**31 else np.int64
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n_rows + 1, dtype=index)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(cols[order].astype(index)),
                                   torch.from_numpy(values[order].astype(np.float32)), (n_rows, n_cols),
                                   check_invariants=False)


@dataclass
class BipartiteGraph:
    """A user-item propagation matrix [[diag(loop_u), R], [R_t, diag(loop_i)]]: ``r`` (U x I)
    and ``r_t`` (I x U) in CSR, self-loop weights ``loop_u``/``loop_i`` ((n, 1), or None),
    and ``adjoint``, its transpose (None: the matrix is symmetric)."""

    r: torch.Tensor
    r_t: torch.Tensor
    loop_u: torch.Tensor | None = None
    loop_i: torch.Tensor | None = None
    adjoint: "BipartiteGraph | None" = None

    @classmethod
    def from_edges(cls, user: np.ndarray, item: np.ndarray, num_users: int, num_items: int) -> "BipartiteGraph":
        """D^-1/2 A D^-1/2 (LightGCN's) from distinct (user, item) training pairs; degrees count the given edges."""
        d_user = np.bincount(user, minlength=num_users).astype(np.float64)
        d_item = np.bincount(item, minlength=num_items).astype(np.float64)
        values = (d_user[user] * d_item[item]) ** -0.5
        return cls(csr_from_pairs(user, item, values, num_users, num_items),
                   csr_from_pairs(item, user, values, num_items, num_users))

    @classmethod
    def mean_with_self(cls, user: np.ndarray, item: np.ndarray, num_users: int, num_items: int) -> "BipartiteGraph":
        """D^-1 (A + I) (LATTICE's): each node averages itself and its neighbours; D = degree + 1.
        Its transpose (A + I) D^-1 is the adjoint."""
        return cls._row_mean(user, item, num_users, num_items, self_loops=True)

    @classmethod
    def neighbour_mean(cls, user: np.ndarray, item: np.ndarray, num_users: int, num_items: int) -> "BipartiteGraph":
        """D^-1 A (MMGCN's mean aggregation): each node averages its neighbours; a node without
        any gets zeros. Its transpose A D^-1 is the adjoint."""
        return cls._row_mean(user, item, num_users, num_items, self_loops=False)

    @classmethod
    def _row_mean(cls, user: np.ndarray, item: np.ndarray, num_users: int, num_items: int,
                  self_loops: bool) -> "BipartiteGraph":
        loop = 1.0 if self_loops else 0.0
        d_user = np.bincount(user, minlength=num_users).astype(np.float64) + loop
        d_item = np.bincount(item, minlength=num_items).astype(np.float64) + loop
        loop_u = torch.from_numpy(1.0 / d_user).float()[:, None] if self_loops else None
        loop_i = torch.from_numpy(1.0 / d_item).float()[:, None] if self_loops else None
        forward = cls(csr_from_pairs(user, item, 1.0 / d_user[user], num_users, num_items),
                      csr_from_pairs(item, user, 1.0 / d_item[item], num_items, num_users), loop_u, loop_i)
        forward.adjoint = cls(csr_from_pairs(user, item, 1.0 / d_item[item], num_users, num_items),
                              csr_from_pairs(item, user, 1.0 / d_user[user], num_items, num_users), loop_u, loop_i)
        return forward

    def transposed(self) -> "BipartiteGraph":
        return self if self.adjoint is None else self.adjoint

    @property
    def num_users(self) -> int:
        return self.r.shape[0]

    @property
    def num_items(self) -> int:
        return self.r.shape[1]

    def to(self, device: torch.device) -> "BipartiteGraph":
        def moved(t):
            return None if t is None else t.to(device)

        graph = BipartiteGraph(self.r.to(device), self.r_t.to(device), moved(self.loop_u), moved(self.loop_i))
        graph.adjoint = None if self.adjoint is None else self.adjoint.to(device)
        return graph

    def layer_sum(self, users: torch.Tensor, items: torch.Tensor, layers: int, workspace: Workspace,
                  into_x: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """sum_{l=0..L} A^l x for x = (users, items), without autograd, by Horner's rule
        t <- x + A t: per layer and side one copy of x and one in-place sparse product
        (``addmm_``; torch.sparse.mm allocates its result, and a temporary, anew each call,
        which cost three times the product on CPU). Layers run in ``workspace``'s ``HORNER``
        blocks. ``into_x``: x is scratch, and the last layer accumulates into it."""
        t_u, t_i = users, items  # L = 0: x itself
        for layer in range(layers):
            if into_x and layer == layers - 1 and layer > 0:  # x + A t into x (t is another block)
                out_u, out_i = users, items
            else:
                out_u, out_i = workspace.pair(HORNER[layer % 2], users.shape, items.shape, users)
                out_u.copy_(users)
                out_i.copy_(items)
            out_u.addmm_(self.r, t_i)
            out_i.addmm_(self.r_t, t_u)
            if self.loop_u is not None:
                out_u.addcmul_(self.loop_u, t_u)
                out_i.addcmul_(self.loop_i, t_i)
            t_u, t_i = out_u, out_i
        return t_u, t_i

    @torch.no_grad()
    def layer_mean(self, users: torch.Tensor, items: torch.Tensor, layers: int,
                   workspace: Workspace | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN's output for every node: the mean of layers 0..L (evaluation). The layers
        run in ``workspace``'s blocks (a training step's, idle between steps) and the last one
        is handed over as the result, the others freed: one full-size block per side remains,
        where a step holds two."""
        if layers == 0:
            return users.clone(), items.clone()
        workspace = workspace or Workspace()
        acc_u, acc_i = self.layer_sum(users, items, layers, workspace)
        workspace.clear()
        return acc_u.div_(layers + 1), acc_i.div_(layers + 1)

    def powers(self, users: torch.Tensor, items: torch.Tensor, layers: int, workspace: Workspace):
        """Yield A^l x for l = 1..L, x = (users, items), in ``workspace``'s ``HORNER`` blocks:
        each yielded pair is valid until the next but one."""
        p_u, p_i = users, items
        for layer in range(layers):
            n_u, n_i = workspace.pair(HORNER[layer % 2], users.shape, items.shape, users)
            p_u, p_i = n_u.addmm_(self.r, p_i, beta=0), n_i.addmm_(self.r_t, p_u, beta=0)
            yield p_u, p_i

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A x for the stacked rows x = [users; items], without autograd."""
        u, out = self.num_users, torch.empty_like(x)
        out[:u].addmm_(self.r, x[u:], beta=0)
        out[u:].addmm_(self.r_t, x[:u], beta=0)
        if self.loop_u is not None:
            out[:u].addcmul_(self.loop_u, x[:u])
            out[u:].addcmul_(self.loop_i, x[u:])
        return out

    @torch.no_grad()
    def reach(self, user_rows: torch.Tensor, item_rows: torch.Tensor, layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The table rows that the layer mean at ``user_rows`` and ``item_rows`` depends on: those
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
