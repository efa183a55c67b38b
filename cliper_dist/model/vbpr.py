"""VBPR (He and McAuley, AAAI 2016) over CLIPER features, as MMRec's ``src/models/vbpr.py``.

    u = [p_u ; q_u]                       ID and content halves, d columns each
    i = [e_i ; W x_i + b]                 x_i = [text_i ; image_i], frozen
    loss = mean_b -log sigmoid(u . (i+ - i-)) + reg_weight * (||U_b|| + ||I+_b|| + ||I-_b||) / B

MMRec keeps u as one (users x 2d) table; here its halves are two tables: p (torchrec's user
table) and q (the model's ``user_content``). text_i is the CLIPER text feature fused by
``model.fusion`` (or an MMRec ``text_feat.npy``), concatenated before the image feature as
MMRec does. No graph: the scores are plain dot products.

Column-parallel: every table and W, b split over the d embedding columns; x's columns split
over ranks as FREEDOM's features are (rank r multiplies its feature columns, one all-reduce
sums the partial products into each rank's embedding columns). ``embeddings()`` returns the
two halves side by side, so ``score_blocks`` is 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.base import Batch, FeatureConfig, Recommender, frozen_features
from cliper_dist.model.bipartite import BipartiteGraph
from cliper_dist.model.layers import ColumnProjection
from cliper_dist.model.losses import bpr
from cliper_dist.parallel.columns import ColumnParameter, ColumnSplit, seeded_columns, uniform
from cliper_dist.sharding.tables import IdTables


@dataclass
class VBPRConfig(FeatureConfig):
    """VBPR: matrix factorisation with a content half projected from the frozen features."""

    name: Literal["vbpr"] = "vbpr"
    reg_weight: float = 1e-4  # weight of MMRec's EmbLoss on the batch's whole (ID and content) rows


def content_features(features: Features, fusion_name: str, tau: float) -> torch.Tensor:
    """x = [text ; image] for every item (MMRec's order), from whichever modalities exist."""
    parts = frozen_features(features, fusion_name, tau, "vbpr")
    return torch.cat([p for p in parts if p is not None], dim=1)


class VBPR(Recommender, config=VBPRConfig):
    uses_features = True
    score_blocks = 2

    def __init__(self, cfg: VBPRConfig, data: RecData, tables: IdTables, split: ColumnSplit, seed: int,
                 features: Features | None = None):
        super().__init__()
        self.cfg, self.split = cfg, split
        dim = cfg.embedding_dim
        self.user_table = ColumnParameter(tables.user, dim)
        self.item_table = ColumnParameter(tables.item, dim)
        # MMRec: one Xavier-uniform (users x 2d) table; its content half here
        bound = math.sqrt(6.0 / (data.num_users + 2 * dim))
        self.user_content = ColumnParameter(
            seeded_columns(data.num_users, dim, split, seed, "user_content", uniform(bound)).to(tables.user.device),
            dim)
        content = content_features(features, cfg.fusion, cfg.tau)
        split.check(content.shape[1], "content feature")
        self.register_buffer("content", split.local(content).to(tables.user.device), persistent=False)
        # MMRec's xavier_normal_initialization: Xavier-normal weight, zero bias
        self.project = ColumnProjection(content.shape[1], dim, split, seed, "item_linear",
                                        bias_bound=0.0).to(tables.user.device)
        self.tables = ("user_table", "item_table", "user_content")

    def train_graph(self, epoch: int) -> BipartiteGraph | None:
        return None

    def partials(self, graph: BipartiteGraph | None, batch: Batch) -> dict[str, torch.Tensor]:
        b = len(batch)
        items = torch.cat([batch.pos, batch.neg])
        user_id, user_content = self.user_table[batch.users], self.user_content[batch.users]
        item_id = self.item_table[items]
        distinct, where = torch.unique(items, return_inverse=True)
        item_content = self.project(self.content[distinct])[where]
        score = ((user_id * (item_id[:b] - item_id[b:])).sum(1)
                 + (user_content * (item_content[:b] - item_content[b:])).sum(1))
        item_sq = item_id.pow(2).sum(1) + item_content.pow(2).sum(1)
        squares = torch.stack([user_id.pow(2).sum() + user_content.pow(2).sum(), item_sq[:b].sum(), item_sq[b:].sum()])
        return {"score": score, "squares": squares}

    def loss(self, sums: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        return bpr(sums["score"]) + self.cfg.reg_weight * sums["squares"].sqrt().sum() / len(batch)

    def touched(self, graph: BipartiteGraph | None, batch: Batch) -> dict[str, torch.Tensor]:
        users = torch.unique(batch.users)
        return {"user_table": users, "user_content": users,
                "item_table": torch.unique(torch.cat([batch.pos, batch.neg]))}

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        items = torch.cat([self.item_table, self.project(self.content)], dim=1)
        return torch.cat([self.user_table, self.user_content], dim=1), items
