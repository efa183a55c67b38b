"""The column-parallel training engine: one built model, its optimizer, the batches, the step.

Every rank owns a block of columns of every parameter (``cliper_dist.parallel``) and runs
the whole global batch on it. One step:

    partials = model.partials(graph, batch)     per-rank sums over its own columns
    sums     = sum_partials(partials)           one all-reduce of (scores + norms), ~K x B floats
    loss     = model.loss(sums, batch)          the same on every rank
    loss.backward()                             local but for the model's own layers' collectives
    optimizer.step()                            local: Adam is elementwise

The engine's only collective is that all-reduce; a model whose layers multiply split
columns (a feature projection, an MLP, a GCN layer) adds their all-to-alls inside
``partials`` and the backward (docs/train.md counts them per model). No table row and no
gradient of a table crosses the network, and each rank does 1/P of the propagation and
holds 1/P of the state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cliper_dist import dist
from cliper_dist.data.batches import epoch_batches
from cliper_dist.data.recdata import RecData
from cliper_dist.model.base import Batch, Recommender
from cliper_dist.parallel.columns import ColumnSplit
from cliper_dist.parallel.comm import sum_partials
from cliper_dist.parallel.optim import ColumnAdam, OptimConfig, checkpoint_views
from cliper_dist.sharding.tables import IdTables
from cliper_dist.train.evaluate import evaluate
from cliper_dist.phases import Phases

ID_TABLE_PARAMS = ("user_table", "item_table")  # the model's names of the torchrec-held blocks


def sum_named(partials: dict[str, torch.Tensor], split: ColumnSplit) -> dict[str, torch.Tensor]:
    """Each named partial summed over ranks, in one all-reduce."""
    names = list(partials)
    flat = sum_partials(torch.cat([partials[n].reshape(-1) for n in names]), split)
    parts = flat.split([partials[n].numel() for n in names])
    return {n: part.view_as(partials[n]) for n, part in zip(names, parts)}


class Engine:
    """Trains a built model, as torchrec's ``TrainPipelineSparseDist`` runs the module it is
    given: the engine owns the optimizer, the batches, the step and the checkpoint state;
    which model it trains is the job's choice (``job.build_model``)."""

    primary = "recall@20"  # the valid metric early stopping watches
    shown = ("recall@20", "ndcg@20")  # what the epoch's log line prints

    def __init__(self, model: Recommender, tables: IdTables, optim_cfg: OptimConfig, data: RecData,
                 info: dist.DistInfo, seed: int, batch_size: int, eval_batch_users: int = 256,
                 eval_users: np.ndarray | None = None, estimate: dict | None = None):
        self.model, self.tables, self.data, self.info = model, tables, data, info
        self.seed, self.batch_size, self.split = seed, batch_size, tables.split
        self.eval_batch_users, self.eval_users, self.estimate = eval_batch_users, eval_users, estimate
        self.build_seconds = model.build_seconds
        self.optim_cfg = optim_cfg
        self.params = dict(self.model.named_parameters())
        trainable = {n: p for n, p in self.params.items() if p.requires_grad}  # MMGCN's ID tables are frozen
        self.optimizer = ColumnAdam(trainable, set(self.model.tables), optim_cfg)
        self.row_sparse = optim_cfg.rows == "touched"
        self.train_keys = data.train_keys()
        self._sharded = checkpoint_views(self.params, self.optimizer, self.split, ID_TABLE_PARAMS)

    def describe(self) -> str:
        d, sizes = self.data, {n: tuple(p.shape) for n, p in self.params.items()}
        return (f"train: {d.source}, {d.num_users} users, {d.num_items} items, {len(d.train_user)} train interactions, "
                f"model {self.model.cfg.name}, {self.info.world_size} rank(s), Adam rows={self.optim_cfg.rows}\n"
                f"{self.tables.describe()}\nthis rank's parameter blocks: {sizes}")

    def step(self, graph, batch: Batch) -> torch.Tensor:
        """One optimisation step on the global batch; returns its loss (the same on every rank)."""
        sums = sum_named(self.model.partials(graph, batch), self.split)
        loss = self.model.loss(sums, batch)
        loss.backward()
        self.optimizer.step(self.model.touched(graph, batch) if self.row_sparse else None)
        self.model.reclaim_gradients()
        self.optimizer.zero_grad()
        return loss.detach()

    def train_epoch(self, epoch: int, phases: Phases | None = None) -> float:
        """The epoch's mean loss; ``phases`` gets its "graph" (pruning) and "steps" seconds."""
        phases = phases or Phases()
        self.model.train()
        self.optimizer.set_epoch(epoch)
        with phases("graph"):
            graph = self.model.train_graph(epoch)
        device = self.info.device
        with phases("steps"):
            total, steps = torch.zeros((), dtype=torch.float64, device=device), 0
            progress = dist.Progress(-(-len(self.data.train_user) // self.batch_size), desc=f"epoch {epoch + 1}",
                                     unit="step")
            for arrays in epoch_batches(self.data, self.train_keys, epoch, self.seed, self.batch_size):
                total += self.step(graph, Batch(*(torch.from_numpy(a).to(device) for a in arrays)))
                steps += 1
                progress.update(1)
            progress.close()
            loss = total.item() / max(steps, 1)
        return loss

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Valid and test Recall/NDCG@{10,20,50}, every user ranked against all items."""
        return evaluate(self.model, self.data, self.split, self.eval_batch_users, self.eval_users)

    # -- checkpoint state ------------------------------------------------------------------
    def state_dict(self, with_optimizer: bool) -> dict[str, Any]:
        """The DCP state: torchrec's ID tables, the model's other blocks (+ Adam's moments and
        step count). Every entry is a view: loading writes into the live tensors."""
        state: dict[str, Any] = {"tables": self.tables.state_dict(), "params": self._sharded["params"]}
        if with_optimizer:
            state["optim"] = self._sharded["optim"]
            state["optim_steps"] = self.optimizer.steps
        return state
