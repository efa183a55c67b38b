"""LATTICE as MMRec's ``src/models/lattice.py`` computes it (cf_model lightgcn), densely (``model/lattice.py``).

    users, items = mean_{l=0..L} P^l [E_u; E_i]           P = D^-1 (A + I)
    S = (1 - lambda) N(sum_m w_m K(W_m X_m + b_m)) + lambda sum_m w_m N(K(X_m at build))     w = softmax(modal_weight)
    items += h / ||h||,  h = S^{n_mm} E_i
    loss = BPR + reg_weight * (||u||^2 + ||i+||^2 + ||i-||^2) / (2B)      on the output rows

K keeps each row's top-k cosine similarities of the dense I x I matrix, N(S) = D^-1/2 S D^-1/2
by ``diagflat`` products as MMRec's ``compute_normalized_laplacian`` (O(I^3)). The learned
part is built on the first batch of each epoch and at every evaluation, and used detached by
the epoch's other batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.lattice import LATTICEConfig
from cliper_dist.model.reference.base import BlockLinear, Reference, bpr, layer_mean, top_k


def similarity_knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """K(x): the dense I x I cosine similarities, each row's top k kept."""
    top = top_k(x, k)
    return torch.zeros(len(x), len(x), dtype=x.dtype).scatter_(1, top.indices, top.values)


def normalized(adj: torch.Tensor) -> torch.Tensor:
    """D^-1/2 S D^-1/2, D the row sums (0 where a row sums to 0)."""
    inv = adj.sum(1).pow(-0.5)
    inv[torch.isinf(inv)] = 0.0
    d = torch.diagflat(inv)
    return d @ adj @ d


class LATTICE(Reference):
    def __init__(self, cfg: LATTICEConfig, data: RecData, features: Features, seed: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__(cfg, data, features, seed, dtype)
        self.user_table, self.item_table = self.id_tables()
        present = [(m, x) for m, x in (("image", self.dense(features.image)), ("text", self.text_feature(features)))
                   if x is not None]
        self.branches = nn.ModuleDict({m: nn.Module() for m, _ in present})
        for m, x in present:
            self.branches[m].table = nn.Parameter(x.clone())
            self.branches[m].project = BlockLinear(1, x.shape[1], cfg.embedding_dim, dtype)
        with torch.no_grad():
            self.original = [normalized(similarity_knn(x, cfg.knn_k)) for _, x in present]
        self.modal_weight = nn.Parameter(torch.full((2,), 0.5, dtype=dtype)) if len(present) > 1 else None
        self.build, self.item_graph = True, None

    def adjacency(self, user, item) -> torch.Tensor:
        """D^-1 (A + I): every node averages itself and its neighbours."""
        rows, cols = self.stacked(user, item)
        loops = torch.arange(self.n_users + self.n_items)
        rows, cols = torch.cat([rows, loops]), torch.cat([cols, loops])
        return self.sparse(rows, cols, 1.0 / torch.bincount(rows).to(self.dtype)[rows])

    def epoch_graph(self, epoch: int) -> torch.Tensor:
        self.build = True  # MMRec's pre_epoch_processing: the epoch's first batch learns the graph
        return self.graph

    def learned_graph(self) -> torch.Tensor:
        w = torch.softmax(self.modal_weight, 0) if self.modal_weight is not None else torch.ones(1, dtype=self.dtype)
        learned = sum(w[m] * similarity_knn(b.project(b.table), self.cfg.knn_k)
                      for m, b in enumerate(self.branches.values()))
        lam = self.cfg.lambda_coeff
        return (1 - lam) * normalized(learned) + lam * sum(w[m] * s for m, s in enumerate(self.original))

    def propagate(self, graph: torch.Tensor, build: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.item_graph = self.learned_graph() if build else self.item_graph.detach()
        h = self.item_table
        for _ in range(self.cfg.n_mm_layers):
            h = self.item_graph @ h
        users, items = layer_mean(graph, self.user_table, self.item_table, self.cfg.n_ui_layers)
        return users, items + F.normalize(h, dim=1)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.graph, build=True)

    def loss(self, graph, users, pos, neg) -> torch.Tensor:
        out_u, out_i = self.propagate(graph, self.build)
        self.build = False
        u, i_pos, i_neg = out_u[users], out_i[pos], out_i[neg]
        squares = u.pow(2).sum() + i_pos.pow(2).sum() + i_neg.pow(2).sum()
        return bpr(u, i_pos, i_neg) + self.cfg.reg_weight * 0.5 * squares / len(users)
