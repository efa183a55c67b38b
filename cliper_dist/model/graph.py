"""The two graphs of LightGCN and FREEDOM, and propagation over them.

- ``BipartiteGraph``: the symmetric-normalised user-item adjacency
  A = [[0, R], [R^T, 0]], R[u, i] = 1 / sqrt(d_u d_i), stored as R (U x I) and R^T (I x U)
  in CSR. One layer maps (users, items) -> (R items, R^T users): the user and item tables
  stay apart (no concatenated copy) and each product reads one table, which is faster
  than one product with the (U+I) x (U+I) matrix. LATTICE's D^-1 (A + I) adds self-loop
  weights and, not being symmetric, its transpose for the backward.
- ``ItemGraph``: FREEDOM's frozen item-item kNN graph as weighted bags: row i of S holds
  the weights of its neighbours, so (S x)[i] is a SUM-pooled weighted embedding-bag
  lookup of x.

Everything here acts on whatever columns it is given: under the column-parallel layout
each rank propagates its own columns with no communication.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cliper_dist import dist


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


class Workspace:
    """Full-size blocks that every training step reuses, by name. On CPU a fresh block above
    glibc's mmap threshold is page-faulted in anew on every step; a block is reallocated only
    when its shape changes. One forward and its backward use it at a time: the backward
    takes the forward's blocks, which are free again by then."""

    def __init__(self):
        self._blocks: dict[str, torch.Tensor] = {}
        self._lent: dict[int, str] = {}  # data_ptr -> name of a block handed over as a gradient

    def block(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        buf = self._blocks.get(name)
        if buf is None or buf.shape != shape or buf.device != like.device:
            buf = self._blocks[name] = like.new_empty(shape)
        return buf

    def release(self, tensor: torch.Tensor) -> None:
        """Hand ``tensor``'s block over to its new holder (a gradient; autograd takes a tensor
        nobody else holds without copying it) until ``take_back``."""
        for name, buf in list(self._blocks.items()):
            if buf is tensor:
                del self._blocks[name]
                self._lent[tensor.data_ptr()] = name

    def take_back(self, tensors) -> None:
        """Reclaim the lent blocks among ``tensors`` (the gradients, once the optimizer has
        used them), so the next step reuses their memory instead of allocating: on CPU a
        freed block's memory is split up by small allocations and the heap grows."""
        for t in tensors:
            name = self._lent.get(t.data_ptr())
            if name is not None:
                self._blocks[name] = t
        self._lent = {}

    def clear(self) -> None:
        """Free every block (evaluation needs the memory; the next step allocates them again)."""
        self._blocks, self._lent = {}, {}


@dataclass
class BatchRows:
    """What a training step reads of the ID tables at its rows (see ``BipartiteGraph.batch_rows``)."""

    users: torch.Tensor  # LightGCN's layer mean at the user rows
    items: torch.Tensor  # ... at the item rows
    ego_users: torch.Tensor  # the tables' own rows (layer 0)
    ego_items: torch.Tensor
    item_graph: torch.Tensor  # (S E_i) at the item rows, for an item graph S (else empty)


def scattered_rows(workspace: Workspace, name: str, ctx, user_rows: torch.Tensor, item_rows: torch.Tensor,
                   grad_u: torch.Tensor | None, grad_i: torch.Tensor | None,
                   scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-size (users, items) blocks of ``workspace``, zero but for ``scale`` times the rows'
    gradients added at their rows (a backward's seed; ``ctx.shapes``, ``ctx.like``: the tables')."""
    s_u = workspace.block(f"{name}_u", ctx.shapes[0], ctx.like).zero_()
    s_i = workspace.block(f"{name}_i", ctx.shapes[1], ctx.like).zero_()
    if grad_u is not None:
        s_u.index_add_(0, user_rows, grad_u * scale)
    if grad_i is not None:
        s_i.index_add_(0, item_rows, grad_i * scale)
    return s_u, s_i


class _BatchRows(torch.autograd.Function):
    """The rows of a step in one function, so that the tables' whole gradient is assembled in
    one full-size block per side (autograd would add each term's gradient to it as another
    full-size pass): LightGCN's layer mean (sum_{l=0..L} A^l x)[rows] / (L + 1) over a
    bipartite A, the ego rows x[rows], and one hop over an item graph, (S x_i)[rows].

    Backward: sum_l (A^T)^l G (``graph.transposed()``), G the mean rows' gradient
    scattered to full size and divided by L + 1: the forward's computation on G, in the
    forward's workspace blocks, its last layer accumulated into G's block, which is handed
    over as the gradient; then the ego rows' and the item-graph rows' gradients are added
    at their rows only.
    """

    @staticmethod
    def forward(ctx, users: torch.Tensor, items: torch.Tensor, graph: "BipartiteGraph", layers: int,
                user_rows: torch.Tensor, item_rows: torch.Tensor, workspace: Workspace,
                item_graph: "ItemGraph | None"):
        ctx.set_materialize_grads(False)
        acc_u, acc_i = graph.layer_sum(users, items, layers, workspace.block)
        ctx.graph, ctx.layers, ctx.workspace, ctx.item_graph = graph, layers, workspace, item_graph
        ctx.shapes, ctx.like = (users.shape, items.shape), users.new_empty(0)
        ctx.save_for_backward(user_rows, item_rows)
        scale = 1.0 / (layers + 1)
        graph_rows = item_graph.rows(items, item_rows) if item_graph is not None else items.new_empty(0)
        return acc_u[user_rows] * scale, acc_i[item_rows] * scale, users[user_rows], items[item_rows], graph_rows

    @staticmethod
    def backward(ctx, grad_u, grad_i, grad_ego_u, grad_ego_i, grad_graph):
        (user_rows, item_rows) = ctx.saved_tensors
        graph, ws, scale = ctx.graph, ctx.workspace, 1.0 / (ctx.layers + 1)
        # G takes a block the Horner layers below do not write ("a" at layer 0, "b" at 1)
        g_name = "b" if ctx.layers <= 2 else "c"
        g_u, g_i = scattered_rows(ws, g_name, ctx, user_rows, item_rows, grad_u, grad_i, scale)
        h_u, h_i = graph.transposed().layer_sum(g_u, g_i, ctx.layers, ws.block, into_x=True)
        ws.release(h_u)
        ws.release(h_i)
        if grad_ego_u is not None:
            h_u.index_add_(0, user_rows, grad_ego_u)
        if grad_ego_i is not None:
            h_i.index_add_(0, item_rows, grad_ego_i)
        if grad_graph is not None and ctx.item_graph is not None:
            ctx.item_graph.add_row_gradient(h_i, item_rows, grad_graph, ws.block("graph_i", ctx.shapes[1], ctx.like))
        return h_u, h_i, None, None, None, None, None, None


@dataclass
class SourceRows:
    """LightGCN's layer mean split by source, mean_l A^l [E_u; 0] and mean_l A^l [0; E_i], at a
    step's rows (see ``BipartiteGraph.source_rows``); their sum is the ordinary layer mean."""

    user_by_user: torch.Tensor  # the user table's propagation, at the user rows
    user_by_item: torch.Tensor  # the item table's, at the user rows
    item_by_user: torch.Tensor  # the user table's, at the item rows
    item_by_item: torch.Tensor  # the item table's, at the item rows


class _SourceRows(torch.autograd.Function):
    """On a bipartite graph an even power of A keeps a node's side and an odd one swaps it, so
    one ordinary propagation of x = [E_u; E_i] separates the two sources by layer parity:
    the user rows of even layers come from E_u, of odd layers from E_i (items: the reverse).
    Forward: the powers A^l x, accumulated at the rows only, even and odd apart.

    Backward: the gradient of the tables is sum_{l even} A^l Z + sum_{l odd} A^l W (A is
    symmetric), Z holding the even outputs' gradients at their rows and W the odd ones';
    by Horner's rule with alternating seeds, t <- seed(l) + A t for l = L..0, one
    propagation.
    """

    @staticmethod
    def forward(ctx, users: torch.Tensor, items: torch.Tensor, graph: "BipartiteGraph", layers: int,
                user_rows: torch.Tensor, item_rows: torch.Tensor, workspace: Workspace):
        ctx.set_materialize_grads(False)
        ctx.graph, ctx.layers, ctx.workspace = graph, layers, workspace
        ctx.shapes, ctx.like = (users.shape, items.shape), users.new_empty(0)
        ctx.save_for_backward(user_rows, item_rows)
        even_u, even_i = users[user_rows], items[item_rows]
        odd_u, odd_i = torch.zeros_like(even_u), torch.zeros_like(even_i)
        for layer, (p_u, p_i) in enumerate(graph.powers(users, items, layers, workspace.block), start=1):
            acc_u, acc_i = (odd_u, odd_i) if layer % 2 else (even_u, even_i)
            acc_u += p_u[user_rows]
            acc_i += p_i[item_rows]
        scale = 1.0 / (layers + 1)
        return even_u * scale, odd_u * scale, odd_i * scale, even_i * scale

    @staticmethod
    def backward(ctx, g_uu, g_ui, g_iu, g_ii):
        user_rows, item_rows = ctx.saved_tensors
        graph, ws, scale = ctx.graph, ctx.workspace, 1.0 / (ctx.layers + 1)

        seeds = (scattered_rows(ws, "even", ctx, user_rows, item_rows, g_uu, g_ii, scale),
                 scattered_rows(ws, "odd", ctx, user_rows, item_rows, g_ui, g_iu, scale))
        t_u, t_i = seeds[ctx.layers % 2]
        for layer in range(ctx.layers - 1, -1, -1):
            s_u, s_i = seeds[layer % 2]
            name = "a" if layer % 2 else "b"
            out_u = (torch.empty_like(s_u) if layer == 0 else ws.block(f"{name}_u", s_u.shape, s_u)).copy_(s_u)
            out_i = (torch.empty_like(s_i) if layer == 0 else ws.block(f"{name}_i", s_i.shape, s_i)).copy_(s_i)
            t_u, t_i = out_u.addmm_(graph.r, t_i), out_i.addmm_(graph.r_t, t_u)
        if ctx.layers == 0:
            t_u, t_i = t_u.clone(), t_i.clone()
        return t_u, t_i, None, None, None, None, None


class _Hop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, graph: "BipartiteGraph") -> torch.Tensor:
        ctx.graph = graph
        return graph.apply(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.graph.transposed().apply(grad), None


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

    def layer_sum(self, users: torch.Tensor, items: torch.Tensor, layers: int, block, into_x: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """sum_{l=0..L} A^l x for x = (users, items), without autograd, by Horner's rule
        t <- x + A t: per layer and side one copy of x and one in-place sparse product
        (``addmm_``; torch.sparse.mm allocates its result, and a temporary, anew each call,
        which cost three times the product on CPU). Blocks come from
        ``block(name, shape, like)`` (``Workspace.block``). ``into_x``: x is scratch, and
        the last layer accumulates into it."""
        t_u, t_i = users, items  # L = 0: x itself
        for layer in range(layers):
            if into_x and layer == layers - 1 and layer > 0:  # x + A t into x (t is another block)
                out_u, out_i = users, items
            else:
                name = "a" if layer % 2 == 0 else "b"
                out_u = block(f"{name}_u", users.shape, users).copy_(users)
                out_i = block(f"{name}_i", items.shape, items).copy_(items)
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
        acc_u, acc_i = self.layer_sum(users, items, layers, workspace.block)
        workspace.clear()
        return acc_u.div_(layers + 1), acc_i.div_(layers + 1)

    def batch_rows(self, users: torch.Tensor, items: torch.Tensor, layers: int, user_rows: torch.Tensor,
                   item_rows: torch.Tensor, workspace: Workspace, item_graph: "ItemGraph | None" = None) -> BatchRows:
        """A step's rows of the tables (users, items), differentiable in the tables: the layer
        mean and the ego rows at ``user_rows`` and ``item_rows``, and (S items)[item_rows]
        for an ``item_graph`` S."""
        return BatchRows(*_BatchRows.apply(users, items, self, layers, user_rows, item_rows, workspace, item_graph))

    def powers(self, users: torch.Tensor, items: torch.Tensor, layers: int, block):
        """Yield A^l x for l = 1..L, x = (users, items), in two alternating pairs of blocks
        from ``block(name, shape, like)``: each yielded pair is valid until the next but one."""
        p_u, p_i = users, items
        for layer in range(layers):
            name = "a" if layer % 2 == 0 else "b"
            n_u = block(f"{name}_u", users.shape, users).addmm_(self.r, p_i, beta=0)
            n_i = block(f"{name}_i", items.shape, items).addmm_(self.r_t, p_u, beta=0)
            p_u, p_i = n_u, n_i
            yield p_u, p_i

    def source_rows(self, users: torch.Tensor, items: torch.Tensor, layers: int, user_rows: torch.Tensor,
                    item_rows: torch.Tensor, workspace: Workspace) -> SourceRows:
        """The layer mean of each table propagated alone, at a step's rows, differentiable in
        the tables; one propagation forward and one backward (``_SourceRows``). Needs the
        bipartite parity: no self-loops, symmetric."""
        if self.loop_u is not None or self.adjoint is not None:
            raise ValueError("source_rows needs a symmetric graph without self-loops")
        return SourceRows(*_SourceRows.apply(users, items, self, layers, user_rows, item_rows, workspace))

    @torch.no_grad()
    def source_layer_mean(self, users: torch.Tensor, items: torch.Tensor, layers: int) -> SourceRows:
        """``source_rows`` at every row (evaluation)."""
        return self.source_rows(users, items, layers, torch.arange(self.num_users, device=users.device),
                                torch.arange(self.num_items, device=items.device), Workspace())

    def hop(self, x: torch.Tensor) -> torch.Tensor:
        """A x for the stacked rows x = [users; items] ((U + I) x columns), differentiable in x
        (backward: the adjoint's product)."""
        return _Hop.apply(x, self)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A x for stacked rows, without autograd."""
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


def knn_neighbours(features: torch.Tensor, k: int, rows: tuple[int, int] | None = None,
                   block: int = 4096) -> torch.Tensor:
    """Top-k cosine neighbours (self included) of rows [lo, hi) (default all) against all
    rows, (hi - lo, k) indices, computed a block of rows at a time (never N x N)."""
    n = features.shape[0]
    lo, hi = rows or (0, n)
    normed = F.normalize(features.float(), dim=1)
    progress = dist.Progress(hi - lo, desc="knn", unit="item")
    out = []
    for start in range(lo, hi, block):
        out.append((normed[start:min(hi, start + block)] @ normed.T).topk(min(k, n), dim=1).indices)
        progress.update(len(out[-1]))
    progress.close()
    return torch.cat(out) if out else torch.empty(0, min(k, n), dtype=torch.int64, device=features.device)
