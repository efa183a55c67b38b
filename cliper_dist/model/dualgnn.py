"""DualGNN (Wang et al., IEEE TMM 2021) over CLIPER features, as MMRec's ``src/models/dualgnn.py``
computes it (``construction: weighted_sum``, ``aggr_mode: add``):

    x_m = normalize([P_m ; MLP_1(LeakyReLU(MLP(X_m)))])     per modality m: user preferences P_m
    r_m = x_m + A x_m + A^2 x_m                               A: LightGCN's normalised graph
    item_i = r_v[i] + r_t[i]
    user_u = w_u0 (r_v[u] + r_t[u]) + w_u1 r_t[u]  + sum_j G[u, j] (same for j)      w: weight_u
    loss = -mean log2 sigmoid(user . (i+ - i-))
           + reg_weight (mean P_v[users]^2 + mean P_t[users]^2 + mean weight_u^2)

X_m are the frozen features (image; text fused by ``model.fusion``). G is the user
co-occurrence graph: each user's ``user_knn`` (MMRec: 40) users sharing the most training
items, weighted by the softmax of the shared counts; a user with fewer such users repeats
random ones of them, redrawn every epoch from (seed, epoch) (MMRec's ``topk_sample``).
The user side's w_u0 (v + t) + w_u1 t is MMRec's: its in-place ``representation +=``
turns r_v into r_v + r_t before the users' weighted sum reads it.

Column-parallel:
- P_m, MLP's input (X_m's feature columns) and every layer's output are split over
  columns (Megatron's MLP: the two layers are ``ColumnProjection``s, one reduce-scatter
  each). The row norms of x_m are one all-reduce of (U + I) partial sums, whose gradient
  is summed back over ranks (``sum_gradients``).
- A and G act per column. weight_u (U x 2) scales each rank's columns: it is replicated,
  and its gradient summed over ranks.
- The scores and the regulariser are sums over columns: the step's one all-reduce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cliper_dist.data.item_features import Features
from cliper_dist.data.recdata import RecData
from cliper_dist.model.base import Batch, FeatureConfig, Recommender, frozen_features
from cliper_dist.model.bipartite import BipartiteGraph, csr_from_pairs
from cliper_dist.model.layers import ColumnProjection, row_norms
from cliper_dist.model.propagation import batch_rows
from cliper_dist.model.workspace import Workspace
from cliper_dist.parallel.columns import ColumnParameter, ColumnSplit, normal, seeded_columns
from cliper_dist.parallel.comm import sum_gradients
from cliper_dist.sharding.tables import IdTables

LOG2 = math.log(2.0)
HOPS = 2  # MMRec applies its weightless conv twice: x + A x + A^2 x


@dataclass
class DualGNNConfig(FeatureConfig):
    """DualGNN: per-modality towers over the user-item graph and a user co-occurrence graph."""

    name: Literal["dualgnn"] = "dualgnn"
    user_knn: int = 40  # co-occurring users each user aggregates (MMRec's k)
    reg_weight: float = 1e-4  # weight of the mean squares of the batch's preferences and of weight_u


def co_occurrence_top(train_user: np.ndarray, train_item: np.ndarray, num_users: int, num_items: int, k: int,
                      block_floats: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each user's k users sharing the most training items (self excluded; ties: lower id
    first): (U, k) ids, (U, k) shared counts, and (U,) how many users share any item (the
    entries beyond that are padding). R R^T is computed a block of users at a time (block x U
    counts, never U x U): U x nnz(R) multiply-adds in all, seconds for Baby, minutes at 10x."""
    values = np.ones(len(train_user), dtype=np.float32)
    r = csr_from_pairs(train_user, train_item, values, num_users, num_items)
    block = max(1, min(num_users, block_floats // max(num_users, 1)))
    ids = torch.zeros(num_users, k, dtype=torch.int64)
    counts = torch.zeros(num_users, k)
    found = torch.zeros(num_users, dtype=torch.int64)
    user_ids = torch.arange(num_users, dtype=torch.float64)
    by_user = np.argsort(train_user, kind="stable")  # a block's pairs are then one slice
    pair_users, pair_items = torch.from_numpy(train_user[by_user]), torch.from_numpy(train_item[by_user])
    for lo in range(0, num_users, block):
        hi = min(num_users, lo + block)
        first, last = np.searchsorted(pair_users.numpy(), [lo, hi])
        items_of = torch.zeros(hi - lo, num_items)
        items_of[pair_users[first:last] - lo, pair_items[first:last]] = 1.0
        shared = (r @ items_of.T).T.double()  # (block, U): items each pair of users shares
        shared[torch.arange(hi - lo), torch.arange(lo, hi)] = 0.0  # not one's own neighbour
        found[lo:hi] = (shared > 0).sum(1)
        key = shared * (num_users + 1) - user_ids  # more shared first, then the lower id
        top = key.topk(min(k, num_users), dim=1).indices
        ids[lo:hi, :top.shape[1]] = top
        counts[lo:hi, :top.shape[1]] = shared.gather(1, top).float()
    return ids, counts, found


def sample_user_graph(ids: torch.Tensor, counts: torch.Tensor, found: torch.Tensor,
                      rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """G as (U, k) neighbours and softmax(shared counts) weights. A user with 0 < n < k
    co-occurring users repeats random ones of its n (MMRec's topk_sample); one with none
    gets zero weights."""
    k = ids.shape[1]
    ids, counts = ids.clone(), counts.clone()
    for u in np.flatnonzero((found.numpy() > 0) & (found.numpy() < k)):
        n = int(found[u])
        pick = torch.from_numpy(rng.integers(0, n, size=k - n))
        ids[u, n:], counts[u, n:] = ids[u, pick], counts[u, pick]
    weights = torch.softmax(counts, dim=1)
    weights[found == 0] = 0.0
    return ids, weights


class ModalityTower(nn.Module):
    """x = normalize([P ; MLP_1(LeakyReLU(MLP(X)))]) for one modality, this rank's columns."""

    def __init__(self, features: torch.Tensor, dim: int, split: ColumnSplit, seed: int, name: str):
        super().__init__()
        width = features.shape[1]
        split.check(width, f"{name} feature")
        self.split = split
        self.register_buffer("features", split.local(features), persistent=False)
        # MMRec: nn.Linear(D, 4d) and nn.Linear(4d, d), default initialisation
        self.mlp = ColumnProjection(width, 4 * dim, split, seed, f"{name}_mlp", weight_init="default")
        self.mlp_1 = ColumnProjection(4 * dim, dim, split, seed, f"{name}_mlp_1", weight_init="default")

    def forward(self, preference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items = self.mlp_1(F.leaky_relu(self.mlp(self.features)))
        squares = torch.cat([preference.pow(2).sum(1), items.pow(2).sum(1)])
        norm = row_norms(squares, self.split)
        return preference / norm[:len(preference), None], items / norm[len(preference):, None]


class DualGNN(Recommender, config=DualGNNConfig):
    uses_features = True

    def __init__(self, cfg: DualGNNConfig, data: RecData, tables: IdTables, split: ColumnSplit, seed: int,
                 features: Features | None = None):
        super().__init__()
        text, image = frozen_features(features, cfg.fusion, cfg.tau, "dualgnn", need_both=True)
        self.cfg, self.split, self.seed = cfg, split, seed
        dim, device = cfg.embedding_dim, tables.user.device
        self.graph = BipartiteGraph.from_edges(data.train_user, data.train_item, data.num_users,
                                               data.num_items).to(device)
        self.workspace = Workspace()
        # P_v is torchrec's user table (Xavier-uniform: the variance of MMRec's Xavier-normal), P_t the model's
        self.user_table = ColumnParameter(tables.user, dim)
        self.text_preference = ColumnParameter(
            seeded_columns(data.num_users, dim, split, seed, "text_preference",
                           normal(math.sqrt(2.0 / (data.num_users + dim)))).to(device), dim)
        self.towers = nn.ModuleDict({name: ModalityTower(x, dim, split, seed, name).to(device)
                                     for name, x in (("image", image), ("text", text))})
        # MMRec: softmax over the 2 of a Xavier-normal (U, 2, 1) tensor, then trained as is
        std = math.sqrt(2.0 / (2 + data.num_users))
        raw = seeded_columns(data.num_users, 2, ColumnSplit(), seed, "weight_u", normal(std))
        self.weight_u = nn.Parameter(torch.softmax(raw, dim=1).to(device))
        self.tables = ("user_table", "text_preference")
        self.top_users = co_occurrence_top(data.train_user, data.train_item, data.num_users, data.num_items,
                                           cfg.user_knn)
        self.user_graph = self.sampled_user_graph(0)

    def sampled_user_graph(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, epoch, 11])
        return tuple(t.to(self.weight_u.device) for t in sample_user_graph(*self.top_users, rng))

    def train_graph(self, epoch: int) -> BipartiteGraph:
        self.user_graph = self.sampled_user_graph(epoch)
        return self.graph

    def preferences(self) -> dict[str, torch.Tensor]:
        return {"image": self.user_table, "text": self.text_preference}

    def _user_rows(self, users: torch.Tensor) -> torch.Tensor:
        """The batch's users and their co-occurrence neighbours, sorted, distinct."""
        return torch.unique(torch.cat([users, self.user_graph[0][users].reshape(-1)]))

    def representations(self, graph: BipartiteGraph, user_rows: torch.Tensor | None, item_rows: torch.Tensor | None):
        """(r_v + r_t, r_t) at the user rows and r_v + r_t at the item rows (all rows: None)."""
        both_u, both_i, text_u = 0, 0, None
        for name, tower in self.towers.items():
            users, items = tower(self.preferences()[name])
            if user_rows is None:
                r_u, r_i = graph.layer_mean(users, items, HOPS)
            else:
                rows = batch_rows(graph, users, items, HOPS, user_rows, item_rows, self.workspace)
                r_u, r_i = rows.users, rows.items
            r_u, r_i = r_u * (HOPS + 1), r_i * (HOPS + 1)  # x + A x + A^2 x: a sum, not a mean
            both_u, both_i = both_u + r_u, both_i + r_i
            if name == "text":
                text_u = r_u
        return both_u, text_u, both_i

    def _users(self, both_u: torch.Tensor, text_u: torch.Tensor, rows: torch.Tensor,
               weight_u: torch.Tensor) -> torch.Tensor:
        """w_u0 (r_v + r_t) + w_u1 r_t at ``rows``."""
        w = weight_u[rows]
        return w[:, :1] * both_u + w[:, 1:] * text_u

    def partials(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        b, items = len(batch), torch.cat([batch.pos, batch.neg])
        user_rows = self._user_rows(batch.users)
        distinct, where = torch.unique(items, return_inverse=True)
        both_u, text_u, both_i = self.representations(graph, user_rows, distinct)
        weight_u = sum_gradients(self.weight_u, self.split)
        reps = self._users(both_u, text_u, user_rows, weight_u)  # at user_rows
        at = torch.searchsorted(user_rows, batch.users)
        nbr, w = self.user_graph[0][batch.users], self.user_graph[1][batch.users]
        users = reps[at] + (w.unsqueeze(-1) * reps[torch.searchsorted(user_rows, nbr)]).sum(1)
        i = both_i[where]
        prefs = torch.stack([p[batch.users].pow(2).sum() for p in self.preferences().values()])
        return {"score": (users * (i[:b] - i[b:])).sum(1), "prefs": prefs}

    def loss(self, sums: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        bpr_log2 = -F.logsigmoid(sums["score"]).mean() / LOG2
        reg = sums["prefs"].sum() / (len(batch) * self.cfg.embedding_dim) + self.weight_u.pow(2).mean()
        return bpr_log2 + self.cfg.reg_weight * reg

    def touched(self, graph: BipartiteGraph, batch: Batch) -> dict[str, torch.Tensor]:
        nbr, w = self.user_graph[0][batch.users], self.user_graph[1][batch.users]
        rows = torch.unique(torch.cat([batch.users, nbr[w > 0]]))  # a zero-weight neighbour is no dependence
        users, _ = graph.reach(rows, torch.cat([batch.pos, batch.neg]), HOPS)
        return {name: users for name in self.tables}

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        both_u, text_u, both_i = self.representations(self.graph, None, None)
        reps = self._users(both_u, text_u, slice(None), self.weight_u)
        nbr, w = self.user_graph
        return reps + (w.unsqueeze(-1) * reps[nbr]).sum(1), both_i
