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
from cliper_dist.model.graph import SparseGraph, layer_mean_at


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
    """The dense part of LightGCN / FREEDOM: graph propagation, modality branches, losses.

    The ID tables are not parameters of this module: they come in as activations (the
    sharded full lookup), so the same code runs on one rank or many.
    """

    def __init__(self, cfg: ModelConfig, num_users: int, num_items: int, image: torch.Tensor | None = None,
                 text_views: torch.Tensor | None = None, text: torch.Tensor | None = None):
        """freedom only: ``image`` (I, Dv) raw image embeddings; the text modality is either
        ``text_views`` (I, C, D) raw CLIPER view embeddings, fused here by ``cfg.fusion``, or
        ``text`` (I, Dt) one ready text feature (an MMRec ``text_feat.npy``; fusion bypassed)."""
        super().__init__()
        self.cfg, self.num_users, self.num_items = cfg, num_users, num_items
        self.freedom = cfg.name == "freedom"
        self.has_image = self.has_text = False
        self.mlp_text = False
        if self.freedom:
            if image is None and text_views is None and text is None:
                raise ValueError("freedom needs image and/or text features")
            if text_views is not None and text is not None:
                raise ValueError("give text_views or text, not both")
            # Fine-tuned feature tables and their projections to the ID space (as in FREEDOM).
            if image is not None:
                self.has_image = True
                self.image_embedding = nn.Parameter(image.clone())
                self.image_trs = nn.Linear(image.shape[1], cfg.embedding_dim)
                nn.init.xavier_normal_(self.image_trs.weight)
            if text_views is not None and cfg.fusion == "mlp":  # trained with the recommender
                self.mlp_text = True
                self.register_buffer("text_views", text_views.clone())
                self.mlp_fusion = MLPFusion(text_views.shape[1], text_views.shape[2])
                text_dim = text_views.shape[2]
            elif text_views is not None:
                if image is None and cfg.fusion == "sa":
                    raise ValueError("SA fusion weighs the text views by their similarity to the image: "
                                     "it needs image features")
                self.text_embedding = nn.Parameter(fixed_text_fusion(cfg.fusion, text_views, image, cfg.tau))
                text_dim = self.text_embedding.shape[1]
            elif text is not None:
                self.text_embedding = nn.Parameter(text.clone())
                text_dim = text.shape[1]
            if text_views is not None or text is not None:
                self.has_text = True
                self.text_trs = nn.Linear(text_dim, cfg.embedding_dim)
                nn.init.xavier_normal_(self.text_trs.weight)
        self.mm_adj: SparseGraph | None = None

    def set_item_graph(self, mm_adj: SparseGraph) -> None:
        self.mm_adj = mm_adj

    def text_rows(self, items: torch.Tensor) -> torch.Tensor:
        """Projected text features of ``items`` (only these rows are computed)."""
        feats = self.mlp_fusion(self.text_views[items]) if self.mlp_text else self.text_embedding[items]
        return self.text_trs(feats)

    def image_rows(self, items: torch.Tensor) -> torch.Tensor:
        return self.image_trs(self.image_embedding[items])

    def _item_graph_term(self, item_table: torch.Tensor) -> torch.Tensor:
        """FREEDOM's h = S^{n_mm} E_i over the frozen item-item graph S."""
        if self.mm_adj is None:
            raise RuntimeError("freedom: set_item_graph() was not called")
        h = item_table
        for _ in range(self.cfg.n_mm_layers):
            h = self.mm_adj.mm(h)
        return h

    def propagate(self, user_table: torch.Tensor, item_table: torch.Tensor, adj: SparseGraph) -> torch.Tensor:
        """All nodes' final embeddings, (U + I, d), users first, after propagation over ``adj``
        (evaluation; a training step takes the batch's rows through ``layer_mean_at``).

        Computing only the batch's rows in the last layer does not pay: a batch's items
        include the popular ones, whose rows hold most of the graph's entries.
        """
        ego = torch.cat([user_table, item_table])
        total = ego
        for _ in range(self.cfg.n_ui_layers):
            ego = adj.mm(ego)
            total = total + ego
        out = total * (1.0 / (self.cfg.n_ui_layers + 1))  # mean over layers 0..L
        if self.freedom:
            out = torch.cat([out[: self.num_users], out[self.num_users:] + self._item_graph_term(item_table)])
        return out

    def split(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(users (U, d), items (I, d)) of ``propagate``'s output."""
        return nodes[: self.num_users], nodes[self.num_users:]

    def loss(self, user_table: torch.Tensor, item_table: torch.Tensor, adj: SparseGraph,
             users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, global_batch: int) -> torch.Tensor:
        """Sum of this rank's per-sample losses / the global batch size: summed over ranks
        (table gradients are summed: torchrec's gradient division is off) it is the mean
        over the global batch.

        lightgcn: BPR + reg_weight * ||ego embeddings of the batch||^2 / 2 (per sample);
        freedom: BPR + reg_weight * (BPR with projected text + BPR with projected image).
        """
        b = len(users)
        index = torch.cat([users, pos + self.num_users, neg + self.num_users])
        # the same rows as propagate(...)[index], with a leaner hand-written backward
        rows = layer_mean_at(adj, torch.cat([user_table, item_table]), self.cfg.n_ui_layers, index)
        if self.freedom:
            rows = rows + torch.cat([torch.zeros_like(rows[:b]), self._item_graph_term(item_table)[torch.cat([pos, neg])]])
        u, p, n = rows[:b], rows[b:2 * b], rows[2 * b:]
        loss = bpr_loss(u, p, n).sum()
        if self.freedom:
            # only the batch's distinct items are projected (FREEDOM projects all items: the
            # loss and its gradients are the same, the (I x D) @ (D x d) product is not)
            items, where = torch.unique(torch.cat([pos, neg]), return_inverse=True)
            modal = torch.zeros((), dtype=loss.dtype, device=loss.device)
            for project in ((self.text_rows,) if self.has_text else ()) + ((self.image_rows,) if self.has_image else ()):
                f = project(items)[where]
                modal = modal + bpr_loss(u, f[:b], f[b:]).sum()
            loss = loss + self.cfg.reg_weight * modal
        else:
            ego = (user_table[users].pow(2).sum() + item_table[pos].pow(2).sum() + item_table[neg].pow(2).sum()) / 2
            loss = loss + self.cfg.reg_weight * ego
        return loss / global_batch
