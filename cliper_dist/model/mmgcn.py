"""MMGCN (Wei et al., ACM MM 2019) over CLIPER features, as MMRec's ``src/models/mmgcn.py``
computes it:

    per modality m (image: X_v through a 256-wide MLP; text: the feature itself, as MMRec):
      x^0   = normalize([P_m ; MLP(X_m)])                P_m: the users' preferences
      for l = 1..L:
        h     = LeakyReLU(mean_N(x^{l-1}) W_l)           mean over each node's graph neighbours
        x_hat = LeakyReLU(L_l x^{l-1} + c_l) + e         e = [E_u ; E_i], the ID embedding
        x^l   = LeakyReLU(G_l [h , x_hat] + g_l)
    r = mean_m x^L_m
    loss = -mean log sigmoid(r_u . (r_i+ - r_i-))
           + reg_weight (mean over the batch's 2B pairs of e_u^2 + e_i^2  +  mean P_v^2)

MMRec's code, followed where it departs from the paper (docs/models.md):
- its ``concate = 'False'`` is a non-empty string, so the concatenating G_l is the one used;
- e and P_m are plain tensors, not Parameters: they are never trained (frozen here, and
  their L2 term is a constant);
- ``GCN.forward`` runs three layers whatever ``n_layers`` says (here ``n_ui_layers``: 3 in
  the configs).

Column-parallel (Megatron's tensor parallelism): every activation x^l ((U + I) rows) is
split over columns; mean_N acts on each column alone, so each rank propagates its own.
W_l, L_l and G_l are ``ColumnProjection``s: each rank multiplies its input columns and one
reduce-scatter puts the sums into each rank's output columns, three per layer, forward
and backward. The row norms of x^0 are one all-reduce of (U + I) partial sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist import dist
from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.errors import UserError
from cliper_dist.model.base import Batch, FeatureConfig, Recommender, frozen_features
from cliper_dist.model.bipartite import BipartiteGraph
from cliper_dist.model.layers import ColumnProjection, ConcatProjection, row_norms, weight_sampler
from cliper_dist.model.losses import bpr
from cliper_dist.model.propagation import hop
from cliper_dist.parallel.columns import ColumnParameter, ColumnSplit, seeded_columns
from cliper_dist.sharding.tables import IdTables

IMAGE_LATENT = 256  # MMRec's dim_latent for the image GCN; its text GCN works at the feature width
MMREC_LAYERS = 3  # MMRec's GCN.forward runs three layers whatever its n_layers says


@dataclass
class MMGCNConfig(FeatureConfig):
    """MMGCN: a GCN per modality with dense layers between hops, over frozen ID embeddings."""

    name: Literal["mmgcn"] = "mmgcn"
    n_ui_layers: int = 2  # GCN layers (MMRec's code runs 3 whatever its config says)
    reg_weight: float = 1e-4  # weight of MMRec's (constant) L2 of the frozen ids and image preferences


class ModalityGCN(nn.Module):
    """One modality's GCN, on this rank's columns of every layer."""

    def __init__(self, features: torch.Tensor, latent: int | None, cfg: MMGCNConfig, num_users: int,
                 split: ColumnSplit, seed: int, name: str):
        super().__init__()
        width, dim = features.shape[1], cfg.embedding_dim
        ego_width = latent or width
        self.split = split
        self.preference = ColumnParameter(
            seeded_columns(num_users, ego_width, split, seed, f"{name}_preference",
                           weight_sampler(ego_width, num_users, "xavier_normal")), ego_width, requires_grad=False)
        self.mlp = (ColumnProjection(width, latent, split, seed, f"{name}_mlp", weight_init="default")
                    if latent else None)
        self.register_buffer("features", split.local(features), persistent=False)
        self._frozen_ego: tuple[torch.Tensor, torch.Tensor] | None = None
        widths = [ego_width] + [dim] * (cfg.n_ui_layers - 1)
        # MMRec's inits: W_l (PyG's uniform, then overwritten), L_l and G_1 Xavier-normal; G_2.. nn.Linear's
        self.conv = nn.ModuleList(ColumnProjection(w, w, split, seed, f"{name}_conv{l}", bias=False)
                                  for l, w in enumerate(widths))
        self.linear = nn.ModuleList(ColumnProjection(w, dim, split, seed, f"{name}_linear{l}")
                                    for l, w in enumerate(widths))
        self.gate = nn.ModuleList(ConcatProjection((w, dim), dim, split, seed, f"{name}_g{l}",
                                                   weight_init="xavier_normal" if l == 0 else "default")
                                  for l, w in enumerate(widths))

    def ego(self, graph: BipartiteGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """x^0 and mean_N(x^0). Without an MLP both are constant: computed on first use (after
        a checkpoint has been loaded) and kept."""
        if self.mlp is None and self._frozen_ego is not None:
            return self._frozen_ego
        items = self.features if self.mlp is None else self.mlp(self.features)
        x = torch.cat([self.preference, items])
        x = x / row_norms(x.pow(2).sum(1), self.split)[:, None]
        if self.mlp is None:
            x = x.detach()
            self._frozen_ego = x, graph.apply(x)
            self.features = None  # read once: x^0 holds it
            return self._frozen_ego
        return x, hop(graph, x)

    def forward(self, graph: BipartiteGraph, ids: torch.Tensor) -> torch.Tensor:
        """x^L at every node, this rank's columns."""
        x, neighbours = self.ego(graph)
        for layer, (conv, linear, gate) in enumerate(zip(self.conv, self.linear, self.gate)):
            if layer > 0:
                neighbours = hop(graph, x)
            h = F.leaky_relu(conv(neighbours))
            x_hat = F.leaky_relu(linear(x)) + ids
            x = F.leaky_relu(gate(h, x_hat))
        return x


class MMGCN(Recommender, config=MMGCNConfig):
    uses_features = True

    def __init__(self, cfg: MMGCNConfig, data: RecData, tables: IdTables, split: ColumnSplit, seed: int,
                 features: Features | None = None):
        super().__init__()
        if cfg.n_ui_layers < 1:
            raise UserError("model.name=mmgcn needs model.n_ui_layers >= 1 (MMRec runs 3)")
        text, image = frozen_features(features, cfg.fusion, cfg.tau, "mmgcn")
        if cfg.n_ui_layers != MMREC_LAYERS:
            dist.log.info("mmgcn: %d GCN layers (model.n_ui_layers); MMRec's code runs %d", cfg.n_ui_layers,
                          MMREC_LAYERS)
        self.cfg, self.split, self.num_users = cfg, split, data.num_users
        dim, device = cfg.embedding_dim, tables.user.device
        self.graph = BipartiteGraph.neighbour_mean(data.train_user, data.train_item, data.num_users,
                                                   data.num_items).to(device)
        # e: torchrec's ID tables, overwritten with MMRec's Xavier-normal of the (U + I) x d tensor, frozen
        xavier = weight_sampler(dim, data.num_users + data.num_items, "xavier_normal")
        with torch.no_grad():
            for table, rows, tag in ((tables.user, data.num_users, "user"), (tables.item, data.num_items, "item")):
                table.copy_(seeded_columns(rows, dim, split, seed, f"mmgcn_{tag}_id", xavier))
        self.user_table = ColumnParameter(tables.user, dim, requires_grad=False)
        self.item_table = ColumnParameter(tables.item, dim, requires_grad=False)
        towers = {}
        if image is not None:
            towers["image"] = ModalityGCN(image, IMAGE_LATENT, cfg, data.num_users, split, seed, "image")
        if text is not None:
            towers["text"] = ModalityGCN(text, None, cfg, data.num_users, split, seed, "text")
        self.towers = nn.ModuleDict(towers).to(device)

    def train_graph(self, epoch: int) -> BipartiteGraph:
        return self.graph

    def representation(self) -> torch.Tensor:
        """r at every node ((U + I) rows, this rank's columns)."""
        ids = torch.cat([self.user_table, self.item_table])
        return sum(tower(self.graph, ids) for tower in self.towers.values()) / len(self.towers)

    def partials(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        r, u = self.representation(), self.num_users
        users = r[batch.users]
        sums = {"score": (users * (r[u + batch.pos] - r[u + batch.neg])).sum(1),
                "ids": (2 * self.user_table[batch.users].pow(2).sum() + self.item_table[batch.pos].pow(2).sum()
                        + self.item_table[batch.neg].pow(2).sum()).detach()}
        if "image" in self.towers:
            sums["preference"] = self.towers["image"].preference.pow(2).sum().detach()
        return sums

    def loss(self, sums: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        reg = sums["ids"] / (2 * len(batch) * self.cfg.embedding_dim)
        if "preference" in sums:  # MMRec's mean of P_v^2, when there is an image GCN
            reg = reg + sums["preference"] / (self.num_users * IMAGE_LATENT)
        return bpr(sums["score"]) + self.cfg.reg_weight * reg

    def touched(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        return {}  # no trained table

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.representation()
        return r[:self.num_users], r[self.num_users:]
