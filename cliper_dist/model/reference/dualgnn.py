"""DualGNN as MMRec's ``src/models/dualgnn.py`` computes it (weighted_sum, aggr add), densely (``model/dualgnn.py``).

    x_m = normalize([P_m ; MLP_1(LeakyReLU(MLP(X_m)))]),  r_m = x_m + A x_m + A^2 x_m     over all rows, every step
    item = r_v + r_t,  user = w_u0 (r_v + r_t) + w_u1 r_t + sum_j G[u, j] (the same of j)
    loss = -mean log2 sigmoid(user . (i+ - i-)) + reg_weight (mean P_v[B]^2 + mean P_t[B]^2 + mean weight_u^2)

G is the model's own co-occurrence graph (``model.dualgnn``), drawn from (seed, epoch) as
the model draws it (MMRec's is a Python loop over users); tests/model/test_dualgnn.py checks
it against a dense construction.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.dualgnn import DualGNNConfig, co_occurrence_top, sample_user_graph
from cliper_dist.model.reference.base import Reference


class DualGNN(Reference):
    def __init__(self, cfg: DualGNNConfig, data: RecData, features: Features, seed: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__(cfg, data, features, seed, dtype)
        dim = cfg.embedding_dim
        self.raw = {"image": self.dense(features.image), "text": self.text_feature(features)}
        self.user_table = nn.Parameter(nn.init.xavier_normal_(torch.empty(data.num_users, dim, dtype=dtype)))
        self.text_preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(data.num_users, dim, dtype=dtype)))
        self.towers = nn.ModuleDict({m: nn.Module() for m in self.raw})
        for m, x in self.raw.items():
            self.towers[m].mlp = nn.Linear(x.shape[1], 4 * dim, dtype=dtype)
            self.towers[m].mlp_1 = nn.Linear(4 * dim, dim, dtype=dtype)
        self.weight_u = nn.Parameter(torch.softmax(nn.init.xavier_normal_(torch.empty(data.num_users, 2, dtype=dtype)), 1))
        self.top_users = co_occurrence_top(data.train_user, data.train_item, data.num_users, data.num_items,
                                           cfg.user_knn)
        self.epoch_graph(0)

    def epoch_graph(self, epoch: int) -> torch.Tensor:
        self.user_graph = sample_user_graph(*self.top_users, np.random.default_rng([self.seed, epoch, 11]))
        return self.graph

    def propagate(self, graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reps = {}
        for m, preference in (("image", self.user_table), ("text", self.text_preference)):
            tower = self.towers[m]
            x = F.normalize(torch.cat([preference, tower.mlp_1(F.leaky_relu(tower.mlp(self.raw[m])))]), dim=1)
            h = torch.sparse.mm(graph, x)
            reps[m] = x + h + torch.sparse.mm(graph, h)
        both, w = reps["image"] + reps["text"], self.weight_u
        users = w[:, :1] * both[:self.n_users] + w[:, 1:] * reps["text"][:self.n_users]
        neighbours, weights = self.user_graph
        return users + (weights.to(self.dtype)[:, :, None] * users[neighbours]).sum(1), both[self.n_users:]

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.graph)

    def loss(self, graph, users, pos, neg) -> torch.Tensor:
        out_u, out_i = self.propagate(graph)
        score = (out_u[users] * (out_i[pos] - out_i[neg])).sum(1)
        reg = (self.user_table[users].pow(2).mean() + self.text_preference[users].pow(2).mean()
               + self.weight_u.pow(2).mean())
        return -torch.log2(torch.sigmoid(score)).mean() + self.cfg.reg_weight * reg
