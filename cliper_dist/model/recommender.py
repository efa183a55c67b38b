"""LightGCN and FREEDOM over sharded ID tables; the CLIPER features enter through FREEDOM.

The model receives the whole user and item tables as activations (a full lookup through
the sharded EmbeddingCollection) and propagates them over sparse graphs:

    users, items = mean_{l=0..L} A^l [E_u; E_i]           (LightGCN over the user-item graph)
    items += S^{n_mm} E_i                                  (FREEDOM: frozen item-item kNN graph S)

FREEDOM's modality branches project the (fine-tuned) image and fused-text features to the
ID space; their BPR losses regularise the user vectors (reg_weight).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist.model.fusion import MLPFusion, fuse_concat, fuse_sa, fuse_sum, view_similarity


@dataclass
class ModelConfig:
    name: Literal["lightgcn", "freedom"] = "freedom"
    embedding_dim: int = 64
    n_ui_layers: int = 2
    n_mm_layers: int = 1
    knn_k: int = 10
    mm_image_weight: float = 0.1  # w in mm_adj = w * image_adj + (1 - w) * text_adj
    edge_dropout: float = 0.8  # FREEDOM degree-sensitive pruning: fraction of edges dropped per epoch
    reg_weight: float = 1e-4  # lightgcn: L2 on batch ego embeddings; freedom: weight of modality BPR
    fusion: Literal["sa", "sum", "concat", "mlp"] = "sa"  # CLIPER fusion of the text views
    tau: float = 0.1


def bpr_loss(user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per-sample BPR loss -log sigmoid(u.p - u.n) (summed by the caller)."""
    return -F.logsigmoid((user * pos).sum(-1) - (user * neg).sum(-1))


def fixed_text_fusion(kind: str, text_views: torch.Tensor, image: torch.Tensor, tau: float) -> torch.Tensor:
    """A parameter-free CLIPER fusion of raw view embeddings (N, C, D) -> (N, D or C*D)."""
    if kind == "sum":
        return fuse_sum(text_views)
    if kind == "concat":
        return fuse_concat(text_views)
    if kind == "sa":
        return fuse_sa(text_views, view_similarity(text_views, image, tau))
    raise ValueError(f"'{kind}' is not a parameter-free fusion")


class GraphRecommender(nn.Module):
    def __init__(self, cfg: ModelConfig, num_users: int, num_items: int,
                 image: torch.Tensor | None = None, text_views: torch.Tensor | None = None):
        """image (I, D) and text_views (I, C, D): the encode job's raw embeddings (freedom only)."""
        super().__init__()
        self.cfg, self.num_users, self.num_items = cfg, num_users, num_items
        self.freedom = cfg.name == "freedom"
        if self.freedom:
            if image is None or text_views is None:
                raise ValueError("freedom needs image and text-view features")
            # Fine-tuned feature tables and their projections to the ID space (as in FREEDOM).
            self.image_embedding = nn.Parameter(image.clone())
            if cfg.fusion == "mlp":  # trained with the recommender, from the fixed raw views
                self.register_buffer("text_views", text_views.clone())
                self.mlp_fusion = MLPFusion(text_views.shape[1], text_views.shape[2])
                text_dim = text_views.shape[2]
            else:
                self.text_embedding = nn.Parameter(fixed_text_fusion(cfg.fusion, text_views, image, cfg.tau))
                text_dim = self.text_embedding.shape[1]
            self.image_trs = nn.Linear(image.shape[1], cfg.embedding_dim)
            self.text_trs = nn.Linear(text_dim, cfg.embedding_dim)
            nn.init.xavier_normal_(self.image_trs.weight)
            nn.init.xavier_normal_(self.text_trs.weight)
        self.mm_adj: torch.Tensor | None = None

    def set_item_graph(self, mm_adj: torch.Tensor) -> None:
        self.mm_adj = mm_adj

    def text_features(self) -> torch.Tensor:
        if self.cfg.fusion == "mlp":
            return self.mlp_fusion(self.text_views)
        return self.text_embedding

    def propagate(self, user_table: torch.Tensor, item_table: torch.Tensor, adj: torch.Tensor):
        """(users (U, d), items (I, d)) after graph propagation over ``adj``."""
        ego = torch.cat([user_table, item_table])
        layers = [ego]
        for _ in range(self.cfg.n_ui_layers):
            ego = torch.sparse.mm(adj, ego)
            layers.append(ego)
        out = torch.stack(layers).mean(0)
        users, items = out[: self.num_users], out[self.num_users:]
        if self.freedom:
            h = item_table
            for _ in range(self.cfg.n_mm_layers):
                h = torch.sparse.mm(self.mm_adj, h)
            items = items + h
        return users, items

    def loss(self, user_table: torch.Tensor, item_table: torch.Tensor, adj: torch.Tensor,
             users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, global_batch: int) -> torch.Tensor:
        """Sum of this rank's per-sample losses / the global batch size: summed over ranks
        (as torchrec does for the table gradients) it is the mean over the global batch."""
        all_u, all_i = self.propagate(user_table, item_table, adj)
        u, p, n = all_u[users], all_i[pos], all_i[neg]
        loss = bpr_loss(u, p, n).sum()
        if self.freedom:
            t = self.text_trs(self.text_features())
            v = self.image_trs(self.image_embedding)
            loss = loss + self.cfg.reg_weight * (bpr_loss(u, t[pos], t[neg]).sum() + bpr_loss(u, v[pos], v[neg]).sum())
        else:
            ego = (user_table[users].pow(2).sum() + item_table[pos].pow(2).sum() + item_table[neg].pow(2).sum()) / 2
            loss = loss + self.cfg.reg_weight * ego
        return loss / global_batch
