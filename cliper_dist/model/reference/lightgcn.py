"""LightGCN as MMRec's ``src/models/lightgcn.py`` computes it, densely (``model/lightgcn.py``).

    users, items = mean_{l=0..L} A^l [E_u; E_i]        every step, over the whole graph
    loss = BPR + reg_weight * (||E_u[users]|| + ||E_i[pos]|| + ||E_i[neg]||) / B
"""

from __future__ import annotations

import torch

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.lightgcn import LightGCNConfig
from cliper_dist.model.reference.base import Reference, bpr, layer_mean


class LightGCN(Reference):
    def __init__(self, cfg: LightGCNConfig, data: RecData, features: Features | None, seed: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__(cfg, data, features, seed, dtype)
        self.user_table, self.item_table = self.id_tables()

    def propagate(self, graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return layer_mean(graph, self.user_table, self.item_table, self.cfg.n_ui_layers)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.graph)

    def loss(self, graph, users, pos, neg) -> torch.Tensor:
        out_u, out_i = self.propagate(graph)
        ego = self.user_table[users].norm() + self.item_table[pos].norm() + self.item_table[neg].norm()
        return bpr(out_u[users], out_i[pos], out_i[neg]) + self.cfg.reg_weight * ego / len(users)
