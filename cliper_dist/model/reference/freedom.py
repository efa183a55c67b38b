"""FREEDOM as MMRec's ``src/models/freedom.py`` computes it, densely (``model/freedom.py``).

    users, items = LightGCN over the epoch's pruned graph;  items += S^{n_mm} E_i
    S = w kNN(image) + (1 - w) kNN(text), each entry 1/k      sparse, built once
    loss = BPR + reg_weight * sum_m BPR(u . (f_m(i+) - f_m(i-))),  f_m = W_m X_m + b_m over all items

X_m are fine-tuned tables; with ``fusion=mlp`` the text is LeakyReLU(views M + m), trained,
and S's text graph uses the SUM of the views. The pruned graph is drawn as the model draws
it, from (seed, epoch), so that a reference and an engine see the same graphs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.bipartite import degree_sensitive_prune
from cliper_dist.model.freedom import FREEDOMConfig
from cliper_dist.model.reference.base import bpr, top_k
from cliper_dist.model.reference.lightgcn import LightGCN


class FREEDOM(LightGCN):
    def __init__(self, cfg: FREEDOMConfig, data: RecData, features: Features, seed: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__(cfg, data, features, seed, dtype)
        image, text = self.dense(features.image), self.text_feature(features)
        parts = [(x, w) for x, w in ((image, cfg.mm_image_weight), (text, 1 - cfg.mm_image_weight)) if x is not None]
        graphs = [(1.0 if len(parts) == 1 else w) * self.knn_graph(x) for x, w in parts]
        self.item_graph = (graphs[0] if len(graphs) == 1 else graphs[0] + graphs[1]).coalesce()
        self.branches = nn.ModuleDict()
        for name, x in (("image", image), ("text", text)):
            if x is None:
                continue
            branch = self.branches[name] = nn.Module()
            if name == "text" and cfg.fusion == "mlp" and features.text_views is not None:
                branch.views = self.dense(features.text_views).transpose(0, 1).flatten(1)  # (I, C * D), frozen
                linear = nn.Linear(branch.views.shape[1], x.shape[1], dtype=dtype)  # (D, C * D), held transposed
                branch.mlp_weight = nn.Parameter(linear.weight.detach().T.contiguous())
                branch.mlp_bias = linear.bias
            else:
                branch.table = nn.Parameter(x.clone())  # MMRec: nn.Embedding.from_pretrained(freeze=False)
            branch.project = nn.Linear(x.shape[1], cfg.embedding_dim, dtype=dtype)

    def knn_graph(self, features: torch.Tensor) -> torch.Tensor:
        """kNN(x): each item's k most similar items (self included), every entry 1/k."""
        k, n = self.cfg.knn_k, self.n_items
        rows = torch.arange(n).repeat_interleave(k)
        cols = top_k(features, k).indices.reshape(-1)
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.full((n * k,), 1.0 / k, dtype=self.dtype),
                                       (n, n), check_invariants=False).coalesce()

    def epoch_graph(self, epoch: int) -> torch.Tensor:
        """Degree-sensitive pruning, drawn from (seed, epoch) as the model draws it."""
        keep, d = 1.0 - self.cfg.edge_dropout, self.data
        if keep >= 1.0:
            return self.graph
        rng = np.random.default_rng([self.seed, epoch, 7])
        return self.adjacency(*degree_sensitive_prune(d.train_user, d.train_item, d.num_users, d.num_items, keep, rng))

    def propagate(self, graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = super().propagate(graph)
        h = self.item_table
        for _ in range(self.cfg.n_mm_layers):
            h = torch.sparse.mm(self.item_graph, h)
        return users, items + h

    def modality(self, name: str) -> torch.Tensor:
        """f_m for every item (MMRec projects them all every step)."""
        branch = self.branches[name]
        if hasattr(branch, "views"):
            return branch.project(F.leaky_relu(branch.views @ branch.mlp_weight + branch.mlp_bias))
        return branch.project(branch.table)

    def loss(self, graph, users, pos, neg) -> torch.Tensor:
        out_u, out_i = self.propagate(graph)
        u = out_u[users]
        loss = bpr(u, out_i[pos], out_i[neg])
        for name in self.branches:
            f = self.modality(name)
            loss = loss + self.cfg.reg_weight * bpr(u, f[pos], f[neg])
        return loss
