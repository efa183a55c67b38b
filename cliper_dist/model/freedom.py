"""FREEDOM (Zhou and Shen, ACM MM 2023) over CLIPER features, as MMRec's ``src/models/freedom.py``.

    users, items = LightGCN over the user-item graph, pruned every epoch (degree-sensitive)
    items += S^{n_mm} E_i                 S: the frozen item-item kNN graph (``item_graph``)
    loss = BPR + reg_weight * sum_m BPR(u . (f_m(i+) - f_m(i-))),  f_m(i) = W_m X_m[i] + b_m

X_m is the fine-tuned feature table of modality m (image; text fused from the CLIPER views
by ``model.fusion``, or an MMRec ``text_feat.npy``). With MLP fusion the text feature is
LeakyReLU(M concat(views) + m), trained with the recommender (CLIPER's paper).

Column-parallel: X_m and W_m are split over the feature columns, so each rank multiplies
its feature columns and the ranks' partial products are summed into each rank's embedding
columns (``sum_to_local_columns``); b_m is split over the embedding columns. The MLP
fusion is split over its output columns (Megatron's MLP: no communication between M and
W_m). No feature table is replicated; its gradient never crosses the network.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist import dist
from cliper_dist.data.feature_stats import check_modalities
from cliper_dist.data.features import ItemVectors
from cliper_dist.data.fusion import get_fusion
from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.base import Batch, FeatureConfig
from cliper_dist.model.bipartite import BipartiteGraph, degree_sensitive_prune
from cliper_dist.model.item_graph import KnnSearch, freedom_item_graph
from cliper_dist.model.layers import ColumnProjection
from cliper_dist.model.lightgcn import LightGCN, LightGCNConfig
from cliper_dist.model.losses import bpr
from cliper_dist.model.propagation import batch_rows
from cliper_dist.parallel.columns import ColumnParameter, ColumnSplit, seeded_columns, uniform
from cliper_dist.sharding.tables import IdTables


@dataclass
class FREEDOMConfig(LightGCNConfig, FeatureConfig):
    """FREEDOM: LightGCN over a pruned graph plus a frozen item kNN graph, modality BPR losses."""

    name: Literal["freedom"] = "freedom"
    reg_weight: float = 1e-4  # weight of the modality BPR losses of the projected image and text features
    n_mm_layers: int = 1  # hops over the item-item graph
    knn_k: int = 10  # neighbours per item in each modality's kNN graph
    knn: Literal["exact", "hnsw"] = "exact"  # kNN search, exact (blockwise) or FAISS HNSW (large catalogs)
    hnsw_m: int = 16  # knn=hnsw: links per node of the HNSW graph
    hnsw_ef: int = 64  # knn=hnsw: candidate-list breadth when building and searching (recall vs time)
    mm_image_weight: float = 0.1  # w in mm_adj = w * image_adj + (1 - w) * text_adj
    edge_dropout: float = 0.8  # fraction of user-item edges dropped each epoch (degree-sensitive)
    accept_degenerate_features: bool = False  # build the kNN graph on mostly identical rows (data/feature_stats.py)


class _UniqueRows(torch.autograd.Function):
    """table[rows] for sorted, distinct rows, with the gradient as a coalesced sparse tensor
    of those rows (F.embedding(sparse=True) gives an uncoalesced one, which costs a sort and
    a copy of every row gradient to coalesce)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.shape = table.shape
        return table.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        return torch.sparse_coo_tensor(rows[None], grad, ctx.shape, is_coalesced=True, check_invariants=False), None


class FeatureBranch(nn.Module):
    """A fine-tuned feature table (MMRec: nn.Embedding.from_pretrained(freeze=False)) and its
    projection. The lookup gives a sparse gradient: Adam sees only the batch's rows."""

    def __init__(self, features: ItemVectors, dim: int, split: ColumnSplit, seed: int, name: str):
        super().__init__()
        split.check(features.width, f"{name} feature")
        self.table = ColumnParameter(features.columns(*split.bounds(features.width)), features.width)
        self.project = ColumnProjection(features.width, dim, split, seed, f"{name}_trs")

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``items``: sorted, distinct."""
        return self.project(_UniqueRows.apply(self.table, items))


class MLPTextBranch(nn.Module):
    """CLIPER's MLP fusion, LeakyReLU(M concat(views) + m) with M: C*D -> D, trained with the
    recommender, then the projection. M is split over its output columns (stored as
    (C*D, D) blocks); the frozen views are read whole, from the memory-mapped store."""

    def __init__(self, features: Features, dim: int, split: ColumnSplit, seed: int):
        super().__init__()
        views, _, width = features.text_views.shape
        split.check(width, "text view embedding")
        self.features = features
        bound = 1.0 / math.sqrt(views * width)  # nn.Linear's init
        self.mlp_weight = ColumnParameter(seeded_columns(views * width, width, split, seed, "mlp.weight",
                                                         uniform(bound)), width)
        self.mlp_bias = ColumnParameter(seeded_columns(1, width, split, seed, "mlp.bias", uniform(bound))[0], width)
        self.project = ColumnProjection(width, dim, split, seed, "text_trs")

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        views = self.features.views_of(items.cpu().numpy()).flatten(1).to(self.mlp_weight.device)
        return self.project(F.leaky_relu(views @ self.mlp_weight + self.mlp_bias))


class FREEDOM(LightGCN, config=FREEDOMConfig):
    uses_features = True

    def __init__(self, cfg: FREEDOMConfig, data: RecData, tables: IdTables, split: ColumnSplit, seed: int,
                 features: Features | None = None):
        super().__init__(cfg, data, tables, split, seed)
        if features is None:
            raise ValueError("FREEDOM needs item features (the job checks this before building)")
        device = self.user_table.device
        fusion = get_fusion(cfg.fusion)
        # read a block of items at a time: no rank holds whole feature tables
        text, image = features.modalities(cfg.fusion, cfg.tau)
        if features.text is not None:
            dist.log.info("one ready text feature: CLIPER fusion (%s) bypassed", cfg.fusion)
        check_modalities({"image": image, "text": text}, cfg.accept_degenerate_features, f" of {features.source}")
        # the frozen item graph; with MLP fusion (trained, unknown up front) from the SUM fusion
        search = KnnSearch(cfg.knn, cfg.hnsw_m, cfg.hnsw_ef)
        start = time.perf_counter()
        self.item_graph = freedom_item_graph(image, text, cfg.knn_k, cfg.mm_image_weight, split, search,
                                             device).to(device)
        self.build_seconds = {"knn": time.perf_counter() - start}
        dist.log.info("item graph: %s kNN, k=%d, %.1f s", cfg.knn, cfg.knn_k, self.build_seconds["knn"])
        self.branches = nn.ModuleDict()
        if image is not None:
            self.branches["image"] = FeatureBranch(image, cfg.embedding_dim, split, seed, "image").to(device)
        if features.text_views is not None and fusion.trained:
            self.branches["text"] = MLPTextBranch(features, cfg.embedding_dim, split, seed).to(device)
        elif text is not None:
            self.branches["text"] = FeatureBranch(text, cfg.embedding_dim, split, seed, "text").to(device)
        self.tables += tuple(f"branches.{m}.table" for m, b in self.branches.items() if isinstance(b, FeatureBranch))

    def train_graph(self, epoch: int) -> BipartiteGraph:
        """Degree-sensitive pruning, resampled from (seed, epoch): every rank and a resumed
        run draw the same graph."""
        d, keep = self.data, 1.0 - self.cfg.edge_dropout
        if keep >= 1.0:
            return self.full_graph
        rng = np.random.default_rng([self.seed, epoch, 7])
        user, item = degree_sensitive_prune(d.train_user, d.train_item, d.num_users, d.num_items, keep, rng)
        return BipartiteGraph.from_edges(user, item, d.num_users, d.num_items).to(self.user_table.device)

    def partials(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        b, hops = len(batch), self.cfg.n_mm_layers
        items = torch.cat([batch.pos, batch.neg])
        # one hop over the item graph is taken with the propagation (one gradient block)
        rows = batch_rows(graph, self.user_table, self.item_table, self.cfg.n_ui_layers, batch.users, items,
                                self.workspace, self.item_graph if hops == 1 else None)
        h = rows.item_graph if hops == 1 else self.item_graph.power_rows(self.item_table, hops, items)
        u, i = rows.users, rows.items + h
        out = {"score": (u * (i[:b] - i[b:])).sum(1)}
        # only the batch's distinct items are projected (MMRec projects all items: the loss
        # and its gradients are the same, the I x D x d product is not)
        distinct, where = torch.unique(items, return_inverse=True)
        for name, branch in self.branches.items():
            f = branch(distinct)[where]
            out[name] = (u * (f[:b] - f[b:])).sum(1)
        return out

    def loss(self, sums: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        return bpr(sums["score"]) + self.cfg.reg_weight * sum(bpr(sums[name]) for name in self.branches)

    def touched(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        rows = super().touched(graph, batch)
        via_items = self.item_graph.reach(torch.cat([batch.pos, batch.neg]), self.cfg.n_mm_layers)
        rows["item_table"] = torch.unique(torch.cat([rows["item_table"], via_items]))
        return rows

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = super().embeddings()
        return users, items.add_(self.item_graph.power_rows(self.item_table, self.cfg.n_mm_layers))
