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
from cliper_dist.seq.model import SeqConfig
from cliper_dist.seq.sasrec import SASRec, left_pad
from cliper_dist.seq.table import init_rows


class ReferenceSeqModel:
    def __init__(self, cfg: SeqConfig, num_items: int, seed: int):
        self.cfg = cfg
        self.table = init_rows(0, num_items, num_items, cfg.embedding_dim, seed).requires_grad_()
        self.state = torch.zeros(num_items) if cfg.table.name == "rowwise_adagrad" else torch.zeros(num_items,
                                                                                                     cfg.embedding_dim)
        torch.manual_seed(seed)
        self.encoder = SASRec(cfg.sasrec, cfg.embedding_dim)
        self.optimizer = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr)

    def step(self, batch: Batch) -> float:
        self.encoder.train()
        x, mask = left_pad(self.table[batch.inputs], batch.lengths, max(int(batch.lengths.max()), 1))
        h = self.encoder(x, mask)[mask]
        if self.cfg.loss == "bce":
            pos = (h * self.table[batch.targets]).sum(-1)
            neg = (h * self.table[batch.negatives]).sum(-1)
            loss = (F.softplus(-pos) + F.softplus(neg)).sum() / batch.total
        else:
            loss = F.cross_entropy(h @ self.table.T, batch.targets, reduction="sum") / batch.total
        self.optimizer.zero_grad()
        self.table.grad = None
        loss.backward()
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
        g, opt = self.table.grad[rows], self.cfg.table
        if opt.name == "sgd":
            self.table[rows] -= opt.lr * g
        elif opt.name == "rowwise_adagrad":
            self.state[rows] += g.pow(2).mean(1)
            self.table[rows] -= opt.lr * g / (self.state[rows].sqrt() + opt.eps)[:, None]
        else:
            self.state[rows] += g.pow(2)
            self.table[rows] -= opt.lr * g / (self.state[rows].sqrt() + opt.eps)

    @torch.no_grad()
    def evaluate(self, seqs: Sequences, split: str, ks: tuple[int, ...] = (10, 20)) -> dict[str, float]:
        self.encoder.eval()
        indptr, seen = seqs.history(with_valid=split == "test")
        targets = seqs.test if split == "test" else seqs.valid
        users = np.flatnonzero(targets >= 0)
        L = self.cfg.sasrec.max_len
        windows = [seen[indptr[u]:indptr[u + 1]][-L:] for u in users]
        lengths = torch.tensor([len(w) for w in windows])
        x, mask = left_pad(self.table[torch.from_numpy(np.concatenate(windows))], lengths, max(int(lengths.max()), 1))
        scores = self.encoder(x, mask)[:, -1] @ self.table.T
        t = torch.from_numpy(targets[users])
        target_score = scores[torch.arange(len(users)), t]
        for i, u in enumerate(users):
            history = torch.from_numpy(seen[indptr[u]:indptr[u + 1]])
            scores[i, history[history != t[i]]] = -math.inf
        ranks = (scores > target_score[:, None]).sum(1).double()
        out = {}
        for k in ks:
            out[f"hr@{k}"] = float((ranks < k).double().mean())
            out[f"ndcg@{k}"] = float(torch.where(ranks < k, 1.0 / torch.log2(ranks + 2.0), 0.0).mean())
        return out
