"""VBPR as MMRec's ``src/models/vbpr.py`` computes it, densely (``model/vbpr.py``).

    u = [p_u ; q_u],  i = [e_i ; W x_i + b],  x = [text ; image] frozen, all items projected every step
    loss = BPR + reg_weight * (||u_B|| + ||i+_B|| + ||i-_B||) / B
"""

from __future__ import annotations

import torch
from torch import nn

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.reference.base import Reference, bpr
from cliper_dist.model.vbpr import VBPRConfig


class VBPR(Reference):
    def __init__(self, cfg: VBPRConfig, data: RecData, features: Features, seed: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__(cfg, data, features, seed, dtype)
        self.user_table, self.item_table = self.id_tables()
        self.user_content = self.table(data.num_users, cfg.embedding_dim)
        self.content = torch.cat([x for x in (self.text_feature(features), self.dense(features.image))
                                  if x is not None], dim=1)
        self.project = nn.Linear(self.content.shape[1], cfg.embedding_dim, dtype=dtype)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        users = torch.cat([self.user_table, self.user_content], dim=1)
        return users, torch.cat([self.item_table, self.project(self.content)], dim=1)

    def loss(self, graph, users, pos, neg) -> torch.Tensor:
        out_u, out_i = self()
        u, i_pos, i_neg = out_u[users], out_i[pos], out_i[neg]
        return bpr(u, i_pos, i_neg) + self.cfg.reg_weight * (u.norm() + i_pos.norm() + i_neg.norm()) / len(users)
