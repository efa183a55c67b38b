"""LATTICE (Zhang et al., ACM MM 2021) over CLIPER features, as MMRec's ``src/models/lattice.py``
computes it with ``cf_model: lightgcn``:

    users, items = mean_{l=0..L} P^l (E_u, E_i)        P = D^-1 (A + I): row-normalised, self-loops
    f_m = W_m X_m + b_m                                 X_m: the fine-tuned feature table of modality m
    K(x)[i, j] = cos(x_i, x_j) for j among i's k most similar (self included), else 0
    N(S) = D^-1/2 S D^-1/2                              D: S's row sums
    S = (1 - lambda) N(sum_m w_m K(f_m)) + lambda sum_m w_m N(K(X_m at build))     w = softmax(modal_weight)
    h = S^{n_mm} E_i,   items += h / ||h||              (row-wise)
    loss = BPR(u . (i+ - i-)) + reg_weight * (||u||^2 + ||i+||^2 + ||i-||^2) / (2B)   on the output rows

The learned part K(f_m) is rebuilt on the first batch of every epoch, differentiably: that
batch trains X_m, W_m, b_m and modal_weight through S's values. The other batches use it
detached, so those parameters get no gradient and do not step (MMRec's Adam skips them as
ours does). Evaluation rebuilds it from the current parameters, as MMRec's does.

Column-parallel, and never I x I:
- E, X_m and W_m are split over columns. f_m (I x d) is summed whole on every rank (one
  all-reduce, once per epoch), and every rank finds the same blockwise top-k
  (``knn_graph_neighbours``: each rank its block of rows). S is kept as weighted bags of
  4k neighbours per item (``ItemGraph``).
- h = S E_i per column, with no communication. The gradient of S's values is each rank's
  partial sum over its columns; ``sum_gradients`` completes it in the backward (2B x 4k
  floats, on the build batch only).
- The score u . (i + h/||h||) = u . i + (u . h) / ||h||, and the squared norms, are sums
  over columns: the step's one all-reduce carries u . i, u . h, h . h (and the
  regulariser's sums) and every rank computes the loss from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.base import Batch, FeatureConfig, Recommender, frozen_features
from cliper_dist.model.bipartite import BipartiteGraph
from cliper_dist.model.item_graph import ItemGraph, knn_bags, sym_normalised
from cliper_dist.model.layers import PartialLinear
from cliper_dist.model.losses import bpr
from cliper_dist.model.propagation import batch_rows
from cliper_dist.model.workspace import Workspace
from cliper_dist.parallel.columns import ColumnParameter, ColumnSplit
from cliper_dist.parallel.comm import sum_gradients, sum_partials
from cliper_dist.sharding.tables import IdTables

NORM_EPS = 1e-12  # F.normalize's


@dataclass
class LATTICEConfig(FeatureConfig):
    """LATTICE: LightGCN over D^-1 (A + I) plus a hop over an item graph learned from the features."""

    name: Literal["lattice"] = "lattice"
    n_ui_layers: int = 2  # hops over the user-item graph
    n_mm_layers: int = 1  # hops over the item-item graph
    knn_k: int = 10  # neighbours per item in each modality's kNN graph (learned and frozen)
    lambda_coeff: float = 0.9  # weight of the frozen feature kNN graph against the learned one
    reg_weight: float = 1e-4  # weight of the squared L2 of the batch's output rows, over 2B
    accept_degenerate_features: bool = False  # build the kNN graph on mostly identical rows (data/feature_stats.py)


class LearnedGraphBranch(nn.Module):
    """A modality's fine-tuned feature table (this rank's feature columns) and its projection
    f = W X + b, whose kNN graph is learned."""

    def __init__(self, table: torch.Tensor, width: int, dim: int, split: ColumnSplit, seed: int, name: str):
        super().__init__()
        self.split = split
        self.table = ColumnParameter(table, width)
        self.project = PartialLinear(1, width, dim, split, seed, f"{name}_trs", weight_init="default")

    def projected(self) -> torch.Tensor:
        """f for every item, whole on every rank (its gradient: each rank's share by columns)."""
        return sum_partials(self.project(self.table), self.split)


class LATTICE(Recommender, config=LATTICEConfig):
    uses_features = True

    def __init__(self, cfg: LATTICEConfig, data: RecData, tables: IdTables, split: ColumnSplit, seed: int,
                 features: Features | None = None):
        super().__init__()
        self.cfg, self.split = cfg, split
        device = tables.user.device
        self.user_table = ColumnParameter(tables.user, cfg.embedding_dim)
        self.item_table = ColumnParameter(tables.item, cfg.embedding_dim)
        self.tables = ("user_table", "item_table")
        self.graph = BipartiteGraph.mean_with_self(data.train_user, data.train_item, data.num_users,
                                                   data.num_items).to(device)
        self.workspace = Workspace()
        text, image = frozen_features(features, cfg.fusion, cfg.tau, "lattice",
                                      accept_degenerate=cfg.accept_degenerate_features)
        present = [(name, x.to(device)) for name, x in (("image", image), ("text", text)) if x is not None]
        self.branches = nn.ModuleDict()
        original = []  # per modality: N(K(X_m)), frozen
        for name, x in present:
            split.check(x.shape[1], f"{name} feature")
            self.branches[name] = LearnedGraphBranch(split.local(x), x.shape[1], cfg.embedding_dim, split, seed,
                                                     name).to(device)
            neighbours, values = knn_bags(x, cfg.knn_k, split)
            original.append((neighbours, sym_normalised(neighbours, values)))
        self.original = original
        # MMRec: nn.Parameter([0.5, 0.5]), softmax-ed; with one modality its graphs are used alone
        self.modal_weight = nn.Parameter(torch.full((len(present),), 0.5, device=device)) if len(present) > 1 else None
        self.item_graph: ItemGraph | None = None  # this epoch's S, detached after its first batch
        self._rebuild = True

    def train_graph(self, epoch: int) -> BipartiteGraph:
        self._rebuild = True  # MMRec's pre_epoch_processing: the epoch's first batch learns the graph
        return self.graph

    def learned_item_graph(self) -> ItemGraph:
        """S from the current parameters; its weights are differentiable (see the module docstring)."""
        weights = (torch.softmax(self.modal_weight, 0) if self.modal_weight is not None
                   else torch.ones(1, device=self.item_table.device))
        learned = [knn_bags(branch.projected(), self.cfg.knn_k, self.split) for branch in self.branches.values()]
        nbr_l = torch.cat([n for n, _ in learned], dim=1)
        val_l = sym_normalised(nbr_l, torch.cat([w * v for w, (_, v) in zip(weights, learned)], dim=1))
        nbr_o = torch.cat([n for n, _ in self.original], dim=1)
        val_o = torch.cat([w * v for w, (_, v) in zip(weights, self.original)], dim=1)
        lam = self.cfg.lambda_coeff
        return ItemGraph(torch.cat([nbr_l, nbr_o], dim=1), torch.cat([(1 - lam) * val_l, lam * val_o], dim=1))

    def _step_item_graph(self) -> ItemGraph:
        if not self._rebuild:
            return self.item_graph
        self._rebuild = False
        graph = self.learned_item_graph()
        self.item_graph = ItemGraph(graph.neighbours, graph.weights.detach())
        return ItemGraph(graph.neighbours, sum_gradients(graph.weights, self.split))

    def partials(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        b, items = len(batch), torch.cat([batch.pos, batch.neg])
        item_graph = self._step_item_graph()
        rows = batch_rows(graph, self.user_table, self.item_table, self.cfg.n_ui_layers, batch.users, items,
                                self.workspace)
        u, i = rows.users, rows.items
        h = item_graph.power_rows(self.item_table, self.cfg.n_mm_layers, items)
        return {"ui": (u * (i[:b] - i[b:])).sum(1), "uh": (u.repeat(2, 1) * h).sum(1), "hh": h.pow(2).sum(1),
                "ih": (i * h).sum(1), "ii": i.pow(2).sum(1), "uu": u.pow(2).sum()}

    def loss(self, sums: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        b = len(batch)
        norm = sums["hh"].sqrt().clamp_min(NORM_EPS)  # ||h|| of i+ then i-
        uh = sums["uh"] / norm
        loss = bpr(sums["ui"] + uh[:b] - uh[b:])
        item_sq = sums["ii"] + 2 * sums["ih"] / norm + sums["hh"] / norm.pow(2)  # ||i + h/||h||||^2
        return loss + self.cfg.reg_weight * 0.5 * (sums["uu"] + item_sq.sum()) / b

    def touched(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        items = torch.cat([batch.pos, batch.neg])
        users, reached = graph.reach(batch.users, items, self.cfg.n_ui_layers)
        via_graph = self.item_graph.reach(items, self.cfg.n_mm_layers)
        return {"user_table": users, "item_table": torch.unique(torch.cat([reached, via_graph]))}

    def reclaim_gradients(self) -> None:
        self.workspace.take_back(p.grad for p in (self.user_table, self.item_table) if p.grad is not None)

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self.graph.layer_mean(self.user_table, self.item_table, self.cfg.n_ui_layers, self.workspace)
        h = self.learned_item_graph().power_rows(self.item_table, self.cfg.n_mm_layers)
        norm = sum_partials(h.pow(2).sum(1), self.split).sqrt().clamp_min(NORM_EPS)
        return users, items + h / norm[:, None]
