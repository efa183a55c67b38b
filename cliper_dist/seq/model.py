"""SASRec on the sharded item table: a training step and the users' representations.

An item's input vector is its ID row (the torchrec table), its frozen features projected to the
model's width (CLIPER fused or adapted features, ``ItemContent``), or their sum
(``model.item_input``); the same vectors are the output layer that scores the next item.

Each rank's loss is its positions' share of the global mean, so the sum over ranks is the loss
of the whole batch: torchrec sums the table's row gradients over ranks (and fbgemm applies
them in the backward), and the dense gradients are summed over ranks (an all-reduce), never
averaged. Two losses:

- ``bce``: the paper's, each position's target against one sampled negative;
- ``ce``: the full softmax over every item (``softmax.sharded_cross_entropy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from cliper_dist.data.features import ItemVectors
from cliper_dist.data.item_features import Features
from cliper_dist.errors import UserError
from cliper_dist.model.base import FeatureConfig
from cliper_dist.parallel.optim import OptimConfig
from cliper_dist.seq.data import Batch, Sequences
from cliper_dist.seq.sasrec import SASRec, left_pad
from cliper_dist.seq.softmax import sharded_cross_entropy, target_ranks
from cliper_dist.seq.table import ItemTable, Optimizer, TableOptim, row_bounds

ItemInput = Literal["id", "features", "id+features"]


@dataclass
class SASRecConfig(FeatureConfig):
    """``model.name=sasrec``: the sequential task (docs/sequential.md)."""

    name: Literal["sasrec"] = "sasrec"
    loss: Literal["bce", "ce"] = "ce"  # bce: one sampled negative per position (the paper); ce: full softmax
    item_input: ItemInput = "id"  # an item's vector: ID row, projected features (--features), or their sum
    max_len: int = 50  # L: the most recent items a user's representation reads
    blocks: int = 2  # self-attention blocks
    heads: int = 1
    dropout: float = 0.2
    table_optimizer: Optimizer = "rowwise_adagrad"  # fbgemm's, fused into the backward (CPU: no Adam)
    table_lr: float = 0.05
    table_eps: float = 1e-8
    softmax_block: int = 4096  # positions scored at once against this rank's rows (ce)

    @property
    def uses_ids(self) -> bool:
        return self.item_input != "features"

    @property
    def uses_features(self) -> bool:
        return self.item_input != "id"

    def check(self) -> None:
        """One line per misconfiguration, before anything is loaded or written."""
        for key in ("max_len", "blocks", "heads", "embedding_dim", "softmax_block"):
            if getattr(self, key) < 1:
                raise UserError(f"model.{key} must be >= 1; got {getattr(self, key)}")
        if self.embedding_dim % self.heads:
            raise UserError(f"model.embedding_dim {self.embedding_dim} is not divisible by model.heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1); got {self.dropout}")
        if self.uses_features and self.fusion == "mlp":
            raise UserError("model.fusion=mlp is trained with FREEDOM only; sasrec reads fixed features: "
                            "fusion sa, sum or concat")


def feature_matrix(features: Features, fusion: str, tau: float) -> torch.Tensor:
    """Each item's modalities (CLIPER-fused text views or the ready text feature, the image),
    each row L2-normalised so the modalities weigh alike, side by side: (I, D_text + D_image)."""
    parts = [F.normalize(v.whole(), dim=1) for v in features.modalities(fusion, tau) if isinstance(v, ItemVectors)]
    return torch.cat(parts, dim=1)


class ItemContent(nn.Module):
    """Frozen item features, projected to the model's width by a trained linear map (data-parallel)."""

    def __init__(self, features: torch.Tensor, dim: int):
        super().__init__()
        self.register_buffer("features", features, persistent=False)
        self.proj = nn.Linear(features.shape[1], dim)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features[items])


class SeqModel:
    """The item vectors (sharded ID table and/or ``ItemContent``) and the SASRec encoder; rank r
    scores against its rows [lo, hi) of the output layer."""

    config_class = SASRecConfig  # model.name=sasrec (model/registry.py)
    task = "seq"

    def __init__(self, cfg: SASRecConfig, optim: OptimConfig, num_items: int, seed: int, rank: int, world_size: int,
                 device: torch.device, features: torch.Tensor | None = None):
        if cfg.uses_features != (features is not None):
            raise ValueError(f"item_input={cfg.item_input} with features {'absent' if features is None else 'given'}")
        self.cfg, self.num_items = cfg, num_items
        self.table = (ItemTable(num_items, cfg.embedding_dim, TableOptim(cfg.table_optimizer, cfg.table_lr,
                                                                        cfg.table_eps), seed, world_size, device)
                      if cfg.uses_ids else None)
        self.lo, self.hi = row_bounds(num_items, rank, world_size)
        torch.manual_seed(seed)  # the same dense initial values on every rank
        self.encoder = SASRec(cfg.embedding_dim, cfg.max_len, cfg.blocks, cfg.heads, cfg.dropout).to(device)
        self.content = None if features is None else ItemContent(features, cfg.embedding_dim).to(device)
        self.dense = nn.ModuleDict({"encoder": self.encoder, **({"content": self.content} if self.content else {})})
        self.optimizer = torch.optim.Adam(self.dense.parameters(), lr=optim.lr, betas=(optim.beta1, optim.beta2),
                                          eps=optim.eps, weight_decay=optim.weight_decay)
        for p in self.dense.parameters():  # Adam's state exists from the start: a checkpoint loads into it
            self.optimizer.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                       "exp_avg_sq": torch.zeros_like(p)}

    def _vectors(self, ids: dict[str, tuple[torch.Tensor, torch.Tensor]], bags: int) -> dict[str, torch.Tensor]:
        """Each key's item vectors: ID rows looked up through torchrec, plus projected features."""
        rows = {k: jt.values() for k, jt in self.table.lookup(ids, bags).items()} if self.table else {}
        if self.content is None:
            return rows
        return {k: self.content(items) + rows[k] if k in rows else self.content(items)
                for k, (items, _) in ids.items()}

    def _encode(self, embeddings: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = left_pad(embeddings, lengths, max(int(lengths.max()), 1) if lengths.numel() else 1)
        return self.encoder(x, mask), mask

    def _own_rows_ids(self, bags: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's output-layer rows, all in the first bag (row-wise routing keeps them local)."""
        lengths = torch.zeros(bags, dtype=torch.long)
        lengths[0] = self.hi - self.lo
        return torch.arange(self.lo, self.hi), lengths

    def step(self, batch: Batch) -> torch.Tensor:
        """One training step on this rank's share of a global batch; returns its loss share."""
        self.dense.train()
        ids = {"seq": (batch.inputs, batch.lengths)}
        if self.cfg.loss == "bce":
            ids.update(pos=(batch.targets, batch.lengths), neg=(batch.negatives, batch.lengths))
        else:
            ids["rows"] = self._own_rows_ids(batch.bags)
        vectors = self._vectors(ids, batch.bags)
        y, mask = self._encode(vectors["seq"], batch.lengths)
        h = y[mask]
        if self.cfg.loss == "bce":
            pos = (h * vectors["pos"]).sum(-1)
            neg = (h * vectors["neg"]).sum(-1)
            loss = (F.softplus(-pos) + F.softplus(neg)).sum() / batch.total
        else:
            loss = sharded_cross_entropy(h, vectors["rows"], batch.targets, batch.total, self.lo,
                                         self.cfg.softmax_block)
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()  # the table's rows are updated here (fbgemm, fused)
        self._sum_dense_gradients()
        self.optimizer.step()
        return loss.detach()

    def _sum_dense_gradients(self) -> None:
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return
        grads = [p.grad for p in self.dense.parameters()]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    @torch.no_grad()
    def own_rows(self) -> torch.Tensor:
        """This rank's rows of the output layer, [lo, hi) x d."""
        rows = self.table.local.detach() if self.table else 0.0
        if self.content is not None:
            rows = rows + self.content(torch.arange(self.lo, self.hi))
        return rows

    @torch.no_grad()
    def user_vectors(self, history: tuple[np.ndarray, np.ndarray], users: np.ndarray, bags: int) -> torch.Tensor:
        """The representation of each of ``users`` (this rank's, in ``bags`` >= len(users) bags: every
        rank passes the same number, for the table's collective lookup) after the last L items of its
        ``history`` = (indptr, items)."""
        self.dense.eval()
        indptr, seen = history
        windows = [seen[indptr[u]:indptr[u + 1]][-self.cfg.max_len:] for u in users]
        lengths = torch.zeros(bags, dtype=torch.long)
        lengths[:len(users)] = torch.tensor([len(w) for w in windows], dtype=torch.long)
        inputs = torch.from_numpy(np.concatenate(windows)) if windows else torch.zeros(0, dtype=torch.long)
        y, _ = self._encode(self._vectors({"seq": (inputs, lengths)}, bags)["seq"], lengths)
        return y[:len(users), -1]

    def rank_targets(self, history: tuple[np.ndarray, np.ndarray], targets: np.ndarray, users: np.ndarray,
                     bags: int) -> torch.Tensor:
        """0-based full-ranking rank of each of ``users``' target (``targets``: every user's)."""
        h = self.user_vectors(history, users, bags)
        return target_ranks(h, torch.from_numpy(users), torch.from_numpy(targets[users]), self.own_rows(), self.lo,
                            history)

    def state_dict(self, with_optimizer: bool) -> dict:
        """The DCP state, every entry a view of the live tensors: the table's rows (and fbgemm's
        optimizer state), the dense parameters (and Adam's)."""
        state: dict = {"dense": self.dense.state_dict()}
        if self.table:
            state["table"] = self.table.module.state_dict()
        if with_optimizer:
            state["adam"] = {f"{name}.{key}": value for name, p in self.dense.named_parameters()
                             for key, value in self.optimizer.state[p].items()}
            if self.table:
                state["table_optim"] = self.table.module.fused_optimizer.state_dict()
        return state


def evaluate(model: SeqModel, seqs: Sequences, split: str, rank: int, world_size: int,
             batch_users: int = 256, users: np.ndarray | None = None, ks: tuple[int, ...] = (10, 20)
             ) -> dict[str, float]:
    """HR@k and NDCG@k of every user with a ``split`` target (among ``users`` when given), ranked
    against all items."""
    targets = seqs.test if split == "test" else seqs.valid
    history = seqs.history(with_valid=split == "test")
    candidates = np.flatnonzero(targets >= 0)
    if users is not None:
        candidates = np.intersect1d(candidates, users)
    per_rank = -(-len(candidates) // world_size)
    mine = candidates[rank * per_rank:(rank + 1) * per_rank]
    ranks = [model.rank_targets(history, targets, mine[s:s + batch_users], batch_users)
             for s in range(0, per_rank, batch_users)]
    r = torch.cat(ranks).double() if ranks else torch.zeros(0, dtype=torch.float64)
    sums = torch.stack([torch.tensor(float(len(r)), dtype=torch.float64)]
                       + [v for k in ks for v in ((r < k).sum().double(),
                                                  torch.where(r < k, 1.0 / torch.log2(r + 2.0), 0.0).sum())])
    if dist.is_initialized() and world_size > 1:
        dist.all_reduce(sums)
    n = max(float(sums[0]), 1.0)
    hr = {f"hr@{k}": round(float(sums[1 + 2 * i]) / n, 6) for i, k in enumerate(ks)}
    return hr | {f"ndcg@{k}": round(float(sums[2 + 2 * i]) / n, 6) for i, k in enumerate(ks)}
