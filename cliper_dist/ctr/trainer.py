"""The CTR task's trainer: the interface the train job drives (``primary``, ``describe``,
``train_epoch``, ``evaluate``, ``state_dict``), on a ``ShardedCtr`` stepped by torchrec's
``TrainPipelineSparseDist`` (the next batch's ids are all-to-all'd while this one computes).

Batches: every epoch's training samples in a (seed, epoch) order, cut into global batches of
``batch_size``; rank r of W steps on rows [r b, (r + 1) b) of each (b = batch_size / W), so every
rank takes the same number of steps and the batches do not depend on W. Evaluation runs every
valid/test sample once through the same pipeline (eval mode: no backward, no step), gathers the
logits, and computes AUC (``torchmetrics``' exact binary AUROC) and LogLoss (mean BCE) on every rank.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from cliper_dist import dist
from cliper_dist.ctr.data import CtrData, Samples, eval_batches, rank_batches
from cliper_dist.ctr.config import DLRMConfig
from cliper_dist.ctr.model import ShardedCtr, TableSpec
from cliper_dist.errors import UserError
from cliper_dist.parallel.optim import OptimConfig

log = dist.log
Phase = Callable[[str], ContextManager[None]]


def tables_of(data: CtrData) -> list[TableSpec]:
    """One table per sparse feature: users, items, then the catalog's fields (0 missing, 1 OOV, vocab)."""
    return [TableSpec("user_id", data.num_users), TableSpec("item_id", data.num_items),
            *(TableSpec(f.name, f.num_ids) for f in data.fields)]


def ctr_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """AUC and LogLoss of logits against 0/1 labels; the share of clicks."""
    return {"auc": float(binary_auroc(torch.sigmoid(logits), labels.int())),
            "logloss": float(F.binary_cross_entropy_with_logits(logits, labels.float())),
            "samples": int(len(labels)), "ctr": float(labels.float().mean())}


def _drain(pipeline: TrainPipelineSparseDist, batches: Iterator) -> Iterator[tuple]:
    """Every output of the pipeline over ``batches``."""
    while True:
        try:
            yield pipeline.progress(batches)
        except StopIteration:
            return


class CtrTrainer:
    primary = "auc"  # the valid metric early stopping maximises
    shown = ("auc", "logloss")  # the epoch's log line
    estimate = None  # every valid/test sample is scored

    def __init__(self, data: CtrData, arch: DLRMConfig, optim: OptimConfig, batch_size: int, seed: int,
                 info: dist.DistInfo):
        if batch_size % info.world_size:
            raise UserError(f"batch_size={batch_size} must be a multiple of the number of ranks ({info.world_size})")
        if len(data.positives["train"]) == 0:
            raise UserError(f"{data.source}: no training interactions")
        self.data, self.info, self.batch_size, self.eval_batch = data, info, batch_size, arch.eval_batch
        self.build_seconds: dict[str, float] = {}
        self.model = ShardedCtr(arch, optim, tables_of(data), data.dense_dim, batch_size // info.world_size, seed,
                                info.world_size, info.device)
        self.pipeline = TrainPipelineSparseDist(self.model.dmp, self.model.optimizer, device=info.device)
        if info.is_main:
            log.info("sharding plan:\n%s", self.model.plan)

    def describe(self) -> str:
        arch = self.model.arch
        plan = ", ".join(f"{r['table']} {r['sharding']} on {len(r['shards'])} shard(s)" for r in self.model.plan_rows())
        fields = ", ".join(f"{f.name} {len(f.vocab)} values + OOV ({f.oov_items} items hold a rare one)"
                           for f in self.data.fields) or "none"
        return (f"ctr {arch.name}: {len(self.model.tables)} tables x {arch.embedding_dim} ({plan}); dense inputs "
                f"{self.data.dense_dim} ({'counts only' if self.data.item_dense is None else 'counts + item features'}); "
                f"labels {self.data.labels.kind}; catalog fields: {fields}")

    def _batches(self, samples: Samples) -> Iterator:
        for part in rank_batches(samples, self.batch_size, self.info.rank, self.info.world_size):
            yield self.data.batch(part).to(self.info.device)

    def train_epoch(self, epoch: int, phases: Phase | None = None) -> float:
        """One pass over this epoch's samples; the mean loss over its steps (global batches)."""
        phase = phases or (lambda name: contextlib.nullcontext())
        with phase("batches"):
            samples = self.data.train_samples(epoch)
        self.model.dmp.train()
        total, steps = torch.zeros(()), 0
        progress = dist.Progress(len(samples) // self.batch_size, desc=f"epoch {epoch + 1}", unit="step")
        with phase("steps"):
            for loss, _, _ in _drain(self.pipeline, self._batches(samples)):
                total += loss.detach().float()
                steps += 1
                progress.update(1)
        progress.close()
        if steps == 0:
            raise UserError(f"batch_size={self.batch_size} is larger than the {len(samples)} training samples")
        if self.info.world_size > 1:
            torch.distributed.all_reduce(total)
        return float(total) / steps / self.info.world_size

    def scores(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels of every sample of ``split``, in sample order, on every rank."""
        samples = self.data.eval_samples(split)
        batches = (self.data.batch(s).to(self.info.device) for s in
                   eval_batches(samples, self.eval_batch, self.info.rank, self.info.world_size))
        self.model.dmp.eval()
        with torch.no_grad():
            out = [(logits.float(), labels.float()) for _, logits, labels in _drain(self.pipeline, batches)]
        logits = torch.cat([o[0] for o in out]).cpu()
        labels = torch.cat([o[1] for o in out]).cpu()
        if self.info.world_size > 1:
            both = torch.stack([logits, labels])
            gathered = [torch.empty_like(both) for _ in range(self.info.world_size)]
            torch.distributed.all_gather(gathered, both)
            logits, labels = torch.cat([g[0] for g in gathered]), torch.cat([g[1] for g in gathered])
        keep = labels >= 0  # padding
        return logits[keep], labels[keep]

    def evaluate(self) -> dict[str, dict[str, float]]:
        return {split: ctr_metrics(*self.scores(split)) for split in ("valid", "test")}

    def state_dict(self, with_optimizer: bool) -> dict[str, Any]:
        """The DCP state: DMP's (sharded tables, replicated dense layers), and the fused table
        optimizer's and Adam's state. Every entry is a live tensor: loading writes in place."""
        state: dict[str, Any] = {"model": self.model.dmp.state_dict()}
        if with_optimizer:
            state["optim"] = {"tables": self.model.dmp.fused_optimizer.state_dict()["state"],
                              "dense": self.model.dense_optimizer.state_dict()["state"]}
        return state


def gathered_tables(model: ShardedCtr, world_size: int) -> dict[str, torch.Tensor]:
    """Every table whole, on every rank (tests and small tables only)."""
    local = {name: (t.detach().clone(), offsets) for name, (t, offsets) in model.table_shards().items()}
    parts = dist.all_gather_object(local) if world_size > 1 else [local]
    out = {}
    for spec in model.tables:
        table = torch.empty(spec.num_rows, model.arch.embedding_dim)
        for part in parts:
            if spec.name in part:
                t, (r0, c0) = part[spec.name]
                table[r0:r0 + t.shape[0], c0:c0 + t.shape[1]] = t
        out[spec.name] = table
    return out

