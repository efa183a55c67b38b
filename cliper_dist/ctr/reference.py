"""The CTR model's equations in one process, without torchrec's sharding: one ``nn.EmbeddingBag``
(sum) per sparse feature, torchrec's dense layers (the same modules, seeded the same), BCE over
the whole global batch.

Table optimizers, written out (what fbgemm's exact kernels do for the rows of a step; a row the
batch does not reach has a zero gradient and does not move):

- ``sgd``: w -= lr g
- ``adagrad``: G += g * g; w -= lr g / (sqrt(G) + eps)      (per element)
- ``rowwise_adagrad``: G_row += mean(g * g); w -= lr g / (sqrt(G_row) + eps)
- ``adam``: the tables join the dense Adam, dense gradients and all: the plain single-process
  DLRM a user without torchrec would write (``benchmarks/ctr_step.py``'s baseline).

It is what ``tests/ctr/test_parity.py`` checks the sharded model against at 1 and 2 ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.datasets.utils import Batch

from cliper_dist.ctr.config import DLRMConfig
from cliper_dist.ctr.model import TableSpec, build_dlrm, dense_adam, init_table
from cliper_dist.parallel.optim import OptimConfig


class ReferenceCtr(nn.Module):
    def __init__(self, arch: DLRMConfig, optim: OptimConfig, tables: list[TableSpec], dense_dim: int, seed: int,
                 table_optim: str | None = None):
        super().__init__()
        self.arch, self.table_optim = arch, table_optim or arch.table_optimizer
        dlrm = build_dlrm(arch, tables, dense_dim, seed).model
        self.dense_arch, self.inter_arch, self.over_arch = dlrm.dense_arch, dlrm.inter_arch, dlrm.over_arch
        self.keys = [t.name for t in tables]
        self.bags = nn.ModuleList(nn.EmbeddingBag(t.num_rows, arch.embedding_dim, mode="sum", include_last_offset=True) for t in tables)
        with torch.no_grad():
            for index, (t, bag) in enumerate(zip(tables, self.bags)):
                bag.weight.copy_(init_table(t, index, arch.embedding_dim, seed, 0, t.num_rows))
        dense = {n: p for n, p in self.named_parameters() if not n.startswith("bags.")}
        if self.table_optim == "adam":
            dense.update({n: p for n, p in self.named_parameters() if n.startswith("bags.")})
        self.adam = dense_adam(dense, optim)
        self.moments = [torch.zeros(t.num_rows if self.table_optim == "rowwise_adagrad" else (t.num_rows,
                                    arch.embedding_dim)) for t in tables]

    def forward(self, dense: torch.Tensor, sparse) -> torch.Tensor:
        per_key = sparse.to_dict()
        pooled = [bag(per_key[k].values(), per_key[k].offsets()) for k, bag in zip(self.keys, self.bags)]
        embedded = self.dense_arch(dense)
        return self.over_arch(self.inter_arch(embedded, torch.stack(pooled, 1))).squeeze(-1)

    def step(self, batch: Batch) -> float:
        """One step on the whole global batch; the mean loss."""
        self.adam.zero_grad()
        for bag in self.bags:
            bag.weight.grad = None
        loss = F.binary_cross_entropy_with_logits(self(batch.dense_features, batch.sparse_features),
                                                  batch.labels.float())
        loss.backward()
        self.adam.step()
        if self.table_optim != "adam":
            with torch.no_grad():
                for bag, moment in zip(self.bags, self.moments):
                    self._table_step(bag.weight, bag.weight.grad, moment)
        return float(loss.detach())

    def _table_step(self, w: torch.Tensor, g: torch.Tensor, moment: torch.Tensor) -> None:
        lr, eps = self.arch.table_lr, self.arch.table_eps
        if self.table_optim == "sgd":
            w -= lr * g
        elif self.table_optim == "adagrad":
            moment += g * g
            w -= lr * g / (moment.sqrt() + eps)
        else:
            moment += (g * g).mean(1)
            w -= lr * g / (moment.sqrt() + eps)[:, None]

    @torch.no_grad()
    def logits(self, batch: Batch) -> torch.Tensor:
        return self(batch.dense_features, batch.sparse_features)
