"""LightGCN (He et al., SIGIR 2020), as MMRec's ``src/models/lightgcn.py`` computes it.

    users, items = mean_{l=0..L} A^l (E_u, E_i)        A: the normalised training graph
    loss = mean_b -log sigmoid(u_b . (i+_b - i-_b)) + reg_weight * EmbLoss
    EmbLoss = (||E_u[users]||_F + ||E_i[pos]||_F + ||E_i[neg]||_F) / B   (norms, not squared)

Column-parallel: the dot products and the squared norms are sums over columns, so each
rank contributes its columns' partial sums and every rank computes the loss from their
totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.base import Batch, ModelConfig, Recommender
from cliper_dist.model.bipartite import BipartiteGraph
from cliper_dist.model.losses import bpr
from cliper_dist.model.propagation import batch_rows
from cliper_dist.model.workspace import Workspace
from cliper_dist.parallel.columns import ColumnParameter, ColumnSplit
from cliper_dist.sharding.tables import IdTables


@dataclass
class LightGCNConfig(ModelConfig):
    """LightGCN: ID embeddings propagated over the user-item graph."""

    name: Literal["lightgcn"] = "lightgcn"
    n_ui_layers: int = 2  # hops over the user-item graph
    reg_weight: float = 1e-4  # weight of MMRec's EmbLoss: the norms of the batch's ego rows, over B


class LightGCN(Recommender, config=LightGCNConfig):
    def __init__(self, cfg: LightGCNConfig, data: RecData, tables: IdTables, split: ColumnSplit, seed: int,
                 features: Features | None = None):
        super().__init__()
        self.cfg, self.data, self.split, self.seed = cfg, data, split, seed
        self.user_table = ColumnParameter(tables.user, cfg.embedding_dim)
        self.item_table = ColumnParameter(tables.item, cfg.embedding_dim)
        self.tables = ("user_table", "item_table")
        self.full_graph = BipartiteGraph.from_edges(data.train_user, data.train_item, data.num_users,
                                                    data.num_items).to(self.user_table.device)
        self.workspace = Workspace()  # the full-size blocks of a training step's propagation

    def train_graph(self, epoch: int) -> BipartiteGraph:
        return self.full_graph

    def partials(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        b = len(batch)
        rows = batch_rows(graph, self.user_table, self.item_table, self.cfg.n_ui_layers, batch.users,
                                torch.cat([batch.pos, batch.neg]), self.workspace)
        ego_sq = torch.stack([rows.ego_users.pow(2).sum(), rows.ego_items[:b].pow(2).sum(),
                              rows.ego_items[b:].pow(2).sum()])
        return {"score": (rows.users * (rows.items[:b] - rows.items[b:])).sum(1), "ego_sq": ego_sq}

    def loss(self, sums: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        return bpr(sums["score"]) + self.cfg.reg_weight * sums["ego_sq"].sqrt().sum() / len(batch)

    def touched(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        users, items = graph.reach(batch.users, torch.cat([batch.pos, batch.neg]), self.cfg.n_ui_layers)
        return {"user_table": users, "item_table": items}

    def reclaim_gradients(self) -> None:
        self.workspace.take_back(p.grad for p in (self.user_table, self.item_table) if p.grad is not None)

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.full_graph.layer_mean(self.user_table, self.item_table, self.cfg.n_ui_layers, self.workspace)
