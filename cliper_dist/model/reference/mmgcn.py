"""MMGCN as MMRec's ``src/models/mmgcn.py`` computes it, densely (``model/mmgcn.py``).

    per modality m (image through an MLP to 256, text as it is), every step over all U + I rows:
      x^0 = normalize([P_m ; MLP(X_m)])
      x^l = LeakyReLU(G_l [LeakyReLU(mean_N(x^{l-1}) W_l) , LeakyReLU(L_l x^{l-1} + c_l) + e] + g_l)
    r = mean_m x^L_m;  loss = BPR + reg_weight (mean over the 2B (user, item) rows of e^2 + mean P_v^2)

e = [E_u ; E_i] and P_m are never trained, but autograd reaches them, as in MMRec (plain
tensors there; buffers here, so that the state dict still holds them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.mmgcn import IMAGE_LATENT, MMGCNConfig
from cliper_dist.model.reference.base import Reference, bpr


def frozen(rows: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    return nn.init.xavier_normal_(torch.empty(rows, width, dtype=dtype)).requires_grad_()


class ConcatLinear(nn.Module):
    """nn.Linear on inputs side by side, its weight held as one (out, in_j) part per input (the
    column-parallel ``ConcatProjection``'s shape)."""

    def __init__(self, widths: tuple[int, ...], out_width: int, dtype: torch.dtype):
        super().__init__()
        self.parts = nn.ModuleList(nn.Linear(w, out_width, bias=False, dtype=dtype) for w in widths)
        self.bias = nn.Parameter(torch.zeros(out_width, dtype=dtype))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        weight = torch.cat([part.weight for part in self.parts], dim=1)
        return torch.cat(xs, dim=1) @ weight.T + self.bias


class MMGCN(Reference):
    def __init__(self, cfg: MMGCNConfig, data: RecData, features: Features, seed: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__(cfg, data, features, seed, dtype)
        dim = cfg.embedding_dim
        self.register_buffer("user_table", frozen(data.num_users, dim, dtype))
        self.register_buffer("item_table", frozen(data.num_items, dim, dtype))
        self.raw = {m: x for m, x in (("image", self.dense(features.image)), ("text", self.text_feature(features)))
                    if x is not None}
        self.towers = nn.ModuleDict()
        for m, x in self.raw.items():
            tower = self.towers[m] = nn.Module()
            ego_width = IMAGE_LATENT if m == "image" else x.shape[1]
            if m == "image":
                tower.mlp = nn.Linear(x.shape[1], IMAGE_LATENT, dtype=dtype)
            tower.register_buffer("preference", frozen(data.num_users, ego_width, dtype))
            widths = [ego_width] + [dim] * (cfg.n_ui_layers - 1)
            tower.conv = nn.ModuleList(nn.Linear(w, w, bias=False, dtype=dtype) for w in widths)
            tower.linear = nn.ModuleList(nn.Linear(w, dim, dtype=dtype) for w in widths)
            tower.gate = nn.ModuleList(ConcatLinear((w, dim), dim, dtype) for w in widths)

    def adjacency(self, user, item) -> torch.Tensor:
        """D^-1 A: each node's mean over its neighbours (MMRec's mean aggregation), CSR."""
        rows, cols = self.stacked(user, item)
        return self.sparse(rows, cols, 1.0 / torch.bincount(rows).to(self.dtype)[rows]).to_sparse_csr()

    def gcn(self, m: str) -> torch.Tensor:
        tower, ids = self.towers[m], torch.cat([self.user_table, self.item_table])
        items = tower.mlp(self.raw[m]) if m == "image" else self.raw[m]
        x = F.normalize(torch.cat([tower.preference, items]), dim=1)
        for conv, linear, gate in zip(tower.conv, tower.linear, tower.gate):
            h = F.leaky_relu(torch.sparse.mm(self.graph, conv(x)))
            x = F.leaky_relu(gate(h, F.leaky_relu(linear(x)) + ids))
        return x

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        r = sum(self.gcn(m) for m in self.towers) / len(self.towers)
        return r[:self.n_users], r[self.n_users:]

    def loss(self, graph, users, pos, neg) -> torch.Tensor:
        out_u, out_i = self()
        pairs = torch.stack([pos, neg], dim=1).reshape(-1)  # MMRec's interleaved (user, item) rows
        ids = self.user_table[users].repeat_interleave(2, dim=0).pow(2) + self.item_table[pairs].pow(2)
        reg = ids.mean() + (self.towers["image"].preference.pow(2).mean() if "image" in self.towers else 0.0)
        return bpr(out_u[users], out_i[pos], out_i[neg]) + self.cfg.reg_weight * reg
