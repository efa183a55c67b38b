"""What the train job drives for ``model.name=sasrec``: epochs, full-ranking evaluation and the
checkpoint state of the sequential task (the job's loop is ``train/job.py``).

With an ID table, an epoch runs through torchrec's ``TrainPipelineSparseDist``, as torchrec's
examples train: while batch i runs forward and backward, the ids of batch i+1 are already on
their way to the ranks that own their rows (the input all-to-all), and batch i+2 is fetched.
Pipelining changes no arithmetic: the rows are looked up in batch i+1's forward, after batch
i's fused update.

Every random draw derives from (seed, epoch): the batch order and negatives (``data.py``) and
the dropout masks (the generator is reseeded per epoch and rank), so a resumed run repeats an
uninterrupted one and no RNG state is saved.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from cliper_dist.dist import DistInfo, Progress
from cliper_dist.parallel.optim import OptimConfig
from cliper_dist.phases import Phases
from cliper_dist.seq.data import Batch, Sequences, train_batches, training_examples
from cliper_dist.seq.model import SASRecConfig, SeqModel, evaluate

SPLITS = ("valid", "test")


def evaluated_users(seqs: Sequences) -> np.ndarray:
    """The users with a valid or test target, sorted."""
    return np.flatnonzero((seqs.valid >= 0) | (seqs.test >= 0))


class SeqTrainer:
    primary = "ndcg@10"  # the valid metric early stopping watches
    shown = ("hr@10", "ndcg@10")  # what the epoch's log line prints

    def __init__(self, cfg: SASRecConfig, optim: OptimConfig, seqs: Sequences, features: torch.Tensor | None,
                 info: DistInfo, seed: int, batch_size: int, eval_batch_users: int, eval_users: np.ndarray | None,
                 estimate: dict | None = None):
        self.cfg, self.optim_cfg, self.seqs, self.info = cfg, optim, seqs, info
        self.seed, self.batch_size, self.eval_batch_users = seed, batch_size, eval_batch_users
        self.eval_users, self.estimate = eval_users, estimate  # a sample of users (eval_users), labelled
        self.model = SeqModel(cfg, optim, seqs.num_items, seed, info.rank, info.world_size, info.device, features)
        self.build_seconds: dict[str, float] = {}
        self.steps_per_epoch = -(-len(training_examples(seqs, cfg.max_len, cfg.train_examples)[0]) // batch_size)
        self.pipeline = (None if self.model.dmp is None else
                         TrainPipelineSparseDist(self.model.dmp, self.model.optimizer, info.device))

    def describe(self) -> str:
        s, c = self.seqs, self.cfg
        table = (f"torchrec row_wise item table {s.num_items} x {c.embedding_dim} ({c.table_optimizer} fused, "
                 f"lr {c.table_lr}); rank {self.info.rank} holds rows [{self.model.lo}, {self.model.hi})"
                 if self.model.table else "no ID table (item_input=features)")
        content = "" if self.model.content is None else (
            f"; features {tuple(self.model.content.features.shape)} projected to {c.embedding_dim}")
        return (f"sasrec: {s.num_users} users, {s.num_items} items, {len(s.items)} training interactions, "
                f"loss {c.loss}, {c.train_examples} examples, item input {c.item_input}, L={c.max_len}, "
                f"{c.blocks} block(s) x {c.heads} head(s), {self.info.world_size} rank(s)\n{table}{content}")

    def train_epoch(self, epoch: int, phases: Phases) -> float:
        """The epoch's mean loss over its global batches."""
        torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, self.info.rank]).generate_state(1)[0]))
        decay = self.optim_cfg.lr_decay ** (epoch / self.optim_cfg.lr_decay_epochs)
        for group in self.model.optimizer.adam.param_groups:
            group["lr"] = self.optim_cfg.lr * decay
        batches = train_batches(self.seqs, self.cfg.max_len, self.batch_size, epoch, self.seed, self.info.rank,
                                self.info.world_size, negatives=self.cfg.loss == "bce",
                                examples=self.cfg.train_examples)
        total, steps = torch.zeros((), dtype=torch.float64), 0
        progress = Progress(self.steps_per_epoch, desc=f"epoch {epoch + 1}", unit="step")
        with phases("steps"):
            for loss in self.steps(batches):
                total += loss
                steps += 1
                progress.update(1)
            progress.close()
            if dist.is_initialized() and self.info.world_size > 1:
                dist.all_reduce(total)  # each rank's loss is its share of the batch's
        return float(total) / max(steps, 1)

    def steps(self, batches: Iterable[Batch]) -> Iterator[torch.Tensor]:
        """Train on ``batches``; each step's loss share, through torchrec's pipeline (or, without an ID
        table, step by step)."""
        if self.pipeline is None:
            yield from (self.model.step(b) for b in batches)
            return
        self.model.net.train()
        inputs = (self.model.step_input(b) for b in batches)
        while True:
            try:
                yield self.pipeline.progress(inputs)
            except StopIteration:
                return

    def evaluate(self) -> dict[str, dict[str, float]]:
        if self.pipeline is not None:
            self.pipeline.detach()  # the collection's own forward back, for evaluation's lookups
        return {split: evaluate(self.model, self.seqs, split, self.info.rank, self.info.world_size,
                                self.eval_batch_users, self.eval_users) for split in SPLITS}

    def state_dict(self, with_optimizer: bool) -> dict:
        return self.model.state_dict(with_optimizer)
