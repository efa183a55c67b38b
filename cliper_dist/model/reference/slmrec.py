"""SLMRec as MMRec's ``src/models/slmrec.py`` computes it (FAC task, concat), densely (``model/slmrec.py``).

    id, vis, txt = M([E_u; E_i]), M([E_u; W_v x_v + b_v]), M([E_u; W_t x_t + b_t])    M: LightGCN's layer mean
    user, item = F_u([id ; vis ; txt]_u), F_i([id ; vis ; txt]_i)     x: row-normalised frozen features
    loss = CE(cos(user_b, item_{i+_b'}) / nce_temp) + ssl_alpha * FAC (in-batch softmax over the positives)

Every step projects all items and propagates the three tables over the whole graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.reference.base import BlockLinear, Reference, layer_mean
from cliper_dist.model.slmrec import SLMRecConfig


def nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.cross_entropy(a @ b.T / temperature, torch.arange(len(a)))


class SLMRec(Reference):
    def __init__(self, cfg: SLMRecConfig, data: RecData, features: Features, seed: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__(cfg, data, features, seed, dtype)
        dim = cfg.embedding_dim
        self.user_table = self.table(data.num_users, dim)
        self.item_table = self.table(data.num_items, dim)
        self.normed = {"image": F.normalize(self.dense(features.image), dim=1),
                       "text": F.normalize(self.text_feature(features), dim=1)}
        self.features = nn.ModuleDict({m: nn.Module() for m in self.normed})
        for m, x in self.normed.items():
            self.features[m].project = nn.Linear(x.shape[1], dim, dtype=dtype)
        self.fuse_user, self.fuse_item = BlockLinear(3, dim, dim, dtype), BlockLinear(3, dim, dim, dtype)
        self.g_i_iv, self.g_v_iv = BlockLinear(1, dim, dim, dtype), BlockLinear(1, dim, dim, dtype)
        self.g_t_ivat = BlockLinear(1, dim, dim // 2, dtype)
        self.g_iv_iva, self.g_iva_ivat = nn.Linear(dim, dim, dtype=dtype), nn.Linear(dim, dim // 2, dtype=dtype)

    def views(self, graph: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(users, items) of the id, vis and txt propagations (MMRec's three compute_graph calls)."""
        items = [self.item_table] + [self.features[m].project(self.normed[m]) for m in ("image", "text")]
        return [layer_mean(graph, self.user_table, x, self.cfg.n_ui_layers) for x in items]

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        views = self.views(self.graph)
        return self.fuse_user(*(u for u, _ in views)), self.fuse_item(*(i for _, i in views))

    def loss(self, graph, users, pos, neg) -> torch.Tensor:
        c, views = self.cfg, self.views(graph)
        out_u, out_i = self.fuse_user(*(u for u, _ in views)), self.fuse_item(*(i for _, i in views))
        main = nce(F.normalize(out_u[users], dim=1), F.normalize(out_i[pos], dim=1), c.nce_temp)
        (_, ids), (_, vis), (_, txt) = views
        x_iv = self.g_i_iv(ids[pos])
        fac = (nce(x_iv, self.g_v_iv(vis[pos]), c.ssl_temp)
               + nce(self.g_iva_ivat(self.g_iv_iva(x_iv)), self.g_t_ivat(txt[pos]), c.ssl_temp))
        return main + c.ssl_alpha * fac
