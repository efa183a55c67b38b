"""Differentiable propagation over a ``BipartiteGraph``: a step's rows, and their backward.

Each function is one ``torch.autograd.Function`` so that the tables' whole gradient is
assembled in one full-size block per side, in the graph's ``Workspace``: autograd would add
each term's gradient to it as another full-size pass. The block is then handed over as the
gradient and taken back after the optimizer step (``Workspace.release``, ``take_back``).

- ``batch_rows``: LightGCN's layer mean at a step's rows, the ego rows, and one hop over an
  item graph (LightGCN, FREEDOM, LATTICE, DualGNN);
- ``source_rows``: the layer mean split by source table (SLMRec);
- ``hop``: one product with the stacked rows (MMGCN's dense layers between hops).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cliper_dist.model.bipartite import BipartiteGraph
from cliper_dist.model.item_graph import ItemGraph
from cliper_dist.model.workspace import HORNER, ITEM_GRAPH_SEED, SEED, SOURCE_SEEDS, Workspace


@dataclass
class BatchRows:
    """What a training step reads of the ID tables at its rows (``batch_rows``)."""

    users: torch.Tensor  # LightGCN's layer mean at the user rows
    items: torch.Tensor  # ... at the item rows
    ego_users: torch.Tensor  # the tables' own rows (layer 0)
    ego_items: torch.Tensor
    item_graph: torch.Tensor  # (S E_i) at the item rows, for an item graph S (else empty)


@dataclass
class SourceRows:
    """LightGCN's layer mean split by source, mean_l A^l [E_u; 0] and mean_l A^l [0; E_i], at a
    step's rows (``source_rows``); their sum is the ordinary layer mean."""

    user_by_user: torch.Tensor  # the user table's propagation, at the user rows
    user_by_item: torch.Tensor  # the item table's, at the user rows
    item_by_user: torch.Tensor  # the user table's, at the item rows
    item_by_item: torch.Tensor  # the item table's, at the item rows


def batch_rows(graph: BipartiteGraph, users: torch.Tensor, items: torch.Tensor, layers: int,
               user_rows: torch.Tensor, item_rows: torch.Tensor, workspace: Workspace,
               item_graph: ItemGraph | None = None) -> BatchRows:
    """A step's rows of the tables (users, items), differentiable in the tables: the layer
    mean and the ego rows at ``user_rows`` and ``item_rows``, and (S items)[item_rows]
    for an ``item_graph`` S."""
    return BatchRows(*_BatchRows.apply(users, items, graph, layers, user_rows, item_rows, workspace, item_graph))


def source_rows(graph: BipartiteGraph, users: torch.Tensor, items: torch.Tensor, layers: int,
                user_rows: torch.Tensor, item_rows: torch.Tensor, workspace: Workspace) -> SourceRows:
    """The layer mean of each table propagated alone, at a step's rows, differentiable in
    the tables; one propagation forward and one backward. Needs the bipartite parity: no
    self-loops, symmetric."""
    if graph.loop_u is not None or graph.adjoint is not None:
        raise ValueError("source_rows needs a symmetric graph without self-loops")
    return SourceRows(*_SourceRows.apply(users, items, graph, layers, user_rows, item_rows, workspace))


@torch.no_grad()
def source_layer_mean(graph: BipartiteGraph, users: torch.Tensor, items: torch.Tensor, layers: int) -> SourceRows:
    """``source_rows`` at every row (evaluation)."""
    return source_rows(graph, users, items, layers, torch.arange(graph.num_users, device=users.device),
                       torch.arange(graph.num_items, device=items.device), Workspace())


def hop(graph: BipartiteGraph, x: torch.Tensor) -> torch.Tensor:
    """A x for the stacked rows x = [users; items] ((U + I) x columns), differentiable in x
    (backward: the adjoint's product)."""
    return _Hop.apply(x, graph)


def _scattered_rows(workspace: Workspace, name: str, ctx, user_rows: torch.Tensor, item_rows: torch.Tensor,
                    grad_u: torch.Tensor | None, grad_i: torch.Tensor | None,
                    scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``workspace``'s (users, items) blocks ``name``, zero but for ``scale`` times the rows'
    gradients added at their rows (a backward's seed; ``ctx.shapes``, ``ctx.like``: the tables')."""
    s_u, s_i = workspace.pair(name, *ctx.shapes, ctx.like)
    s_u.zero_()
    s_i.zero_()
    if grad_u is not None:
        s_u.index_add_(0, user_rows, grad_u * scale)
    if grad_i is not None:
        s_i.index_add_(0, item_rows, grad_i * scale)
    return s_u, s_i


class _BatchRows(torch.autograd.Function):
    """LightGCN's layer mean (sum_{l=0..L} A^l x)[rows] / (L + 1) over a bipartite A, the ego
    rows x[rows], and one hop over an item graph, (S x_i)[rows].

    Backward: sum_l (A^T)^l G (``graph.transposed()``), G the mean rows' gradient scattered
    to full size and divided by L + 1: the forward's computation on G, its last layer
    accumulated into G's block, which is handed over as the gradient; then the ego rows'
    and the item-graph rows' gradients are added at their rows only.
    """

    @staticmethod
    def forward(ctx, users: torch.Tensor, items: torch.Tensor, graph: BipartiteGraph, layers: int,
                user_rows: torch.Tensor, item_rows: torch.Tensor, workspace: Workspace,
                item_graph: ItemGraph | None):
        ctx.set_materialize_grads(False)
        acc_u, acc_i = graph.layer_sum(users, items, layers, workspace)
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
        # G needs a block that the Horner pass below (layers 0..L-2) does not write: for
        # L <= 2 the forward's odd layer, free by now; else one of its own
        seed = HORNER[1] if ctx.layers <= 2 else SEED
        g_u, g_i = _scattered_rows(ws, seed, ctx, user_rows, item_rows, grad_u, grad_i, scale)
        h_u, h_i = graph.transposed().layer_sum(g_u, g_i, ctx.layers, ws, into_x=True)
        ws.release(h_u)
        ws.release(h_i)
        if grad_ego_u is not None:
            h_u.index_add_(0, user_rows, grad_ego_u)
        if grad_ego_i is not None:
            h_i.index_add_(0, item_rows, grad_ego_i)
        if grad_graph is not None and ctx.item_graph is not None:
            scratch = ws.block(f"{ITEM_GRAPH_SEED}.items", h_i.shape, h_i)
            ctx.item_graph.add_row_gradient(h_i, item_rows, grad_graph, scratch)
        return h_u, h_i, None, None, None, None, None, None


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
    def forward(ctx, users: torch.Tensor, items: torch.Tensor, graph: BipartiteGraph, layers: int,
                user_rows: torch.Tensor, item_rows: torch.Tensor, workspace: Workspace):
        ctx.set_materialize_grads(False)
        ctx.graph, ctx.layers, ctx.workspace = graph, layers, workspace
        ctx.shapes, ctx.like = (users.shape, items.shape), users.new_empty(0)
        ctx.save_for_backward(user_rows, item_rows)
        even_u, even_i = users[user_rows], items[item_rows]
        odd_u, odd_i = torch.zeros_like(even_u), torch.zeros_like(even_i)
        for layer, (p_u, p_i) in enumerate(graph.powers(users, items, layers, workspace), start=1):
            acc_u, acc_i = (odd_u, odd_i) if layer % 2 else (even_u, even_i)
            acc_u += p_u[user_rows]
            acc_i += p_i[item_rows]
        scale = 1.0 / (layers + 1)
        return even_u * scale, odd_u * scale, odd_i * scale, even_i * scale

    @staticmethod
    def backward(ctx, g_uu, g_ui, g_iu, g_ii):
        user_rows, item_rows = ctx.saved_tensors
        graph, ws, scale = ctx.graph, ctx.workspace, 1.0 / (ctx.layers + 1)
        seeds = (_scattered_rows(ws, SOURCE_SEEDS[0], ctx, user_rows, item_rows, g_uu, g_ii, scale),
                 _scattered_rows(ws, SOURCE_SEEDS[1], ctx, user_rows, item_rows, g_ui, g_iu, scale))
        t_u, t_i = seeds[ctx.layers % 2]
        for layer in range(ctx.layers - 1, -1, -1):
            s_u, s_i = seeds[layer % 2]
            # layer 0 is the gradient itself: a tensor of its own, not a workspace block
            out_u, out_i = ((torch.empty_like(s_u), torch.empty_like(s_i)) if layer == 0
                            else ws.pair(HORNER[layer % 2], s_u.shape, s_i.shape, s_u))
            t_u, t_i = out_u.copy_(s_u).addmm_(graph.r, t_i), out_i.copy_(s_i).addmm_(graph.r_t, t_u)
        if ctx.layers == 0:
            t_u, t_i = t_u.clone(), t_i.clone()
        return t_u, t_i, None, None, None, None, None


class _Hop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, graph: BipartiteGraph) -> torch.Tensor:
        ctx.graph = graph
        return graph.apply(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.graph.transposed().apply(grad), None
