"""SASRec's training step and full ranking, dense and single-process: the equations the sharded
model (``model.py``) must reproduce at any world size. The whole table is one tensor, the loss
one ``F.cross_entropy`` (or BCE) over the global batch, and the table's optimizer written out as
fbgemm defines it."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from cliper_dist.seq.data import Batch, Sequences
from torch import nn

from cliper_dist.seq.model import ItemContent, SASRecConfig
from cliper_dist.seq.sasrec import SASRec, left_pad
from cliper_dist.seq.table import init_rows


class ReferenceSeqModel:
    def __init__(self, cfg: SASRecConfig, lr: float, num_items: int, seed: int, features: torch.Tensor | None = None):
        self.cfg = cfg
        self.table = init_rows(0, num_items, num_items, cfg.embedding_dim, seed).requires_grad_()
        rowwise = cfg.table_optimizer == "rowwise_adagrad"
        self.state = torch.zeros(num_items) if rowwise else torch.zeros(num_items, cfg.embedding_dim)
        torch.manual_seed(seed)
        self.encoder = SASRec(cfg.embedding_dim, cfg.max_len, cfg.blocks, cfg.heads, cfg.dropout, cfg.norm)
        self.content = None if features is None else ItemContent(features, cfg.embedding_dim)
        dense = nn.ModuleList([self.encoder] + ([self.content] if self.content else []))
        self.optimizer = torch.optim.Adam(dense.parameters(), lr=lr)

    def items(self, ids: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """The item vectors: ID rows, projected features, or their sum (``item_input``)."""
        if isinstance(ids, slice):
            ids = torch.arange(self.table.shape[0])[ids]
        out = self.table[ids] if self.cfg.uses_ids else 0.0
        return out + self.content(ids) if self.content is not None else out

    def step(self, batch: Batch) -> float:
        self.encoder.train()
        x, mask = left_pad(self.items(batch.inputs), batch.lengths, max(int(batch.lengths.max()), 1))
        h = batch.scored(self.encoder(x, mask), mask)
        if self.cfg.loss == "bce":
            pos = (h * self.items(batch.targets)).sum(-1)
            neg = (h * self.items(batch.negatives)).sum(-1)
            loss = (F.softplus(-pos) + F.softplus(neg)).sum() / batch.total
        else:
            loss = F.cross_entropy(h @ self.items().T, batch.targets, reduction="sum") / batch.total
        self.optimizer.zero_grad()
        self.table.grad = None
        loss.backward()
        if self.cfg.uses_ids:
            self._step_table(self._touched(batch))
        self.optimizer.step()
        return float(loss.detach())

    def _touched(self, batch: Batch) -> torch.Tensor:
        """The rows the sharded step looks up (fbgemm updates those, and only those)."""
        if self.cfg.loss == "ce":
            return torch.arange(self.table.shape[0])
        return torch.unique(torch.cat([batch.inputs, batch.targets, batch.negatives]))

    @torch.no_grad()
    def _step_table(self, rows: torch.Tensor) -> None:
        g, lr, eps = self.table.grad[rows], self.cfg.table_lr, self.cfg.table_eps
        if self.cfg.table_optimizer == "sgd":
            self.table[rows] -= lr * g
        elif self.cfg.table_optimizer == "rowwise_adagrad":
            self.state[rows] += g.pow(2).mean(1)
            self.table[rows] -= lr * g / (self.state[rows].sqrt() + eps)[:, None]
        else:
            self.state[rows] += g.pow(2)
            self.table[rows] -= lr * g / (self.state[rows].sqrt() + eps)

    @torch.no_grad()
    def evaluate(self, seqs: Sequences, split: str, ks: tuple[int, ...] = (10, 20)) -> dict[str, float]:
        self.encoder.eval()
        items = self.items()
        indptr, seen = seqs.history(with_valid=split == "test")
        targets = seqs.test if split == "test" else seqs.valid
        users = np.flatnonzero(targets >= 0)
        L = self.cfg.max_len
        windows = [seen[indptr[u]:indptr[u + 1]][-L:] for u in users]
        lengths = torch.tensor([len(w) for w in windows])
        x, mask = left_pad(items[torch.from_numpy(np.concatenate(windows))], lengths, max(int(lengths.max()), 1))
        scores = self.encoder(x, mask)[:, -1] @ items.T
        t = torch.from_numpy(targets[users])
        target_score = scores[torch.arange(len(users)), t]
        for i, u in enumerate(users):
            history = torch.from_numpy(seen[indptr[u]:indptr[u + 1]])
            scores[i, history[history != t[i]]] = -math.inf
        ranks = (scores > target_score[:, None]).sum(1).double()
        hr = {f"hr@{k}": float((ranks < k).double().mean()) for k in ks}
        return hr | {f"ndcg@{k}": float(torch.where(ranks < k, 1.0 / torch.log2(ranks + 2.0), 0.0).mean()) for k in ks}
