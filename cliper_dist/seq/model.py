"""SASRec on the sharded item table: a training step and the users' representations.

Each rank's loss is its positions' share of the global mean, so the sum over ranks is the loss
of the whole batch: torchrec sums the table's row gradients over ranks (and fbgemm applies
them in the backward), and the dense gradients are summed over ranks (an all-reduce), never
averaged. Two losses:

- ``bce``: the paper's, each position's target against one sampled negative;
- ``ce``: the full softmax over every item (``softmax.sharded_cross_entropy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from cliper_dist.seq.data import Batch, Sequences
from cliper_dist.seq.sasrec import SASRec, SASRecConfig, left_pad
from cliper_dist.seq.softmax import sharded_cross_entropy, target_ranks
from cliper_dist.seq.table import ItemTable, TableOptim


@dataclass
class SeqConfig:
    embedding_dim: int = 64
    loss: Literal["bce", "ce"] = "ce"
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    table: TableOptim = field(default_factory=TableOptim)
    lr: float = 1e-3  # Adam, dense part
    softmax_block: int = 4096  # positions scored at once against this rank's rows


class SeqModel:
    def __init__(self, cfg: SeqConfig, num_items: int, seed: int, world_size: int, device: torch.device):
        self.cfg = cfg
        self.table = ItemTable(num_items, cfg.embedding_dim, cfg.table, seed, world_size, device)
        torch.manual_seed(seed)  # the same dense initial values on every rank
        self.encoder = SASRec(cfg.sasrec, cfg.embedding_dim).to(device)
        self.optimizer = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr)

    def _encode(self, embeddings: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = left_pad(embeddings, lengths, max(int(lengths.max()), 1) if lengths.numel() else 1)
        return self.encoder(x, mask), mask

    def step(self, batch: Batch) -> float:
        """One training step on this rank's share of a global batch; returns its loss share."""
        self.encoder.train()
        ids = {"seq": (batch.inputs, batch.lengths)}
        if self.cfg.loss == "bce":
            ids.update(pos=(batch.targets, batch.lengths), neg=(batch.negatives, batch.lengths))
        else:
            ids["rows"] = self.table.own_rows_ids(batch.bags)
        out = self.table.lookup(ids, batch.bags)
        y, mask = self._encode(out["seq"].values(), batch.lengths)
        h = y[mask]
        if self.cfg.loss == "bce":
            pos = (h * out["pos"].values()).sum(-1)
            neg = (h * out["neg"].values()).sum(-1)
            loss = (F.softplus(-pos) + F.softplus(neg)).sum() / batch.total
        else:
            loss = sharded_cross_entropy(h, out["rows"].values(), batch.targets, batch.total, self.table.lo,
                                         self.cfg.softmax_block)
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()  # the table's rows are updated here (fbgemm, fused)
        self._sum_dense_gradients()
        self.optimizer.step()
        return float(loss.detach())

    def _sum_dense_gradients(self) -> None:
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return
        grads = [p.grad for p in self.encoder.parameters()]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def own_rows(self) -> torch.Tensor:
        return self.table.local.detach()

    @torch.no_grad()
    def rank_targets(self, history: tuple[np.ndarray, np.ndarray], targets: np.ndarray, users: np.ndarray,
                     bags: int) -> torch.Tensor:
        """0-based full-ranking rank of each of ``users``' target (this rank's users, in ``bags`` >=
        len(users) bags: every rank passes the same number); ``history`` = (indptr, items) of
        every user, ``targets`` every user's target."""
        self.encoder.eval()
        indptr, seen = history
        L = self.cfg.sasrec.max_len
        windows = [seen[indptr[u]:indptr[u + 1]][-L:] for u in users]
        lengths = torch.zeros(bags, dtype=torch.long)
        lengths[:len(users)] = torch.tensor([len(w) for w in windows], dtype=torch.long)
        inputs = torch.from_numpy(np.concatenate(windows)) if windows else torch.zeros(0, dtype=torch.long)
        out = self.table.lookup({"seq": (inputs, lengths)}, bags)
        y, _ = self._encode(out["seq"].values(), lengths)
        h = y[:len(users), -1]
        return target_ranks(h, torch.from_numpy(users), torch.from_numpy(targets[users]), self.own_rows(),
                            self.table.lo, history)


def evaluate(model: SeqModel, seqs: Sequences, split: str, rank: int, world_size: int,
             batch_users: int = 256, ks: tuple[int, ...] = (10, 20)) -> dict[str, float]:
    """HR@k and NDCG@k of every user with a ``split`` target, ranked against all items."""
    targets = seqs.test if split == "test" else seqs.valid
    history = seqs.history(with_valid=split == "test")
    users = np.flatnonzero(targets >= 0)
    per_rank = -(-len(users) // world_size)
    mine = users[rank * per_rank:(rank + 1) * per_rank]
    ranks = [model.rank_targets(history, targets, mine[s:s + batch_users], batch_users)
             for s in range(0, per_rank, batch_users)]
    r = torch.cat(ranks).double() if ranks else torch.zeros(0, dtype=torch.float64)
    sums = torch.stack([torch.tensor(float(len(r)), dtype=torch.float64)]
                       + [v for k in ks for v in ((r < k).sum().double(),
                                                  torch.where(r < k, 1.0 / torch.log2(r + 2.0), 0.0).sum())])
    if dist.is_initialized() and world_size > 1:
        dist.all_reduce(sums)
    n = max(float(sums[0]), 1.0)
    out = {}
    for i, k in enumerate(ks):
        out[f"hr@{k}"] = float(sums[1 + 2 * i]) / n
        out[f"ndcg@{k}"] = float(sums[2 + 2 * i]) / n
    return out
